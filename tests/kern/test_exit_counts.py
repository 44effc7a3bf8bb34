"""Exit-path counts of the OpenBSD strategies, end to end with real guests on 1-4 CPUs,
against counts derived by hand from OpenBSD's source (pmap.c 1.58/1.111/1.113,
cpufunc_asm.S 1.6, cpuswitch.S 1.4, kern_exit.c 1.252, uvm_glue.c 1.94, param.h 1.4).

The window is the result's ``exit_events``: from the first exit syscall of the workload to the
reaper's completion of its last thread. The derivation, used by every test below:

* every cpufunc TLB helper is ``dsb ishst; tlbi; dsb ish; isb``: 2 DSB + 1 ISB per TLBI;
* every context switch runs pmap_setttb for the incoming proc (cpuswitch.S 1.4):
  TTBR0 <- zero page, ISB, TTBR1.ASID, ISB, TTBR0 <- pm_pt0pa, ISB = 3 TTBR + 3 ISB;
* an EL0 exception enters through the trampoline vector: TTBR1 <- kernel table, ISB
  (1 + 1); a return to EL0 does the reverse (1 + 1);
* pmap_deactivate (1.111/1.113, pm_active > 0): TTBR0 <- zero page, ISB; the one that
  brings pm_active to 0 in 1.111 adds 2 ASIDE1IS; in 1.58 it touches no hardware;
* pmap_purge (1.113): TTBR0 <- zero page, ISB, 2 ASIDE1IS;
* pmap_remove of a page: 2 VAE1IS while pm_active > 0 (1.111/1.113), none at 0;
  1.58: ttlb_flush twice (pmap_pte_remove and pmap_remove_pted) = 4 VAE1IS;
* pmap_destroy -> pmap_free_asid: 2 ASIDE1IS;
* the reaper's uvm_uarea_free: pmap_kremove of UPAGES = 5 kernel pages, one VAALE1IS
  each (ttlb_flush on the kernel pmap; 1.58: twice, as for user pages).
"""
from __future__ import annotations

import pytest

from .conftest import UPAGES, go, mapped_pages

OPENBSD = ("legacy-reaper", "reaper", "purge-naive", "purge")


def pmap_tlbis(strategy: str, n: int, t: int) -> dict:
    """The pmap exit-path TLBIs for n mapped pages and t threads (docs/openbsd-exit-path.md §Counts,
    path by path), plus the u-area VAALE1IS of the t reaped threads."""
    if strategy == "legacy-reaper":      # path A: reaper removes every page, 4 VAE1IS each
        return {"VAE1IS": 4 * n, "ASIDE1IS": 2, "VAALE1IS": 2 * UPAGES * t}
    if strategy == "reaper":             # path B: last deactivate 2 + destroy 2
        return {"ASIDE1IS": 4, "VAALE1IS": UPAGES * t}
    if strategy == "purge-naive":        # teardown with pm_active >= 1; 1.111 deactivate 2 + destroy 2
        return {"VAE1IS": 2 * n, "ASIDE1IS": 4, "VAALE1IS": UPAGES * t}
    if strategy == "purge":              # path C: pmap_purge 2 + destroy 2
        return {"ASIDE1IS": 4, "VAALE1IS": UPAGES * t}
    raise AssertionError(strategy)


def ttbr0_writes(strategy: str, t: int) -> int:
    """TTBR0 writes of the exit path itself (not counting context switches)."""
    return {"legacy-reaper": 0,          # 1.58 pmap_deactivate is empty
            "reaper": t,                 # every thread's deactivate
            "purge-naive": t,            # same (1.111)
            "purge": (t - 1) + 1,        # siblings' deactivates + pmap_purge; main's returns early
            }[strategy]


@pytest.mark.parametrize("cpus", [1, 2, 4])
@pytest.mark.parametrize("strategy", OPENBSD)
def test_touch_counts_by_hand(strategy, cpus):
    pages = 24
    res, m, k = go(workload="touch", strategy=strategy, pages=pages, cpus=cpus)
    assert res["outcome"]["completed"], res["outcome"]["reason"]
    assert res["processes"][0]["status"] == 0                  # the guest read back what it stored
    n = mapped_pages({"workload": "touch", "pages": pages})
    assert n == pages + 2                                      # heap + text + stack
    e = res["exit_events"]
    # one thread: exactly 2 switches in the window (the exiting thread to idle at
    # sched_exit, idle to the reaper after exit2's wakeup), no EL0 entry or return
    assert e["context_switches"] == 2 and e["el0_entries"] == 0 and e["el0_returns"] == 0
    tlbi = pmap_tlbis(strategy, n, 1)
    assert e["tlbi"] == tlbi
    ntlbi = sum(tlbi.values())
    assert e["ttbr_writes"] == 3 * 2 + ttbr0_writes(strategy, 1)
    assert e["isb"] == 3 * 2 + ttbr0_writes(strategy, 1) + ntlbi
    assert e["dsb"] == 2 * ntlbi


@pytest.mark.parametrize("cpus,threads", [(2, 2), (4, 4)])
@pytest.mark.parametrize("strategy", OPENBSD)
def test_spin_counts_by_hand(strategy, cpus, threads):
    """spin: T-1 siblings spin in user mode, each alone on its CPU, while main exits.
    single_thread_set posts an AST to each; each enters the kernel once (E = T-1
    trampoline entries, none returns to EL0). The number of switches S depends on
    the interleaving (main's "suspend"/"thrdeath" sleeps, reaper wakeups); the counts
    must follow from S exactly, and S is bounded by hand: at least one switch to idle
    per thread plus the reaper's switch in; at most that plus main's two sleeps (out
    and back in) and a reaper sleep/wakeup between any two dead threads."""
    pages = 16
    res, m, k = go(workload="spin", strategy=strategy, pages=pages, cpus=cpus, threads=threads)
    assert res["outcome"]["completed"], res["outcome"]["reason"]
    assert res["processes"][0]["status"] == 0
    n = mapped_pages({"workload": "spin", "pages": pages, "threads": threads})
    e = res["exit_events"]
    t = threads
    s, entries = e["context_switches"], e["el0_entries"]
    assert entries == t - 1 and e["el0_returns"] == 0
    assert t + 1 <= s <= t + 1 + 4 + 2 * (t - 1)
    tlbi = pmap_tlbis(strategy, n, t)
    assert e["tlbi"] == tlbi
    ntlbi = sum(tlbi.values())
    assert e["ttbr_writes"] == 3 * s + entries + ttbr0_writes(strategy, t)
    assert e["isb"] == 3 * s + entries + ttbr0_writes(strategy, t) + ntlbi
    assert e["dsb"] == 2 * ntlbi


def test_counts_scale_with_pages_not_strategy_code():
    """Doubling the pages doubles only the per-page terms (the counts are the model's)."""
    a = go(workload="touch", strategy="purge-naive", pages=10, cpus=2)[0]["exit_events"]["tlbi"]
    b = go(workload="touch", strategy="purge-naive", pages=20, cpus=2)[0]["exit_events"]["tlbi"]
    assert b["VAE1IS"] - a["VAE1IS"] == 2 * 10
    assert a["ASIDE1IS"] == b["ASIDE1IS"] == 4


# The other strategies on touch (one thread, so no sibling timing enters the counts).
# Each entry: (pmap TLBIs, exit-path TTBR0 writes, TLBIs issued without an ISB).
OTHERS = {
    # purge without the spin: same operations as purge when there is no sibling
    "purge-nowait": ({"ASIDE1IS": 4, "VAALE1IS": UPAGES}, 1, 0),
    # no pmap_purge at all (pm_active <- 0 with TTBR0 live): only pmap_destroy's pair;
    # the main thread's pmap_deactivate returns early, so no TTBR0 write either
    "purge-unsafe": ({"ASIDE1IS": 2, "VAALE1IS": UPAGES}, 0, 0),
    # Kettenis' pmap_exit for the only thread is exactly pmap_purge's switch and flush
    "purge-early": ({"ASIDE1IS": 4, "VAALE1IS": UPAGES}, 1, 0),
    # pmap_purge's pair, but pmap_free_asid's is commented out
    "asid-noflush": ({"ASIDE1IS": 2, "VAALE1IS": UPAGES}, 1, 0),
    # exit_mmap: tables were freed, so one flush_tlb_mm (ASIDE1IS, DSB ISHST/ISH, no ISB);
    # no TTBR write (lazy mm); no trampoline (one ASID at EL0 and EL1)
    "linux": ({"ASIDE1IS": 1, "VAALE1IS": UPAGES}, 0, 1),
    # pmap_remove_pages: one VAE1IS per freed table page (3 L3: text, heap, stack; 2 L2:
    # the low 1 GiB and the stack's), one ASIDE1IS; pmap_activate(vmspace0) writes TTBR0
    "freebsd": ({"VAE1IS": 5, "ASIDE1IS": 1, "VAALE1IS": UPAGES}, 1, 0),
}


@pytest.mark.parametrize("strategy", sorted(OTHERS))
def test_touch_counts_other_strategies(strategy):
    res, m, k = go(workload="touch", strategy=strategy, pages=24, cpus=2)
    assert res["outcome"]["completed"], res["outcome"]["reason"]
    assert res["processes"][0]["status"] == 0
    tlbi, ttbr0, no_isb = OTHERS[strategy]
    e = res["exit_events"]
    assert e["context_switches"] == 2
    assert e["tlbi"] == tlbi
    ntlbi = sum(tlbi.values())
    assert e["ttbr_writes"] == 3 * 2 + ttbr0
    assert e["isb"] == 3 * 2 + ttbr0 + ntlbi - no_isb
    assert e["dsb"] == 2 * ntlbi
