"""The armmu command run as a user runs it: a subprocess, its exit code, stdout and stderr."""
import subprocess
import sys

import pytest


class Armmu:
    def __init__(self, cwd):
        self.cwd = cwd

    def __call__(self, *argv, timeout=240):
        p = subprocess.run([sys.executable, "-m", "emu.cli", *map(str, argv)], capture_output=True,
                           text=True, timeout=timeout, cwd=self.cwd)
        return p.returncode, p.stdout, p.stderr


@pytest.fixture
def armmu(tmp_path):
    """armmu(*argv) -> (exit code, stdout, stderr), run in a fresh directory."""
    return Armmu(tmp_path)


def one_line_error(rc, out, err, code=2):
    """What bad input must look like: exit 2, one line on stderr, no traceback."""
    return rc == code and err.count("\n") == 1 and "Traceback" not in err and err.startswith("armmu")
