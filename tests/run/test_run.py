"""emu.run: one run = one call, schema 1, deterministic; bad configurations are typed
errors (RunError, one line) raised before anything runs."""
from __future__ import annotations

import json

import pytest

from emu.run import RunError, run

SCHEMA_KEYS = {"config", "cycles", "events", "exit_events", "violations", "host"}
CYCLE_KEYS = {"total", "exit_latency", "teardown", "process_sys", "process_user", "reaper", "exits_per_mcycle"}
EVENT_KEYS = {"tlbi", "dsb", "isb", "ttbr_writes", "walks", "speculative_walks", "tlb_hits", "tlb_misses",
              "faults", "ptes_cleared", "pt_pages_freed", "asids_allocated", "asid_rollovers"}


def test_schema_1_and_json():
    r = run({"workload": "touch", "strategy": "reaper", "pages": 8, "cpus": 2}, 5)
    assert r["schema"] == 1 and SCHEMA_KEYS <= set(r)
    assert set(r["cycles"]) == CYCLE_KEYS
    assert EVENT_KEYS <= set(r["events"]) and EVENT_KEYS <= set(r["exit_events"])
    assert r["config"] == {"workload": "touch", "strategy": "reaper", "cpus": 2, "threads": 1, "procs": 1,
                           "pages": 8, "core": "cortex-a72", "speculate": "off", "seed": 5}
    assert r["violations"] == [] and r["host"]["guest_instructions"] > 0
    json.dumps(r)
    # whole run >= exit window; the build's walks and ASID allocation are outside it
    assert r["events"]["ptes_cleared"] >= r["exit_events"]["ptes_cleared"]
    assert r["exit_events"]["asids_allocated"] == 0 and r["events"]["asids_allocated"] == 1
    c = r["cycles"]
    assert 0 < c["exit_latency"] < c["total"] and c["reaper"] > 0 and c["process_user"] > 0


def test_cycles_follow_who_tears_down():
    """The same teardown charged to the process (purge) or to the reaper (reaper)."""
    purge = run({"workload": "touch", "strategy": "purge", "pages": 2048, "cpus": 2}, 0)["cycles"]
    reaper = run({"workload": "touch", "strategy": "reaper", "pages": 2048, "cpus": 2}, 0)["cycles"]
    assert purge["process_sys"] > reaper["process_sys"] + purge["teardown"] // 2
    assert reaper["reaper"] > purge["reaper"] + reaper["teardown"] // 2


def test_storm_exits_many_processes():
    r = run({"workload": "storm", "strategy": "purge", "pages": 16, "threads": 2, "procs": 3, "cpus": 2}, 1)
    assert r["outcome"]["completed"]
    assert len(r["processes"]) == 3 and all(p["zombie"] and p["status"] == 0 for p in r["processes"])
    assert r["exit_events"]["tlbi"]["ASIDE1IS"] == 3 * 4


@pytest.mark.parametrize("cfg,msg", [
    ({"workload": "nope"}, "unknown workload 'nope'"),
    ({"strategy": "nope"}, "unknown strategy 'nope'"),
    ({"pages": 0}, "pages = 0"),
    ({"pages": 1 << 30}, "pages = 1073741824"),
    ({"cpus": 0}, "cpus = 0"),
    ({"threads": "4"}, "threads = '4'"),
    ({"speculate": "always"}, "speculate = 'always'"),
    ({"core": "cortex-z9"}, "cortex-z9"),
    ({"guest": "/nonexistent.S"}, "nonexistent"),
    ({"workload": "touch", "pages": 100000, "mem_mb": 64}, "mem_mb too small"),
    ({"mem_mb": -5}, "mem_mb = -5"),
    ({"budgets": {"max_sleeps": 3}}, "unknown key 'max_sleeps'"),
])
def test_bad_configuration_is_a_run_error(cfg, msg):
    with pytest.raises(RunError) as e:
        run(cfg, 0)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_per_thread_cycles_add_up_to_the_process():
    r = run({"workload": "threads", "strategy": "purge", "pages": 32, "cpus": 4, "threads": 4}, 2)
    p = r["processes"][0]
    assert len(p["threads"]) == 4 and sum(t["main"] for t in p["threads"]) == 1
    assert sum(t["user"] for t in p["threads"]) == p["cycles"]["user"] == r["cycles"]["process_user"]
    assert sum(t["sys"] for t in p["threads"]) == p["cycles"]["sys"] == r["cycles"]["process_sys"]
    assert all(t["instructions"] > 0 and t["user"] >= t["instructions"] for t in p["threads"])
    assert p["cycles"]["exit_latency"] == r["cycles"]["exit_latency"]
