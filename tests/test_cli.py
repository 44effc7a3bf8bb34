"""The armmu command as a user runs it: output checked against hand-computed values, bad
input gets exit code 2 and one line on stderr (never a traceback)."""
import json
import subprocess
import sys

import pytest

from emu.cli import main


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_walk_prints_every_descriptor_and_the_result(capsys):
    rc, out, err = run(capsys, "walk", "0x1000123", "--map", "0x1000000:rw", "--access", "write")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[2].strip().startswith("L1[  0]") and "table ->" in lines[2]
    assert lines[3].strip().startswith("L2[  8]")                      # 0x1000000 >> 21 = 8
    assert lines[4].strip().startswith("L3[  0]") and "AP=01" in lines[4]
    assert "el0:rw-" in lines[5] and "nG, ASID 0x5" in lines[5] and "level 3" in lines[5]


def test_walk_reports_faults(capsys):
    rc, out, _ = run(capsys, "walk", "0x1001000", "--map", "0x1000000:r")
    assert rc == 0 and "translation fault, level 3 (FSC 0x07)" in out
    rc, out, _ = run(capsys, "walk", "0x1000000", "--map", "0x1000000:r", "--access", "write")
    assert "permission fault, level 3 (FSC 0x0f)" in out


def test_list_names_workloads_strategies_presets(capsys):
    rc, out, err = run(capsys, "list")
    assert rc == 0 and err == ""
    for name in ("touch", "threads", "spin", "storm", "sparse", "legacy-reaper", "purge-early",
                 "freebsd", "cortex-a72", "neoverse-n1"):
        assert f"  {name} " in out


@pytest.mark.parametrize("pages", [8, 40])
def test_run_json_counts_match_the_reference(capsys, pages):
    """touch on 2 CPUs, path C (purge): N = pages + text + stack mappings removed with no
    VAE1IS; 2 ASIDE1IS in pmap_purge + 2 in pmap_destroy; 5 VAALE1IS for the u-area;
    TTBR writes: pmap_purge's TTBR0 + 2 switches x 3 (to idle, to the reaper)."""
    rc, out, err = run(capsys, "run", "--workload", "touch", "--strategy", "purge", "--pages", str(pages),
                       "--cpus", "2", "--json")
    assert rc == 0 and err == ""
    r = json.loads(out)
    assert r["schema"] == 1 and r["config"]["pages"] == pages and r["config"]["strategy"] == "purge"
    e = r["exit_events"]
    assert e["tlbi"] == {"ASIDE1IS": 4, "VAALE1IS": 5}
    assert e["ttbr_writes"] == 1 + 2 * 3
    assert e["ptes_cleared"] == pages + 2 + 5                 # user PTEs + the u-area's kernel PTEs
    assert r["processes"][0]["status"] == 0
    assert set(r["cycles"]) == {"total", "exit_latency", "teardown", "process_sys", "process_user", "reaper",
                                "exits_per_mcycle"}
    assert r["cycles"]["teardown"] > 0 and r["cycles"]["exit_latency"] > 0


def test_run_table(capsys):
    rc, out, err = run(capsys, "run", "--workload", "touch", "--strategy", "legacy-reaper", "--pages", "6",
                       "--cpus", "1")
    assert rc == 0 and err == ""
    # path A in 1.58: 4 VAE1IS for each of the 8 mappings
    assert "exit path   VAE1IS 32  ASIDE1IS 2" in out and "outcome     completed" in out


def test_run_that_a_budget_stops_exits_1(capsys):
    rc, out, err = run(capsys, "run", "--workload", "threxit", "--strategy", "purge-early", "--threads", "4",
                       "--cpus", "2", "--pages", "8")
    assert rc == 1 and "stopped: fault budget exceeded" in out and "zero page" in out


@pytest.mark.parametrize("argv,msg", [
    (["walk", "zz"], "VA: 'zz' is not a number"),
    (["walk", "0x1000", "--map", "0x1001:rw"], "not page aligned"),
    (["walk", "0x1000", "--map", "0x1000:q"], "protection must be"),
    (["run", "--pages", "0"], "pages = 0"),
    (["run", "--pages", "abc"], "invalid int value: 'abc'"),
    (["run", "--threads", "999"], "threads = 999"),
    (["run", "--workload", "nosuch"], "unknown workload 'nosuch'"),
    (["run", "--strategy", "nosuch"], "unknown strategy 'nosuch'"),
    (["run", "--core", "nosuchcore"], "unknown core preset 'nosuchcore'"),
    (["run", "--guest", "/nonexistent/g.S"], "g.S"),
    (["run", "--strategy-file", "/nonexistent/s.py"], "does not exist"),
    (["run", "--workload", "touch", "--guest", "x.S"], "not both"),
])
def test_bad_input_one_line_exit_2(capsys, argv, msg):
    with pytest.raises(SystemExit) if msg.startswith("invalid int") else _nothing():
        rc, out, err = run(capsys, *argv)
    if msg.startswith("invalid int"):
        out, err = capsys.readouterr()
        rc = 2
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and msg in err and "Traceback" not in err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_guest_that_does_not_build_is_one_line(tmp_path):
    bad = tmp_path / "bad.S"
    bad.write_text("\t.text\n_start:\n\tnot_an_instruction x0\n")
    p = subprocess.run([sys.executable, "-m", "emu.cli", "run", "--guest", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and "bad.S" in p.stderr and "Traceback" not in p.stderr


def test_malformed_core_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[core\nname = 1\n")
    p = subprocess.run([sys.executable, "-m", "emu.cli", "run", "--core", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and "bad.toml" in p.stderr
