"""armmu run --trace as a user reads it: text lines with exact mnemonics, jsonl with the same
events, filters, the end event of a run a budget stopped, --trace-insns, --dump-at."""
import json
import re

import pytest

from .conftest import one_line_error

RUN = ("run", "--workload", "threads", "--strategy", "purge", "--pages", "16", "--threads", "2", "--cpus", "2")


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    import subprocess
    import sys
    d = tmp_path_factory.mktemp("traces")
    out = {}
    for fmt in ("text", "jsonl"):
        path = d / f"t.{fmt}"
        p = subprocess.run([sys.executable, "-m", "emu.cli", *RUN, "--trace", str(path), "--trace-format", fmt],
                           capture_output=True, text=True, timeout=240)
        assert p.returncode == 0, p.stderr
        out[fmt] = path.read_text().splitlines()
    return out


def test_text_purge_sequence(traces):
    lines = traces["text"]
    i = next(n for n, ln in enumerate(lines) if re.search(r" pmap_purge active=1 ", ln))
    asid = int(re.search(r"asid=(0x[0-9a-f]+)", lines[i]).group(1), 16)
    # pmap.c 1.113 pmap_purge, then cpu_tlb_flush_asid_all twice (dsb ishst; tlbi aside1is; dsb ish; isb)
    body = [re.split(r"\s+", ln.strip(), maxsplit=2)[2] for ln in lines[i + 1:i + 12]]
    assert body == ["MSR TTBR0_EL1 value=0x0", "ISB",
                    "DSB ISHST completes=0", f"TLBI ASIDE1IS asid={asid:#x}", "DSB ISH completes=1",
                    "tlbi-done ops=1", "ISB",
                    "DSB ISHST completes=0", f"TLBI ASIDE1IS asid={asid | 1:#x}", "DSB ISH completes=1",
                    "tlbi-done ops=1"]
    cycles = [int(ln.split()[0]) for ln in lines[:-1]]
    assert all(re.match(r"\s*\d+ cpu\d", ln) for ln in lines[:-1])
    assert lines[-1].split()[1:] == ["-", "end", 'reason="completed"'] and int(lines[-1].split()[0]) >= max(cycles)
    fills = [ln for ln in lines if " fill " in ln]
    assert fills and all(re.search(r"walk=(L\d@0x[0-9a-f]+=0x[0-9a-f]+;?)+ wc_hit=[01]$", ln) for ln in fills)
    for step in ("exit1", "single_thread_set", "uvm_purge", "pmap_remove", "pmap_destroy", "reaper",
                 "cpu_switchto"):
        assert any(f" {step} " in ln for ln in lines), step


def test_jsonl_has_the_same_events(traces):
    recs = [json.loads(ln) for ln in traces["jsonl"]]
    assert len(recs) == len(traces["text"])
    assert recs[-1] == {"cycle": recs[-1]["cycle"], "cpu": None, "event": "end", "reason": "completed"}
    tlbi = [r for r in recs if r["event"] == "tlbi"]
    assert [r["name"] for r in tlbi].count("TLBI ASIDE1IS") == sum(" TLBI ASIDE1IS " in ln for ln in traces["text"])
    fill = next(r for r in recs if r["event"] == "fill")
    assert isinstance(fill["va"], int) and {"level", "desc_pa", "desc"} == set(fill["walk"][0])


def test_filters(armmu, tmp_path):
    path = tmp_path / "f.txt"
    rc, out, err = armmu(*RUN, "--trace", path, "--trace-filter", "cpu=1,kind=tlbi,kind=dsb")
    assert rc == 0, err
    lines = path.read_text().splitlines()
    assert lines[:-1] and all(re.match(r"\s*\d+ cpu1\s+(TLBI|DSB) ", ln) for ln in lines[:-1])
    assert " end " in lines[-1]
    rc, _, err = armmu(*RUN, "--trace", path, "--trace-filter", "kind=fill,va=0x100000-0x101000")
    lines = path.read_text().splitlines()[:-1]
    assert rc == 0 and lines and all("fill va=0x100000 " in ln for ln in lines)


def test_trace_of_a_stopped_run_ends_with_why(armmu, tmp_path):
    path = tmp_path / "early.txt"
    rc, out, err = armmu("run", "--workload", "threxit", "--strategy", "purge-early", "--threads", "4",
                         "--cpus", "2", "--pages", "8", "--trace", path)
    assert rc == 1
    last = path.read_text().splitlines()[-1]
    assert ' end reason="stopped: fault budget exceeded' in last


def test_trace_insns_disassembles_guest_code(armmu, tmp_path):
    path = tmp_path / "insn.txt"
    rc, out, err = armmu("run", "--workload", "touch", "--pages", "2", "--cpus", "1", "--trace", path,
                         "--trace-insns", "--trace-filter", "kind=insn")
    assert rc == 0, err
    insns = path.read_text().splitlines()[:-1]
    n = int(re.search(r"(\d+) guest instructions", out).group(1))
    assert len(insns) == n                          # every retired instruction, once
    assert any(re.search(r"insn pc=0x1000[0-9a-f]{2} svc #0", ln) for ln in insns)
    assert any(" str " in ln or " stp " in ln for ln in insns)


def test_dump_at_pmap_purge(armmu):
    rc, out, err = armmu("run", "--workload", "touch", "--pages", "16", "--cpus", "2", "--dump-at", "pmap_purge")
    assert rc == 0, err
    dump = out.split("=== dump at pmap_purge")[1]
    assert "L1[" in dump and "  L2[" in dump and "    L3[" in dump
    # touch maps its text page, 16 heap pages and a stack page: 18 leaves, each run of
    # consecutive frames folded into one line ("x15": the L3 table took the frame after the first)
    leaves = [ln for ln in dump.split("TLBs:")[0].splitlines() if re.match(r"\s+L3\[", ln)]
    assert sum(int(m.group(1)) if (m := re.search(r" x(\d+) ", ln)) else 1 for ln in leaves) == 18
    assert any(" x" in ln for ln in leaves)
    asid = int(re.search(r"ASID (0x[0-9a-f]+) \(pair", dump).group(1), 16)
    tlb = dump.split("TLBs:")[1]
    assert re.search(r"cpu0: TTBR0 0x[0-9a-f]+ .* TLB entries", tlb)
    # the guest ran on the trampoline: its entries carry the user ASID, asid | 1
    assert re.search(rf"va 0x[0-9a-f]+ -> pa 0x[0-9a-f]+\s+4K L3 ASID {asid | 1:#06x} demand", tlb)


@pytest.mark.parametrize("spec,msg", [("cpu", "not KEY=VALUE"), ("cpu=x", "not a number"),
                                      ("kind=nosuch", "kind=nosuch"), ("va=0x5-0x1", "LO < HI"),
                                      ("color=red", "unknown key")])
def test_malformed_filter(armmu, tmp_path, spec, msg):
    path = tmp_path / "never.txt"
    rc, out, err = armmu(*RUN, "--trace", path, "--trace-filter", spec)
    assert one_line_error(rc, out, err) and msg in err and not path.exists()


def test_trace_of_bad_input_leaves_no_file(armmu, tmp_path):
    path = tmp_path / "never.txt"
    bad = tmp_path / "bad.S"
    bad.write_text("\t.text\n_start:\n\tnot_an_instruction x0\n")
    rc, out, err = armmu("run", "--guest", bad, "--trace", path)
    assert one_line_error(rc, out, err) and not path.exists()
    rc, out, err = armmu("run", "--trace", tmp_path / "no" / "dir" / "t.txt")
    assert one_line_error(rc, out, err) and "does not exist" in err


def test_faults_carry_their_fsc(armmu, tmp_path):
    path = tmp_path / "f.txt"
    rc, out, err = armmu("run", "--workload", "sparse", "--pages", "4", "--cpus", "1", "--trace", path,
                         "--trace-filter", "kind=walk-fault")
    assert rc == 0, err
    faults = path.read_text().splitlines()[:-1]
    assert len(faults) >= 4                          # sparse: each page demand-faulted
    for ln in faults:
        level = int(re.search(r" level=(\d)", ln).group(1))
        # Arm ARM DFSC: translation fault, level n = 0b0001nn
        assert "fault=translation" in ln and f"fsc={0b000100 | level:#04x}" in ln


def test_interrupted_run_closes_its_trace(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    path = tmp_path / "int.txt"
    p = subprocess.Popen([sys.executable, "-m", "emu.cli", "run", "--workload", "touch", "--pages", "65536",
                          "--strategy", "purge-naive", "--cpus", "2", "--trace", str(path),
                          "--trace-filter", "kind=tlbi"],        # 2 VAE1IS per page, in the teardown only
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while (not path.exists() or path.stat().st_size < 100_000) and time.monotonic() < deadline:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2 and err == "armmu: interrupted\n"
    lines = path.read_text().splitlines()
    assert len(lines) > 1000 and lines[-1].endswith(' end reason="interrupted"')
    assert all(" TLBI " in ln for ln in lines[:-1])
