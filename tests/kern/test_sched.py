"""The scheduler: time slices, fairness, idle CPUs, stealing, and every switch
through pmap_setttb (cpuswitch.S 1.4)."""
from __future__ import annotations

from emu.trace import Ev, Trace
from guest.programs import load

from .conftest import go


def busy(k, n, iters=20000):
    for _ in range(n):
        k.spawn(load("loop", {"ITERS": iters}))


def test_round_robin_on_one_cpu_is_fair():
    """3 CPU-bound processes on 1 CPU share it in time slices: each is preempted many
    times (roundrobin), all finish, and their user cycles are within 20% of each other."""
    from emu.run import build, result
    cfg, m, k = build({"guest": None, "workload": "touch", "strategy": "purge", "pages": 1, "cpus": 1,
                       "slice_cycles": 20000}, 0)
    busy(k, 3)
    k.run()
    r = result(cfg, 0, m, k, "", 0.0)
    loops = [p for p in r["processes"] if p["pid"] != r["processes"][0]["pid"]]
    assert all(p["zombie"] and p["status"] == 0 for p in r["processes"])
    users = [p["cycles"]["user"] for p in loops]
    assert max(users) < 1.2 * min(users)
    # each loop runs ~80k guest cycles in 20k-cycle slices: at least 3 switches each
    assert r["events"]["context_switches"] >= 3 * 3


def test_every_switch_loads_the_incoming_pmap():
    """cpu_switchto is always followed by pmap_setttb for the incoming proc's pmap
    (the kernel pmap for idle, the reaper and the shell), also when a thread of the
    same process follows another."""
    t = Trace()
    res, m, k = go(workload="threads", strategy="purge", pages=16, cpus=2, threads=4, trace=t)
    recs = [f for _, _, kind, f in t.records if kind is Ev.KERNEL]
    pmap_of = {q.p_name: q.p_p.ps_pmap.pm_name for pr in k.workload for q in pr.ps_allthreads}
    n = 0
    for a, b in zip(recs, recs[1:]):
        if a["op"] == "cpu_switchto":
            assert b["op"] == "pmap_setttb" or (b["op"] == "pmap_allocate_asid")
            n += 1
    switches = [f for f in recs if f["op"] == "cpu_switchto"]
    same_process = [f for f in switches if f["proc"] in pmap_of and f["to"] in pmap_of]
    assert n == res["events"]["context_switches"] and same_process      # thread to thread, TTBRs rewritten
    for i, f in enumerate(recs):
        if f["op"] == "cpu_switchto":
            nxt = recs[i + 1] if recs[i + 1]["op"] == "pmap_setttb" else recs[i + 2]
            assert nxt["pmap"] == pmap_of.get(f["to"], "pmap_kernel")


def test_an_idle_cpu_takes_new_work():
    """Four busy processes on 4 CPUs start at once: each CPU runs one (sched_choosecpu
    prefers idle CPUs), so the makespan is about one process's run, not four."""
    from emu.run import build, result
    cfg, m, k = build({"workload": "touch", "strategy": "purge", "pages": 1, "cpus": 4}, 0)
    busy(k, 3)
    k.run()
    r = result(cfg, 0, m, k, "", 0.0)
    longest = max(p["cycles"]["user"] for p in r["processes"])
    assert r["cycles"]["total"] < 2 * longest
