"""armmu compare and armmu sweep as a user runs them: counts derived by hand from the
OpenBSD sources, the best value of each row marked, results equal to separate runs,
result files whole, sweeps resumable."""
import csv
import json
import re

import pytest

# touch with 6 heap pages maps 8 pages (text, 6 heap, stack). Exit-path TLBIs per
# docs/openbsd-exit-path.md (pmap.c 1.58 / 1.111 / 1.113): 1.58's pmap_remove_pted flushes
# the page for asid and asid|1 and pmap_pte_remove ends with its own ttlb_flush: 4 VAE1IS per
# page, then pmap_destroy's pmap_free_asid 2 ASIDE1IS; 1.111: the last pmap_deactivate 2
# ASIDE1IS + pmap_destroy 2, no per-page flush (pm_active == 0); 1.113: pmap_purge 2 +
# pmap_destroy 2.
TOUCH = ("--workload", "touch", "--pages", "6", "--cpus", "1", "--threads", "1")
EXPECT_VAE1IS = {"legacy-reaper": 32, "reaper": 0, "purge": 0}
EXPECT_ASIDE1IS = {"legacy-reaper": 2, "reaper": 4, "purge": 4}


def table_rows(out: str) -> dict:
    """{row: {strategy: (value, marked)}} from the printed table."""
    lines = out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith(" " * 20))
    names = lines[head].split()
    rows = {}
    for ln in lines[head + 2:]:
        if ln.startswith("-"):
            break
        label, cells = ln[:20].strip(), re.findall(r"([\d,]+)(\*?)", ln[20:])
        rows[label] = {n: (int(v.replace(",", "")), m == "*") for n, (v, m) in zip(names, cells)}
    return rows


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    import subprocess
    import sys
    d = tmp_path_factory.mktemp("compare")
    p = subprocess.run([sys.executable, "-m", "emu.cli", "compare", *TOUCH, "--strategies",
                        "legacy-reaper,reaper,purge", "--json", str(d / "c.json"), "--plot", str(d / "c.png"),
                        "--jobs", "2"], capture_output=True, text=True, timeout=300)
    return p, d


def test_compare_table_counts_and_marks(compared):
    p, d = compared
    assert p.returncode == 0, p.stderr
    rows = table_rows(p.stdout)
    assert {k: v[0] for k, v in rows["TLBI VAE1IS"].items()} == EXPECT_VAE1IS
    assert {k: v[0] for k, v in rows["TLBI ASIDE1IS"].items()} == EXPECT_ASIDE1IS
    for label in ("teardown cycles", "exit latency", "process sys cycles", "reaper cycles", "DSB",
                  "TTBR writes", "violations"):
        assert label in rows
    for label, cells in rows.items():
        values = [v for v, _ in cells.values()]
        marked = {n for n, (v, m) in cells.items() if m}
        if len(set(values)) > 1:
            assert marked == {n for n, (v, _) in cells.items() if v == min(values)}, label
        else:
            assert not marked, label
    reading = p.stdout.split("every run completed")[1]
    assert "legacy-reaper costs most" in reading and "32 by-page VAE1IS" in reading
    assert "no TLB hazard" in reading


def test_compare_json_and_plot_match_separate_runs(compared, armmu):
    p, d = compared
    report = json.loads((d / "c.json").read_text())
    assert report["strategies"] == ["legacy-reaper", "reaper", "purge"]
    assert report["table"]["TLBI VAE1IS"] == EXPECT_VAE1IS
    assert (d / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, out, err = armmu("run", *TOUCH, "--strategy", "purge", "--json")
    alone = json.loads(out)
    mine = report["results"]["purge"]
    assert mine["cycles"] == alone["cycles"] and mine["exit_events"] == alone["exit_events"]


def test_sweep_writes_csv_json_png_and_resumes(armmu, tmp_path):
    argv = ("sweep", "--workload", "touch", "--pages", "4,8", "--cpus", "1", "--strategies", "legacy-reaper,purge",
            "--out", "sw", "--jobs", "1")
    rc, out, err = armmu(*argv)
    assert rc == 0, err
    sw = tmp_path / "sw"
    rows = list(csv.DictReader((sw / "sweep.csv").open()))
    assert len(rows) == 4
    # 1.58: 4 VAE1IS per mapped page (pages + text + stack); 1.113: none
    assert {(r["strategy"], int(r["pages"])): int(r["VAE1IS"]) for r in rows} == \
        {("legacy-reaper", 4): 24, ("legacy-reaper", 8): 40, ("purge", 4): 0, ("purge", 8): 0}
    assert (sw / "teardown_vs_pages.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((sw / "sweep.json").read_text())
    assert len(data["points"]) == 4
    rc, out, err = armmu(*argv)
    assert rc == 0 and "4 already in" in err and "0 to run" in err
    data["points"] = [pt for pt in data["points"] if pt["pages"] != 8 or pt["strategy"] != "purge"]
    (sw / "sweep.json").write_text(json.dumps(data))
    rc, out, err = armmu(*argv)
    assert rc == 0 and "3 already in" in err and "1 to run" in err
    again = json.loads((sw / "sweep.json").read_text())["points"]
    assert len(again) == 4 and not list(sw.glob(".*.tmp"))


def test_sweep_range_syntax_and_limits(armmu):
    rc, out, err = armmu("sweep", "--pages", "1..64*4", "--strategies", "purge", "--cpus", "1", "--workload",
                         "touch", "--out", "r", "--jobs", "1", "--no-check")
    assert rc == 0, err
    assert "4 points" in err                                   # 1, 4, 16, 64


def test_compare_trace_dir(armmu, tmp_path):
    from .test_trace_perfetto import format_problems
    rc, out, err = armmu("compare", *TOUCH, "--strategies", "reaper,purge", "--trace-dir", "tr",
                         "--trace-format", "perfetto", "--no-check")
    assert rc == 0, err
    for s in ("reaper", "purge"):
        events = json.loads((tmp_path / "tr" / f"{s}.json").read_text())
        assert format_problems(events) == []
        aside = [e for e in events if e["name"] == "TLBI ASIDE1IS"]
        assert len(aside) == EXPECT_ASIDE1IS[s]


def test_compare_takes_the_kernel_options_of_run_and_check(armmu):
    """The asid-noflush hazard needs 8-bit ASIDs and a shell running a few processes at a
    time (pairs are handed out again within a few dozen exits): the configuration
    `armmu check` reported for it, given to compare, shows it next to a clean purge."""
    rc, out, err = armmu("compare", "--workload", "storm", "--strategies", "purge,asid-noflush", "--pages", "16",
                         "--threads", "2", "--procs", "64", "--asid-bits", "8", "--speculate", "default",
                         "--shell-jobs", "4", "--quantum", "2240", "--seed", "0")
    assert rc == 1, err
    assert out.startswith("storm: 16 pages, 2 thread(s) x 64 process(es) on 4 CPUs (cortex-a72, speculation "
                          "default, ASID bits 8, quantum 2240, shell jobs 4), seed 0")
    rows = table_rows(out)
    assert rows["violations"]["purge"][0] == 0 and rows["violations"]["asid-noflush"][0] > 0
    assert "asid-reuse-stale" in out
    rc16, out16, _ = armmu("compare", "--workload", "storm", "--strategies", "asid-noflush", "--pages", "16",
                           "--threads", "2", "--procs", "64", "--speculate", "default", "--shell-jobs", "4",
                           "--quantum", "2240", "--seed", "0")
    assert rc16 == 0 and table_rows(out16)["violations"]["asid-noflush"][0] == 0     # 16-bit: no reuse


def test_sweep_kernel_options_are_part_of_each_point(armmu, tmp_path):
    """A point is its configuration and seed: the kernel options too (recorded in the CSV,
    resumed only with the same options)."""
    base = ("sweep", "--workload", "storm", "--procs", "2", "--threads", "1", "--pages", "8", "--cpus", "2",
            "--strategies", "purge", "--out", "sw", "--jobs", "1", "--no-check")
    rc, out, err = armmu(*base, "--asid-bits", "8", "--quantum", "700")
    assert rc == 0, err
    rows = list(csv.DictReader((tmp_path / "sw" / "sweep.csv").open()))
    assert [(r["asid_bits"], r["quantum"], r["jobs"]) for r in rows] == [("8", "700", "")]
    data = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert data["kernel"] == {"asid_bits": 8, "quantum": 700}
    rc, out, err = armmu(*base, "--asid-bits", "8", "--quantum", "700")
    assert rc == 0 and "1 already in" in err and "0 to run" in err
    rc, out, err = armmu(*base, "--asid-bits", "8", "--quantum", "900")
    assert rc == 0 and "0 already in" in err and "1 to run" in err
    rows = list(csv.DictReader((tmp_path / "sw" / "sweep.csv").open()))
    assert [r["quantum"] for r in rows] == ["900"]
