"""The armmu command: output checked against hand-computed values, bad input gets exit code 2
and one line on stderr. Counts follow docs/openbsd-exit-path.md §Counts with N = mapped
pages = heap pages + 1 code page + 1 stack page."""
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


@pytest.mark.parametrize("pages", [8, 40])
def test_demo_counts_match_the_reference(capsys, pages):
    rc, out, err = run(capsys, "demo", "--pages", str(pages), "--json")
    assert rc == 0 and err == ""
    rows = {r["path"]: r for r in json.loads(out)}
    n = pages + 2
    # path A (1.58): 4 VAE1IS per page in the reaper, 2 ASIDE1IS in pmap_destroy
    assert rows["legacy"]["vae1is"] == 4 * n and rows["legacy"]["aside1is"] == 2
    # uvm_purge without pmap_purge: pm_active == 1, so 2 VAE1IS per page
    assert rows["purge-naive"]["vae1is"] == 2 * n and rows["purge-naive"]["aside1is"] == 2
    # path C: 0 VAE1IS; 2 ASIDE1IS in pmap_purge + 2 in pmap_destroy
    assert rows["purge"]["vae1is"] == 0 and rows["purge"]["aside1is"] == 4
    for r in rows.values():
        assert r["stale_entries"] == 0 and r["frames_leaked"] == 0
        assert r["guest_walks"] == n                # every page walked once (stack, code, heap)
    assert rows["purge"]["exit_cycles"] < rows["purge-naive"]["exit_cycles"]
    assert rows["purge"]["reaper_cycles"] < rows["legacy"]["reaper_cycles"]


@pytest.mark.parametrize("argv,msg", [
    (["walk", "zz"], "VA: 'zz' is not a number"),
    (["walk", "0x1000", "--map", "0x1001:rw"], "not page aligned"),
    (["walk", "0x1000", "--map", "0x1000:q"], "protection must be"),
    (["demo", "--pages", "0"], "--pages 0"),
    (["demo", "--core", "nosuchcore"], "unknown core preset 'nosuchcore'"),
])
def test_bad_input_one_line_exit_2(capsys, argv, msg):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and msg in err and "Traceback" not in err


def test_malformed_core_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[core\nname = 1\n")
    p = subprocess.run([sys.executable, "-m", "emu.cli", "demo", "--core", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and "bad.toml" in p.stderr
