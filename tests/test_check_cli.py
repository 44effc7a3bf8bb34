"""`armmu check` and the checker over seeds of the kernel model's exit strategies.

Expectations are reasoned from the strategies' orders (docs/strategies.md, pmap.c 1.113):
the safe orders flush the ASID pair only once no CPU can refill from the user tables,
so no seed may report anything; purge-unsafe keeps TTBR0 live on the exiting CPU while
it frees the pages, so a speculative fill (tagged with the even ASID that is current in
the kernel) maps a page when it is freed; purge-early gives a sibling that still returns
to userland the zero page as TTBR0, so it faults forever.
"""
from __future__ import annotations

import json

import pytest

from emu.cli import main
from emu.run.check import check_seed, explore, reproducer, seed_config

SAFE = ("legacy-reaper", "reaper", "purge-naive", "purge")


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("workload,seeds", [("threads", 4), ("spin", 4), ("storm", 1)])
@pytest.mark.parametrize("strategy", SAFE)
def test_safe_strategies_report_nothing(strategy, workload, seeds):
    cfg = {"workload": workload, "strategy": strategy, "speculate": "default"}
    if workload == "storm":
        cfg["procs"] = 2
    ex = explore(cfg, seeds, jobs=1)
    assert ex.first is None and ex.seeds_run == seeds and not ex.incomplete


def test_purge_unsafe_is_flagged_with_speculation_and_not_without():
    cfg = {"workload": "threads", "strategy": "purge-unsafe", "speculate": "default"}
    ex = explore(cfg, 5, jobs=1)
    assert ex.first is not None
    v = ex.first["violations"][0]
    assert (v["kind"], v["range"]) == ("stale-tlb-entry", "user")
    assert "speculative walk" in v["detail"]
    # without speculation nothing refills the user tables after the ASID flush: the entries
    # the threads filled in userland carry ASID|1, which is not current in the kernel
    off = explore(dict(cfg, speculate="off"), 5, jobs=1)
    assert off.first is None


MUTANT = """
from emu.sysregs import SysReg
from pmap_py.asid import ASID_USER
from pmap_py.cpufunc import MASK64, cpu_tlb_flush_asid_all
from pmap_py.kern.steps import STEP
from pmap_py.strategies.purge import Purge


class PurgeDropEven(Purge):
    name = "purge-drop-even"
    summary = "mutant: pmap_purge without ASIDE1IS(asid)"
    safe = False

    def pmap_purge(self, k, p, pm):
        while not k.ps.pmap_purge_ready(pm):
            yield from k.spin(p)
        ps, cpu = k.ps, k.curcpu(p)
        cpu.msr(SysReg.TTBR0_EL1, ps.pmap_kernel().pm_pt0pa)
        cpu.isb()
        cpu_tlb_flush_asid_all(cpu, ((pm.pm_asid | ASID_USER) << 48) & MASK64)
        pm.pm_pt0pa = ps.pmap_kernel().pm_pt0pa
        pm.pm_active = 0
        yield STEP
"""


def test_purge_without_its_even_aside1is_is_flagged(tmp_path):
    """Mutant of purge: pmap_purge drops ASIDE1IS(asid). The exiting thread runs in the kernel
    with the even ASID and, before pmap_purge, TTBR0 still on the user tables: speculative fills
    of user pages are tagged with the even ASID, only that ASIDE1IS removes them, and the even
    ASID stays current on that CPU while uvmspace_purge frees the pages."""
    f = tmp_path / "mutant.py"
    f.write_text(MUTANT)
    cfg = {"workload": "threads", "strategy": "purge-drop-even", "strategy_file": str(f), "speculate": "default"}
    ex = explore(cfg, 5, jobs=1)
    assert ex.first is not None
    v = ex.first["violations"][0]
    assert (v["kind"], v["range"]) == ("stale-tlb-entry", "user")
    # the story of the traced re-run names the missing flush
    assert f"No ASIDE1IS {v['asid']:#x} was issued" in v["detail"]
    assert "--strategy-file" in v["reproducer"]


def test_purge_early_is_a_livelock():
    r = check_seed({"workload": "threxit", "strategy": "purge-early", "speculate": "off"}, 0)
    assert [v["kind"] for v in r["violations"]] == ["livelock"]
    v = r["violations"][0]
    assert v["count"] == 64 and "zero page" in v["detail"]


def test_check_command_prints_the_first_violation_and_its_reproducer(capsys):
    rc, out, err = run_cli(capsys, "check", "--workload", "threads", "--strategy", "purge-unsafe",
                           "--seeds", "4", "--jobs", "1")
    assert rc == 1
    assert out.startswith("violation at seed 0: stale-tlb-entry (user range)")
    repro = next(line for line in out.splitlines() if line.startswith("reproduce: "))[len("reproduce: "):]
    assert repro == reproducer(seed_config({"workload": "threads", "strategy": "purge-unsafe",
                                            "speculate": "default"}, 0), 0)
    assert "trace before and at the violation" in out and " kernel " in out
    # the reproducer, run by armmu run, gives the same first violation
    argv = repro.split()[2:]
    assert repro.split()[:2] == ["armmu", "run"]
    rc2, out2, _ = run_cli(capsys, "run", *argv, "--json")
    assert rc2 == 1
    first = json.loads(out2)["violations"][0]
    seen = next(line for line in out.splitlines() if line.startswith("  cpu"))
    assert seen.startswith(f"  cpu{first['cpu']}, cycle {first['cycle']}, va {first['va']:#x}")
    assert first["kind"] == "stale-tlb-entry"


def test_check_command_clean_strategy_exits_0(capsys):
    rc, out, err = run_cli(capsys, "check", "--workload", "threads", "--strategy", "purge", "--seeds", "4",
                           "--jobs", "2")
    assert rc == 0
    assert out.startswith("no violation in 4 seeds from 0: purge on threads")


def test_check_json_summary(capsys):
    rc, out, _ = run_cli(capsys, "check", "--workload", "threxit", "--strategy", "purge-early", "--seeds", "2",
                         "--jobs", "1", "--json")
    assert rc == 1
    s = json.loads(out)
    assert s["first"]["seed"] == 0 and s["first"]["violations"][0]["kind"] == "livelock"
    assert s["seeds_run"] == 1 and s["trace_excerpt"]


@pytest.mark.parametrize("argv,word", [
    (["--seeds", "0"], "--seeds"),
    (["--strategy", "no-such"], "no-such"),
    (["--workload", "no-such"], "no-such"),
    (["--cpus", "0"], "cpus"),
    (["--first-seed", "-1"], "--first-seed"),
    (["--quantum", "0"], "--quantum"),
    (["--core", "no-such-core"], "no-such-core"),
])
def test_check_bad_input_is_one_line_and_exit_2(capsys, argv, word):
    rc, out, err = run_cli(capsys, "check", "--jobs", "1", *argv)
    assert rc == 2
    assert err.count("\n") == 1 and word in err and "Traceback" not in err



# purge-nowait's window (a sibling between ps_exitcnt-- and pmap_deactivate while the main
# thread flushes) never opens under the big lock: the sibling unwinds with KERNEL_LOCK()
# (kern_sig.c 1.365 proc_suspend_check_locked) and keeps it through pmap_deactivate until
# sched_toidle (kern_sched.c 1.113), while the main thread woken from "thrdeath" must take
# it back in mi_switch (sched_bsd.c 1.104) before it can reach uvm_purge. An unlocked exit1
# opens it; interrupts (IRQ_PROB per kernel step, 500-5000 cycles each, KernConfig)
# stretch it long enough for a speculative fill to land in it.
IRQ_PROB = 0.3


def test_purge_nowait_is_flagged_on_spin_once_exit1_is_unlocked():
    cfg = {"workload": "spin", "strategy": "purge-nowait", "speculate": "default",
           "unlocked_exit": True, "irq_prob": IRQ_PROB}
    ex = explore(cfg, 200, jobs=2)
    assert ex.first is not None, "purge-nowait not flagged in 200 seeds with an unlocked exit1"
    v = ex.first["violations"][0]
    assert (v["kind"], v["range"]) == ("stale-tlb-entry", "user")
    assert "--unlocked-exit" in v["reproducer"] and f"--irq-prob {IRQ_PROB}" in v["reproducer"]


def test_check_command_flags_purge_nowait_on_threads_with_the_unlocked_exit(capsys):
    rc, out, _ = run_cli(capsys, "check", "--workload", "threads", "--strategy", "purge-nowait",
                         "--unlocked-exit", "--irq-prob", str(IRQ_PROB), "--speculate", "default",
                         "--seeds", "200", "--jobs", "2")
    assert rc == 1 and out.startswith("violation at seed")
    assert "stale-tlb-entry (user range)" in out.splitlines()[0]
    repro = next(line for line in out.splitlines() if line.startswith("reproduce: "))
    assert "--unlocked-exit" in repro and "--irq-prob" in repro


@pytest.mark.parametrize("workload", ["threads", "spin"])
def test_purge_nowait_is_clean_under_the_big_lock(workload):
    """The same interrupts, exit1 under the kernel lock: nothing (the seeds that flag the
    unlocked exit come within the first few dozen)."""
    cfg = {"workload": workload, "strategy": "purge-nowait", "speculate": "default", "irq_prob": IRQ_PROB}
    ex = explore(cfg, 60, jobs=2)
    assert ex.first is None and ex.seeds_run == 60 and not ex.incomplete


# asid-noflush needs an ASID handed out again: with 8-bit ASIDs (127 even/odd pairs for
# processes) and the shell running 4 of 64 processes at a time, released pairs are picked
# again by pmap_find_asid's random candidates within a few dozen exits.
REUSE = {"workload": "storm", "procs": 64, "threads": 2, "pages": 16, "asid_bits": 8, "jobs": 4,
         "speculate": "default"}


def test_asid_noflush_is_flagged_as_asid_reuse_stale_and_purge_is_clean():
    ex = explore(dict(REUSE, strategy="asid-noflush"), 200, jobs=2)
    assert ex.first is not None
    v = ex.first["violations"][0]
    # only kernel-VA entries survive: pmap_purge's two ASIDE1IS already removed every user
    # entry and TTBR0 has pointed at the zero page since, so nothing refilled the user range
    assert (v["kind"], v["range"]) == ("asid-reuse-stale", "kernel")
    assert "--asid-bits 8" in v["reproducer"] and "--jobs 4" in v["reproducer"]
    clean = explore(dict(REUSE, strategy="purge"), 4, jobs=2)
    assert clean.first is None and clean.seeds_run == 4 and not clean.incomplete


def test_check_command_takes_asid_bits_and_shell_jobs(capsys):
    rc, out, _ = run_cli(capsys, "check", "--workload", "storm", "--strategy", "asid-noflush", "--procs", "64",
                         "--threads", "2", "--pages", "16", "--asid-bits", "8", "--shell-jobs", "4",
                         "--seeds", "200", "--jobs", "2")
    assert rc == 1 and out.startswith("violation at seed") and "asid-reuse-stale (kernel range)" in out


@pytest.mark.parametrize("argv,word", [
    (["--asid-bits", "12"], "--asid-bits"),
    (["--irq-prob", "1.5"], "--irq-prob"),
    (["--shell-jobs", "0"], "--shell-jobs"),
])
def test_check_bad_kernel_options_are_one_line_and_exit_2(capsys, argv, word):
    rc, out, err = run_cli(capsys, "check", "--jobs", "1", *argv)
    assert rc == 2
    assert err.count("\n") == 1 and word in err and "Traceback" not in err


# With --speculate off only demand accesses fill TLBs. Then the hazards that need a fill no
# instruction asked for disappear: purge-unsafe's and purge-nowait's (a TTBR0 walk in the
# kernel, or on a sibling between ps_exitcnt-- and pmap_deactivate, with the even ASID
# current) and asid-noflush's (the kernel-VA entries tagged with the dying even ASID: the
# modelled kernel reaches memory without the MMU, so only speculative walks from TTBR1 fill
# them; on hardware the kernel's own loads after pmap_purge would fill them too). What
# demand accesses drive remains: purge-early's livelock (test_purge_early_is_a_livelock). purge-unsafe:
# test_purge_unsafe_is_flagged_with_speculation_and_not_without.
@pytest.mark.parametrize("cfg,seeds,flagged_by", [
    ({"workload": "spin", "strategy": "purge-nowait", "unlocked_exit": True, "irq_prob": IRQ_PROB}, 40, 200),
    (dict(REUSE, strategy="asid-noflush"), 2, 200),
])
def test_speculation_off_removes_the_speculative_hazards(cfg, seeds, flagged_by):
    on = explore(dict(cfg, speculate="default"), flagged_by, jobs=2)
    assert on.first is not None and on.first["seed"] < seeds
    off = explore(dict(cfg, speculate="off"), seeds, jobs=2)
    assert off.first is None and off.seeds_run == seeds
