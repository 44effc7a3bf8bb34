"""Whole runs: what is left after them, where the teardown runs, the unsafe strategies
end, and other CPUs run guest code while one tears an address space down."""
from __future__ import annotations

import pytest

from emu.frames import FrameKind
from emu.trace import Ev, Trace
from guest.programs import load
from pmap_py import strategies

from .conftest import go

ALL = strategies.names()


def assert_all_returned(m, k):
    """Every frame of the dead processes is free again: what is still in use belongs
    to the kernel (its L1, the trampoline's, the zero page, kernel L2/L3 tables)."""
    counts = m.frames.counts()
    assert counts[FrameKind.USER] == 0
    assert counts[FrameKind.KERNEL] == 0                        # every u-area freed
    kpm, tramp = k.ps.pmap_kernel(), k.ps.pmap_tramp
    kernel_tables = len(m.frames.owned_by(kpm)) + len(m.frames.owned_by(tramp))
    assert counts[FrameKind.PAGE_TABLE] + counts[FrameKind.ZERO] == kernel_tables
    for pr in k.workload:
        assert pr.ps_vmspace is None and pr.ps_mainproc.p_stat.name == "SDEAD"


def asid_state(k, pm) -> str:
    asids = k.ps.asids
    if pm.generation != asids.pmap_asid_gen:
        return "stale"
    return "used" if asids.bits(pm.asid) else "free"


@pytest.mark.parametrize("strategy", ALL)
@pytest.mark.parametrize("workload,cpus,threads,procs", [
    ("touch", 1, 1, 1), ("spin", 4, 4, 1), ("threads", 2, 4, 1), ("storm", 3, 2, 3)])
def test_frames_and_asids_after_the_run(strategy, workload, cpus, threads, procs):
    kw = {"budgets": {"max_faults": 1500}} if strategy == "purge-early" else {}
    res, m, k = go(workload=workload, strategy=strategy, pages=12, cpus=cpus, threads=threads,
                   procs=procs, **kw)
    assert res["outcome"]["completed"], res["outcome"]["reason"]
    assert all(p["zombie"] and not p["killed"] for p in res["processes"])
    assert_all_returned(m, k)
    assert not k.ps.live, f"pmaps still live: {k.ps.live}"
    # each dead pmap's ASID pair is free or from an older generation, except Linux's,
    # which context.c never frees (it dies at the next rollover)
    for pr in k.workload:
        pm = pr.ps_pmap
        assert pm.pm_destroyed
        assert asid_state(k, pm) == ("used" if strategy == "linux" else "free") or asid_state(k, pm) == "stale"


def window_procs(trace: Trace, op: str, pmap: str):
    """(cycle, cpu, proc running there) of every `op` KERNEL record on `pmap`, the
    proc found from the cpu_switchto records before it."""
    running = {}
    out = []
    for cycle, cpu, kind, f in trace.records:
        if kind is not Ev.KERNEL:
            continue
        if f["op"] == "cpu_switchto":
            running[cpu] = f["to"]
        elif f["op"] == op and f.get("pmap") == pmap:
            out.append((cycle, cpu, running.get(cpu)))
    return out


@pytest.mark.parametrize("strategy,where", [("purge", "main"), ("reaper", "reaper"),
                                            ("purge-naive", "main"), ("legacy-reaper", "reaper")])
def test_who_tears_down(strategy, where):
    """purge tears the map down in the exiting (main) thread with the kernel lock
    released; reaper in the reaper thread (holding it, as kern_exit.c did then)."""
    t = Trace()
    res, m, k = go(workload="spin", strategy=strategy, pages=600, cpus=3, threads=3, trace=t)
    assert res["outcome"]["completed"]
    pr = k.workload[0]
    main = pr.ps_mainproc.p_name
    removes = window_procs(t, "pmap_remove", pr.ps_pmap.pm_name)
    assert len(removes) >= 4                      # text, heap in 2 chunks, stacks
    assert {proc for _, _, proc in removes} == {main if where == "main" else "reaper"}
    starts = [f for _, _, kind, f in t.records if kind is Ev.KERNEL and f["op"] == "teardown"]
    if where == "main":
        assert starts[0]["proc"] == main and starts[0]["kernel_lock"] != main
    else:
        assert starts[0]["proc"] == "reaper" and starts[0]["kernel_lock"] == "reaper"
    # and the cycles land where the teardown ran
    c = res["cycles"]
    if where == "main":
        assert c["process_sys"] > c["reaper"]
    else:
        assert c["reaper"] > c["process_sys"]


def test_other_cpus_run_guest_code_between_teardown_steps():
    """While one CPU tears an address space down step by step, another CPU keeps
    executing user instructions (trace: USER quanta between two pmap_remove steps)."""
    t = Trace()
    from emu.run import build
    cfg, m, k = build({"workload": "touch", "strategy": "purge", "pages": 4096, "cpus": 2,
                       "trace": t}, 3)
    k.spawn(load("loop", {"ITERS": 400000}))       # a second process, busy in user mode
    k.run()
    pm = k.workload[0].ps_pmap.pm_name
    teardown = [(c, cpu) for c, cpu, kind, f in t.records
                if kind is Ev.KERNEL and f["op"] == "pmap_remove" and f.get("pmap") == pm]
    assert len(teardown) >= 8                      # 4096 heap pages in chunks of 512
    tcpu = teardown[0][1]
    users = [(c, cpu) for c, cpu, kind, f in t.records if kind is Ev.USER and cpu != tcpu]
    between = [(a, b) for (a, _), (b, _) in zip(teardown, teardown[1:])
               if any(a < c < b for c, _ in users)]
    assert between, "no guest quantum of another CPU between two teardown steps"


def test_purge_early_ends_within_budget_with_a_reason():
    """The sibling that gets the zero page as its user table faults forever; the run
    ends at the fault budget and says so."""
    res, m, k = go(workload="threxit", strategy="purge-early", pages=16, cpus=2, threads=4,
                   budgets={"max_faults": 1000})
    out = res["outcome"]
    assert not out["completed"]
    assert "fault budget exceeded (1000 faults)" in out["reason"]
    assert "zero page" in out["reason"]
    assert res["host"]["seconds"] < 60


@pytest.mark.parametrize("strategy", ["purge-nowait", "purge-unsafe", "asid-noflush"])
@pytest.mark.parametrize("workload", ["threads", "spin", "threxit"])
def test_unsafe_strategies_run_to_completion(strategy, workload):
    res, m, k = go(workload=workload, strategy=strategy, pages=24, cpus=4, threads=4,
                   speculate="default")
    assert res["outcome"]["completed"], res["outcome"]["reason"]
    assert res["processes"][0]["status"] == 0
    assert_all_returned(m, k)


def test_deterministic_for_a_seed():
    a = go(workload="threads", strategy="purge", pages=32, cpus=3, threads=4, speculate="default", seed=7)[0]
    b = go(workload="threads", strategy="purge", pages=32, cpus=3, threads=4, speculate="default", seed=7)[0]
    a.pop("host"), b.pop("host")
    assert a == b


def test_a_user_strategy_from_a_file(tmp_path):
    """A strategy defined in the user's own file, registered without touching the kernel."""
    f = tmp_path / "mine.py"
    f.write_text(
        "from pmap_py.strategies.purge import Purge\n"
        "class Twice(Purge):\n"
        "    name = 'purge-twice'\n"
        "    summary = 'purge, then pmap_purge again (a no-op: pm_active is 0)'\n")
    res, m, k = go(workload="touch", strategy="purge-twice", pages=8, cpus=2, strategy_file=str(f))
    assert res["outcome"]["completed"] and res["exit_events"]["tlbi"]["ASIDE1IS"] == 4
    assert "purge-twice" in strategies.names()


@pytest.mark.parametrize("strategy,contended", [("legacy-reaper", True), ("purge", False)])
def test_kernel_lock_held_by_the_reaper_makes_exit_spin(strategy, contended):
    """kern_exit.c of 2018-2025: the reaper tears down under KERNEL_LOCK, so a process
    calling exit meanwhile spins in sys_exit's KERNEL_LOCK until the reaper is done;
    1.252's reaper takes the lock only for the zombie notification."""
    from emu.run import build
    t = Trace()
    cfg, m, k = build({"workload": "touch", "strategy": strategy, "pages": 1024, "cpus": 3, "trace": t}, 1)
    k.spawn(load("loop", {"ITERS": 60000}))        # exits while the touch process is torn down
    k.run()
    kern = [(c, f) for c, _, kind, f in t.records if kind is Ev.KERNEL]
    waits = [f for _, f in kern if f["op"] == "kernel_lock_contended" and f["proc"].startswith("loop")]
    spins = sum(c.events["spin_wait"] for c in m.cpus)
    if contended:
        assert [f["holder"] for f in waits] == ["reaper"] and spins > 1000
        zombie_touch = next(c for c, f in kern if f["op"] == "zombie" and f["process"].startswith("touch"))
        exit_loop = next(c for c, f in kern if f["op"] == "exit1" and f["proc"].startswith("loop"))
        assert exit_loop > zombie_touch            # it got the lock only when the reaper let go
    else:
        assert waits == [] and spins == 0


def test_threads_keep_their_registers_and_flags_across_preemption_and_migration(asm_guest):
    """4 threads on 2 CPUs with a short time slice: each is preempted and moved between
    CPUs many times (its Unicorn context saved at the switch, restored on the new CPU,
    NZCV kept in the trapframe) and still computes 1 + 2 + ... + N right, even when a
    quantum ends between a `cmp` and its `b.ne`. A wrong register or flag -> exit(1)."""
    n = 3000
    src = asm_guest("sum", f"""
	MOV48	x20, 0x20000000            // +0: struct __tfork, +64: DONE[i], +128: COUNT[i]
	mov	x19, #1
spawn:
	cmp	x19, #4
	b.eq	work
	str	xzr, [x20]
	str	xzr, [x20, #8]
	MOV48	x9, 0x7fffff8000
	sub	x9, x9, x19, lsl #13
	str	x9, [x20, #16]
	mov	x0, x20
	mov	x1, #TFORK_PARAM_SIZE
	SYSTRAP	SYS___tfork
	b.cs	bad
	cbz	x0, child
	add	x19, x19, #1
	b	spawn
child:	mov	x24, x19                  // my index, kept in a register all along
	b	1f
work:	mov	x24, #0
1:	add	x25, x20, #128
	add	x25, x25, x24, lsl #3     // &COUNT[me]
	mov	x21, #0
	mov	x22, #0
loop:	add	x21, x21, #1
	cmp	x21, x21                  // Z = C = 1 ...
	add	x22, x22, x21
	ldr	x9, [x25]
	add	x9, x9, #1
	str	x9, [x25]
	b.ne	bad                       // ... still, whatever quantum ended in between
	b.cc	bad
	cmp	x21, #{n}
	b.ne	loop
	MOV32	x23, {n * (n + 1) // 2}
	cmp	x22, x23
	b.ne	bad
	add	x9, x20, #64
	mov	x10, #1
	str	x10, [x9, x24, lsl #3]
	cbnz	x24, 3f
2:	ldr	x10, [x20, #72]           // main: wait for DONE[1..3]
	ldr	x11, [x20, #80]
	ldr	x12, [x20, #88]
	and	x10, x10, x11
	and	x10, x10, x12
	cbnz	x10, check
	SYSTRAP	SYS_sched_yield
	b	2b
3:	SYSTRAP	SYS_sched_yield           // siblings linger until exit kills them
	b	3b
check:	mov	x13, #0                   // every thread counted exactly its own N iterations
4:	add	x9, x20, #128
	ldr	x10, [x9, x13, lsl #3]
	cmp	x10, #{n}
	b.ne	bad
	add	x13, x13, #1
	cmp	x13, #4
	b.ne	4b
	mov	x0, #0
	SYSTRAP	SYS_exit
bad:	mov	x0, #1
	SYSTRAP	SYS_exit
""")
    res, m, k = go(guest=src, strategy="purge", cpus=2, pages=1, quantum=7, slice_cycles=400, seed=3,
                   budgets={"max_insns": 2_000_000})
    assert res["outcome"]["completed"], res["outcome"]["reason"]
    assert res["processes"][0]["status"] == 0
    assert res["events"]["context_switches"] > 50


def _purge_vs_deactivates(strategy, seed):
    t = Trace()
    res, m, k = go(workload="spin", strategy=strategy, pages=16, cpus=4, threads=4, seed=seed, trace=t,
                   unlocked_exit=True, irq_prob=0.3)
    assert res["outcome"]["completed"] and res["exit_events"]["tlbi"]["ASIDE1IS"] == 4
    pm = k.workload[0].ps_pmap.pm_name
    ops = [f["op"] for _, _, kind, f in t.records
           if kind is Ev.KERNEL and f.get("pmap") == pm and f["op"] in ("pmap_purge", "pmap_deactivate")]
    return ops.index("pmap_purge"), [i for i, op in enumerate(ops) if op == "pmap_deactivate"]


def test_unlocked_exit_makes_pmap_purge_wait_and_nowait_race():
    """With threads leaving exit1 unlocked and interrupts stretching kernel steps, a
    sibling can still be between ps_exitcnt-- and pmap_deactivate when the main thread
    reaches pmap_purge: purge then spins until every deactivate is done (so its flush
    always comes after them), purge-nowait flushes before some of them."""
    seeds = range(12)
    for seed in seeds:
        purge_at, deacts = _purge_vs_deactivates("purge", seed)
        assert all(d < purge_at for d in deacts[:3])          # the 3 siblings' deactivates
    raced = 0
    for seed in seeds:
        purge_at, deacts = _purge_vs_deactivates("purge-nowait", seed)
        raced += any(d > purge_at for d in deacts)
    assert raced >= 1


def test_a_migrated_thread_runs_at_el0(asm_guest):
    """Saved contexts carry the kernel's PSTATE: a thread resumed on another CPU must
    still run at EL0. After many preemptions each thread reads CurrentEL, which EL0
    may not: the first to try is killed with SIGILL (at EL1 it would read 4 and the
    process would exit(0))."""
    src = asm_guest("el", """
	MOV48	x20, 0x20000000
	mov	x19, #1
spawn:	cmp	x19, #4
	b.eq	work
	str	xzr, [x20]
	str	xzr, [x20, #8]
	MOV48	x9, 0x7fffff8000
	sub	x9, x9, x19, lsl #13
	str	x9, [x20, #16]
	mov	x0, x20
	mov	x1, #TFORK_PARAM_SIZE
	SYSTRAP	SYS___tfork
	cbz	x0, work
	add	x19, x19, #1
	b	spawn
work:	mov	x21, #4000
1:	subs	x21, x21, #1
	b.ne	1b
	mrs	x9, CurrentEL
	mov	x0, #0
	SYSTRAP	SYS_exit
""")
    res, m, k = go(guest=src, strategy="purge", cpus=2, pages=1, quantum=7, slice_cycles=400, seed=5)
    p = res["processes"][0]
    assert res["outcome"]["completed"] and res["events"]["context_switches"] > 30
    assert p["signal"] == 4 and "undef" in p["killed"]
    # every page is populated: no thread ever faults (a context restored with the
    # kernel's PSTATE would make its next fetch of a user page a permission fault)
    assert [t["faults"] for t in p["threads"]] == [0, 0, 0, 0]
