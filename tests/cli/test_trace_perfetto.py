"""The Perfetto trace of a real purge run against the Chrome trace-event format rules, and
its content against pmap.c 1.113's pmap_purge (TTBR0 to the zero page, ISB, ASIDE1IS of
the ASID and of ASID|1, all inside the pmap_purge slice)."""
import json
from collections import defaultdict

import pytest

PHASES = set("BEXiCM")
EPS = 1e-6          # µs: Perfetto keeps integer nanoseconds, float noise below that is no overlap


def format_problems(events: list) -> list[str]:
    """Every rule of the trace-event format this project promises, checked independently of
    the writer: fields, LIFO B/E nesting and exact X nesting per track, instant scopes,
    metadata naming every track, timestamps monotonic per track."""
    bad = []
    named_threads, named_procs, tracks = set(), set(), set()
    open_b = defaultdict(list)             # track -> [name]
    x_stack = defaultdict(list)            # track -> [end ts] of enclosing slices
    last = {}
    for i, e in enumerate(events):
        for key in ("name", "ph", "ts", "pid", "tid"):
            if key not in e:
                bad.append(f"event {i} has no {key}: {e}")
        ph = e.get("ph")
        if ph not in PHASES:
            bad.append(f"event {i}: phase {ph!r}")
        track = (e.get("pid"), e.get("tid"))
        if ph == "M":
            if e["name"] == "thread_name":
                named_threads.add(track)
            if e["name"] == "process_name":
                named_procs.add(e["pid"])
            continue
        tracks.add(track)
        clock = (e["pid"], "counter", e["name"]) if ph == "C" else track   # a counter is its own track
        if e["ts"] < last.get(clock, float("-inf")):
            bad.append(f"event {i}: ts {e['ts']} before {last[clock]} on track {clock}")
        last[clock] = e["ts"]
        while x_stack[track] and x_stack[track][-1] <= e["ts"] + EPS and ph != "E":
            x_stack[track].pop()
        if ph == "B":
            open_b[track].append(e["name"])
        elif ph == "E":
            if not open_b[track]:
                bad.append(f"event {i}: E {e['name']} with no open slice on {track}")
            elif open_b[track][-1] != e["name"]:
                bad.append(f"event {i}: E {e['name']} closes {open_b[track][-1]} (not LIFO) on {track}")
            else:
                open_b[track].pop()
        elif ph == "X":
            if e.get("dur", -1) < 0:
                bad.append(f"event {i}: X without a duration")
            end = e["ts"] + e["dur"]
            if x_stack[track] and end > x_stack[track][-1] + EPS:
                bad.append(f"event {i}: X {e['name']} overlaps its parent partially")
            if open_b[track]:
                bad.append(f"event {i}: X {e['name']} inside open B slice {open_b[track][-1]}")
            x_stack[track].append(end)
        elif ph == "i" and e.get("s") not in ("t", "p", "g"):
            bad.append(f"event {i}: instant {e['name']} without a scope")
        elif ph == "C" and not isinstance(e.get("args"), dict):
            bad.append(f"event {i}: counter without args")
    for track, names in open_b.items():
        if names:
            bad.append(f"slices never closed on {track}: {names}")
    for track in tracks:
        if track not in named_threads:
            bad.append(f"track {track} has no thread_name metadata")
        if track[0] not in named_procs:
            bad.append(f"process {track[0]} has no process_name metadata")
    return bad


def test_the_rules_catch_what_they_should():
    meta = [{"name": "process_name", "ph": "M", "ts": 0, "pid": 1, "tid": 1, "args": {"name": "p"}},
            {"name": "thread_name", "ph": "M", "ts": 0, "pid": 1, "tid": 1, "args": {"name": "t"}}]
    ok = meta + [{"name": "a", "ph": "B", "ts": 1, "pid": 1, "tid": 1},
                 {"name": "b", "ph": "B", "ts": 2, "pid": 1, "tid": 1},
                 {"name": "b", "ph": "E", "ts": 3, "pid": 1, "tid": 1},
                 {"name": "a", "ph": "E", "ts": 4, "pid": 1, "tid": 1},
                 {"name": "q", "ph": "X", "ts": 5, "dur": 2, "pid": 1, "tid": 1},
                 {"name": "i", "ph": "i", "s": "t", "ts": 6, "pid": 1, "tid": 1}]
    assert format_problems(ok) == []
    crossed = meta + [{"name": "a", "ph": "B", "ts": 1, "pid": 1, "tid": 1},
                      {"name": "b", "ph": "B", "ts": 2, "pid": 1, "tid": 1},
                      {"name": "a", "ph": "E", "ts": 3, "pid": 1, "tid": 1}]
    assert any("not LIFO" in p for p in format_problems(crossed))
    assert any("scope" in p for p in format_problems(meta + [{"name": "i", "ph": "i", "ts": 1, "pid": 1, "tid": 1}]))
    assert any("thread_name" in p for p in format_problems(meta[:1] + [{"name": "i", "ph": "i", "s": "t", "ts": 1,
                                                                        "pid": 1, "tid": 2}]))
    assert any("before" in p for p in format_problems(meta + [{"name": "x", "ph": "i", "s": "t", "ts": 2, "pid": 1,
                                                               "tid": 1},
                                                              {"name": "y", "ph": "i", "s": "t", "ts": 1, "pid": 1,
                                                               "tid": 1}]))


@pytest.fixture(scope="module")
def purge_trace(tmp_path_factory):
    import subprocess
    import sys
    d = tmp_path_factory.mktemp("perfetto")
    path = d / "purge.json"
    p = subprocess.run([sys.executable, "-m", "emu.cli", "run", "--workload", "threads", "--strategy", "purge",
                        "--pages", "16", "--threads", "3", "--cpus", "2", "--trace", str(path),
                        "--trace-format", "perfetto"], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    return json.loads(path.read_text())


def test_perfetto_output_follows_the_format(purge_trace):
    assert format_problems(purge_trace) == []


def test_tracks_slices_counters(purge_trace):
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in purge_trace
             if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"cpu0", "cpu1", "reaper"} <= set(names.values())
    slices = {e["name"] for e in purge_trace if e["ph"] == "B"}
    assert {"exit1", "single_thread_set", "uvm_purge", "pmap_purge", "uvm_map_teardown", "pmap_remove",
            "pmap_destroy", "reaper", "cpu_switchto"} <= slices
    reaper_track = [k for k, v in names.items() if v == "reaper"][0]
    on_reaper = {e["name"] for e in purge_trace if e["ph"] == "B" and (e["pid"], e["tid"]) == reaper_track}
    assert "pmap_destroy" in on_reaper and "exit1" not in on_reaper
    counters = {e["name"] for e in purge_trace if e["ph"] == "C"}
    assert "live ASIDs" in counters and any("TLB entries" in c for c in counters)
    assert any(e["ph"] == "X" and e["name"].startswith("user ") for e in purge_trace)
    end = purge_trace[-1]
    assert end["name"] == "end" and end["args"]["reason"] == "completed"


def test_pmap_purge_slice_holds_ttbr0_switch_and_both_aside1is(purge_trace):
    # pmap.c 1.113 pmap_purge: msr ttbr0_el1 <- pmap_kernel's pm_pt0pa (the zero page); isb;
    # cpu_tlb_flush_asid_all(asid); cpu_tlb_flush_asid_all(asid | ASID_USER)
    track_events = defaultdict(list)
    for e in purge_trace:
        if e["ph"] != "M" and e["pid"] == 1:                       # the CPU tracks
            track_events[(e["pid"], e["tid"])].append(e)
    found = []
    for evs in track_events.values():
        depth, inside = 0, None
        for e in evs:
            if e["ph"] == "B" and e["name"] == "pmap_purge":
                depth += 1
                inside = [] if depth == 1 else inside
            elif e["ph"] == "E" and e["name"] == "pmap_purge":
                depth -= 1
                if depth == 0:
                    found.append(inside)
            elif depth and e["ph"] == "i":
                inside.append(e)
    assert len(found) == 1
    inside = found[0]
    msr = [e for e in inside if e["name"] == "MSR TTBR0_EL1"]
    tlbis = [e for e in inside if e["name"].startswith("TLBI")]
    assert len(msr) == 1 and [e["name"] for e in tlbis] == ["TLBI ASIDE1IS", "TLBI ASIDE1IS"]
    a0, a1 = (int(e["args"]["asid"], 16) for e in tlbis)
    assert a0 % 2 == 0 and a1 == a0 | 1
    assert msr[0]["ts"] <= tlbis[0]["ts"]
    assert all(e["s"] == "t" for e in inside)


def test_thread_tracks_keep_exit1_open_across_its_sleep(purge_trace):
    """The main thread's own track: one exit1 slice holding single_thread_set's sleep and,
    after it, uvm_purge > pmap_purge (kern_exit.c: single_thread_set, then uvm_purge)."""
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in purge_trace
             if e["ph"] == "M" and e["name"] == "thread_name"}
    main = next(t for t, n in names.items() if t[0] >= 100 and "." not in n)
    stack, inside_exit1 = [], []
    for e in purge_trace:
        if (e["pid"], e["tid"]) != main or e["ph"] not in "BE":
            continue
        if e["ph"] == "B":
            stack.append(e["name"])
            if "exit1" in stack[:-1] or e["name"] == "exit1":
                inside_exit1.append(" > ".join(stack))
        else:
            stack.pop()
    assert "syscall > exit1 > single_thread_set > tsleep" in inside_exit1
    assert "syscall > exit1 > exit1_purge > teardown > uvm_purge > pmap_purge" in inside_exit1
    assert inside_exit1.index("syscall > exit1 > single_thread_set > tsleep") < \
        inside_exit1.index("syscall > exit1 > exit1_purge > teardown > uvm_purge > pmap_purge")
    assert inside_exit1.count("syscall > exit1") == 1            # one slice across the sleep
    siblings = [t for t, n in names.items() if t[0] == main[0] and t != main]
    assert len(siblings) == 2


@pytest.mark.parametrize("argv", [
    ("--workload", "storm", "--procs", "3", "--threads", "2", "--strategy", "linux", "--speculate", "default"),
    ("--workload", "threxit", "--strategy", "purge-early", "--threads", "4", "--cpus", "2", "--pages", "8"),
    ("--workload", "sparse", "--pages", "32", "--cpus", "2", "--strategy", "legacy-reaper"),
], ids=["storm-linux-speculating", "purge-early-stopped", "sparse-legacy"])
def test_other_runs_follow_the_format(armmu, tmp_path, argv):
    rc, out, err = armmu("run", *argv, "--trace", "t.json", "--trace-format", "perfetto")
    assert rc in (0, 1) and err == ""
    events = json.loads((tmp_path / "t.json").read_text())
    assert format_problems(events) == []
    assert events[-1]["name"] == "end" and events[-1]["args"]["reason"].startswith(("completed", "stopped"))
