"""A test that hangs inside Unicorn's C code must still be ended by pytest-timeout.

The signal method cannot interrupt a guest loop running in C (the handler only runs
between Python bytecodes); the thread method (pyproject.toml) dumps the stacks and exits
the process. A child pytest runs a generated test that loops forever inside Unicorn with
a 2 s timeout and this repository's pytest configuration; the child must end by itself,
killed by the timeout, well before the parent gives up on it.
"""
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HANGS = '''
from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, UC_PROT_ALL, Uc


def test_guest_loop_forever():
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.mem_map(0x1000, 0x1000, UC_PROT_ALL)
    uc.mem_write(0x1000, (0x14000000).to_bytes(4, "little"))      # b . (branch to itself)
    uc.emu_start(0x1000, 0x2000)                                    # no count, no timeout: forever
'''


def test_hang_inside_unicorn_is_killed_by_the_timeout(tmp_path):
    test = tmp_path / "test_hangs.py"
    test.write_text(HANGS)
    t0 = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), "--timeout", "2", "-n", "0", str(test)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    elapsed = time.monotonic() - t0
    out = child.stdout + child.stderr
    assert "Timeout" in out and "test_guest_loop_forever" in out, out[-2000:]
    assert child.returncode != 0
    assert elapsed < 30, f"the child took {elapsed:.1f} s to be killed"
