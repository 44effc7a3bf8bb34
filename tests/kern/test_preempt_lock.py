"""mi_switch drops the kernel lock (sched_bsd.c 1.104: __mp_release_all before
cpu_switchto, __mp_acquire_count after): the legacy reaper, preempted in uvm_map_teardown's
sched_pause while it holds KERNEL_LOCK, must not leave exiting threads spinning for the lock
on the CPU it needs to get back to. Before the model released the lock at a preemption,
this storm spun until the kernel step budget ended it (75,000 switches, no process reaped)."""
from emu.run import run


def test_a_preempted_lock_holder_releases_the_kernel_lock():
    r = run({"workload": "storm", "strategy": "legacy-reaper", "procs": 8, "threads": 2, "pages": 64, "cpus": 4,
             "budgets": {"max_steps": 400_000}}, 0)
    assert r["outcome"]["completed"], r["outcome"]["reason"]
    assert all(p["zombie"] for p in r["processes"])
    assert r["outcome"]["context_switches"] < 2_000
