"""Every subcommand, every kind of bad input, as a user types it: exit code 2, one line on
stderr naming the problem, no traceback, no file left behind. And --help with an example."""
import pytest

from .conftest import one_line_error

BAD_GUEST = "\t.text\n_start:\n\tnot_an_instruction x0\n"
LOOP_GUEST = "\t.globl _start\n_start:\n\tb _start\n"                          # loops forever
JUMP_GUEST = "\t.globl _start\n_start:\n\tmov x0, #0x100000000\n\tbr x0\n"   # jumps into nothing
SMALL = ("--pages", "8", "--cpus", "1")

CASES = [
    # (argv, text that must be in the message, files that must not exist afterwards);
    # /proc refuses new files even to root
    (["run", "--workload", "nosuch"], "unknown workload 'nosuch'", []),
    (["run", "--strategy", "nosuch"], "unknown strategy 'nosuch'", []),
    (["run", "--pages", "-5"], "pages = -5", []),
    (["run", "--pages", "1000000000"], "pages = 1000000000", []),
    (["run", "--cpus", "0"], "cpus = 0", []),
    (["run", "--quantum", "0"], "quantum = 0", []),
    (["run", "--jobs", "0"], "jobs = 0", []),
    (["compare", "--workload", "touch", "--quantum", "-5", "--json", "c.json"], "quantum = -5", ["c.json"]),
    (["compare", "--workload", "touch", "--shell-jobs", "0"], "jobs = 0", []),
    (["compare", "--workload", "touch", "--asid-bits", "12"], "asid_bits = 12", []),
    (["run", "--guest", "bad.S", "--trace", "t.txt", "--json", "r.json"], "bad.S", ["t.txt", "r.json"]),
    (["run", "--guest", "loop.S", "--json", "r.json"], "the run did not finish: guest instruction budget", ["r.json"]),
    (["run", "--guest", "jump.S", "--json", "r.json"], "killed by signal 11 (no mapping): translation fault", ["r.json"]),
    (["compare", "--guest", "jump.S", "--strategies", "purge,reaper", "--json", "c.json"],
     "killed by signal 11", ["c.json"]),
    (["run", "--trace-filter", "cpu=1"], "need --trace", []),
    (["run", *SMALL, "--trace", "t.txt", "--trace-filter", "asid=zz"], "not a number", ["t.txt"]),
    (["run", *SMALL, "--json", "nodir/r.json"], "does not exist", []),
    (["run", *SMALL, "--trace", "nodir/t.txt"], "does not exist", []),
    (["compare", "--strategies", "purge,nosuch"], "unknown strategy 'nosuch'", []),
    (["compare", "--workload", "nosuch"], "unknown workload 'nosuch'", []),
    (["compare", "--pages", "-1", "--json", "c.json"], "pages = -1", ["c.json"]),
    (["compare", "--threads", "100000"], "threads = 100000", []),
    (["compare", "--guest", "bad.S", "--json", "c.json"], "bad.S", ["c.json"]),
    (["compare", *SMALL, "--plot", "nodir/c.png"], "does not exist", []),
    (["compare", *SMALL, "--json", "/proc/c.json"], "not writable", []),
    (["run", *SMALL, "--trace", "/proc/t.txt"], "not writable", []),
    (["compare", "--strategies", ","], "give names", []),
    (["sweep", "--pages", "4,-4", "--out", "sw"], "--pages -4", ["sw"]),
    (["sweep", "--pages", "1..2**4", "--out", "sw"], "not a number", ["sw"]),
    (["sweep", "--cpus", "1..8*1", "--out", "sw"], "F >= 2", ["sw"]),
    (["sweep", "--pages", "1,2", "--seeds", "60000", "--out", "sw"], "limit 100,000", ["sw"]),
    (["sweep", "--strategies", "nosuch", "--out", "sw"], "unknown strategy", ["sw"]),
    (["sweep", "--cores", "nosuchcore", "--out", "sw"], "nosuchcore", ["sw"]),
    (["sweep", "--workload", "nosuch", "--out", "sw"], "unknown workload", ["sw"]),
    (["sweep", "--jobs", "0", "--out", "sw"], "--jobs 0", ["sw"]),
    (["sweep", "--out", "/proc/sw"], "cannot create", []),
    (["sweep", "--scheduler", "tcp://127.0.0.1:1", "--out", "sw"], "needs --executor dask", ["sw"]),
]


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "bad.S").write_text(BAD_GUEST)
    (tmp_path / "loop.S").write_text(LOOP_GUEST)
    (tmp_path / "jump.S").write_text(JUMP_GUEST)
    return tmp_path


@pytest.mark.parametrize("argv,msg,absent", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input(armmu, workdir, argv, msg, absent):
    rc, out, err = armmu(*argv)
    assert one_line_error(rc, out, err), (rc, out, err)
    assert msg in err
    for name in absent:
        assert not (workdir / name).exists(), name
    assert not list(workdir.rglob(".*.tmp"))


def test_unreachable_dask_scheduler(armmu, tmp_path):
    pytest.importorskip("distributed", reason="dask.distributed not installed (pip install 'armmu[dask]')")
    rc, out, err = armmu("sweep", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9", "--out", "sw")
    assert one_line_error(rc, out, err) and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err
    assert not (tmp_path / "sw").exists()


@pytest.mark.parametrize("cmd", ["run", "compare", "sweep", "list", "walk"])
def test_help_explains_with_an_example(armmu, cmd):
    rc, out, err = armmu(cmd, "--help")
    assert rc == 0 and "Example: armmu " + cmd in " ".join(out.split())
    if cmd in ("run", "compare", "sweep"):
        for opt in ("--strategy", "--pages", "--cpus", "--json" if cmd != "sweep" else "--out"):
            assert opt in out
