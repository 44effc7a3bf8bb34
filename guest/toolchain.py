"""The guest toolchain: clang and ld.lld as shipped in the ``ziglang`` wheel.

``zig cc -target aarch64-freestanding-none`` is clang with its integrated assembler (the C
preprocessor, ``.macro``, ``.include``, ``adrp``/``:lo12:``) and C at -O2; ``zig ld.lld``
links. Every run is a subprocess in its own session with a time limit: on expiry the
whole process group is killed and the build fails with one line. Diagnostics are turned
into :class:`GuestBuildError` as ``file:line: message``, the way clang and lld print them.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
from functools import cache
from pathlib import Path

from .image import GuestBuildError

TARGET = "aarch64-freestanding-none"
TIMEOUT = 30.0                    # seconds for one compiler or linker run
MAX_OUTPUT = 256 << 20            # RLIMIT_FSIZE of the toolchain: a runaway .space cannot fill the disk
INCLUDE_DIR = Path(__file__).resolve().parent / "include"
LIB_DIR = Path(__file__).resolve().parent / "lib"

# Both languages: no unwind tables (nothing unwinds), debug line info for lld's messages.
COMMON_FLAGS = ("-target", TARGET, "-g", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
                "-nostdinc", "-I", str(INCLUDE_DIR))
# C: freestanding -O2 that needs nothing from a runtime: no stack protector, no PIC, no
# out-of-line atomics (they would call compiler-rt), implicit declarations are errors.
C_FLAGS = ("-O2", "-std=c11", "-ffreestanding", "-fno-stack-protector", "-fno-pic", "-fno-common",
           "-mno-outline-atomics", "-Wall", "-Werror=implicit-function-declaration",
           "-Werror=int-conversion", "-Werror=incompatible-pointer-types",
           "-Werror=excess-initializers")
LD_FLAGS = ("-static", "--no-relax", "-z", "max-page-size=4096", "-z", "noexecstack",
            "--fatal-warnings", "--no-undefined")

runs = 0                          # toolchain processes started in this process (tests read it)


@cache
def zig() -> str:
    """Path of the zig binary in the ziglang wheel."""
    try:
        import ziglang
    except ImportError:
        raise GuestBuildError("toolchain", "the ziglang package is not installed (pip install ziglang)") from None
    path = Path(ziglang.__file__).resolve().parent / "zig"
    if not path.is_file():
        raise GuestBuildError("toolchain", f"{path} is missing from the ziglang package")
    return str(path)


@cache
def version() -> str:
    """The ziglang wheel's version (= zig's, which pins the clang and lld inside)."""
    from importlib.metadata import version as dist_version
    return dist_version("ziglang")


@cache
def builtin_include_dir() -> str:
    """clang's own freestanding headers (stddef.h, stdint.h, stdarg.h) in the wheel."""
    import ziglang
    return str(Path(ziglang.__file__).resolve().parent / "lib" / "include")


def _limit_output() -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_OUTPUT, MAX_OUTPUT))


def run(argv: list[str], what: str, cwd: Path, cache_dir: Path, names: dict[str, str] | None = None,
        timeout: float = TIMEOUT, stdout: bool = False) -> str:
    """Run one toolchain command; return its stderr (warnings), or its stdout with
    ``stdout``, or raise GuestBuildError.
    ``names`` maps source paths to the names shown in messages."""
    global runs
    env = dict(os.environ)
    env.setdefault("ZIG_GLOBAL_CACHE_DIR", str(cache_dir / "zig"))
    env.setdefault("ZIG_LOCAL_CACHE_DIR", str(cache_dir / "zig"))
    runs += 1
    try:
        p = subprocess.Popen([zig(), *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             errors="replace", start_new_session=True, preexec_fn=_limit_output)
    except OSError as e:
        raise GuestBuildError(what, f"cannot run the toolchain: {e.strerror}") from None
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise GuestBuildError(what, f"the toolchain did not finish within {timeout:g} s") from None
    if p.returncode != 0:
        raise diagnostic(err + out, what, p.returncode, names or {})
    return out if stdout else err


# ---------------------------------------------------------------------------------------
# diagnostics

_LOC_RE = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?:\d+:)? (?P<kind>fatal error|error|warning|note): "
                     r"(?P<msg>.*)$")
_LLD_RE = re.compile(r"^ld\.lld: error: (?P<msg>.*)$")
_REF_RE = re.compile(r"^>>> referenced by (?P<short>[^:\s]+):(?P<line>\d+)(?: \((?P<file>.+):\d+\))?")
_MARKER_RE = re.compile(r'^# (\d+) "([^"]+)"')
_NOLIBC = "guests are freestanding, there is no libc: include <armmu.h> for the system calls"
_LIBC_HEADERS = re.compile(r"'(stdio|stdlib|string|unistd|pthread|sys/\w+|fcntl|errno|signal|time|math)\.h' "
                           r"file not found")
_LIBC_FUNCS = frozenset("printf fprintf sprintf snprintf puts putchar malloc calloc realloc free "
                        "strlen strcpy strcmp strncmp strcat abort atoi pthread_create pthread_join "
                        "open close read fork sleep usleep".split())

def unpreprocess(pre: str, line: int) -> tuple[str, int] | None:
    """File and line of line ``line`` of preprocessor output, from its ``# N "file"`` markers."""
    lines = pre.splitlines()
    for k in range(min(line, len(lines)) - 1, -1, -1):
        m = _MARKER_RE.match(lines[k])
        if m:
            return m.group(2), int(m.group(1)) + (line - 1 - k) - 1
    return None


def diagnostic(text: str, what: str, rc: int, names: dict[str, str]) -> GuestBuildError:
    """The first error of a failed clang or lld run, as one GuestBuildError."""
    def _display(path: str) -> str:
        return names.get(path, path)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _LOC_RE.match(line)
        if m and m.group("kind") in ("error", "fatal error"):
            msg, file, lineno = m.group("msg"), m.group("file"), int(m.group("line"))
            if file.startswith("<"):
                # inside a macro expansion: clang's next "while in macro instantiation" note
                # names the line that used the macro
                for later in lines[i + 1:]:
                    n = _LOC_RE.match(later)
                    if n and n.group("kind") == "note" and not n.group("file").startswith("<"):
                        file, lineno = n.group("file"), int(n.group("line"))
                        break
            undeclared = re.match(r"call to undeclared (?:library )?function '(\w+)'", msg)
            if _LIBC_HEADERS.search(msg) or (undeclared and undeclared.group(1) in _LIBC_FUNCS):
                msg += f" ({_NOLIBC})"
            elif i + 2 < len(lines) and lines[i + 2].strip() == "^" and msg not in lines[i + 1] \
                    and lines[i + 1][lines[i + 2].index("^"):].strip():
                msg += f": {lines[i + 1][lines[i + 2].index('^'):].strip()}"   # the statement clang points at
            return GuestBuildError(_display(file), msg, lineno)
        m = _LLD_RE.match(line)
        if m:
            msg = m.group("msg")
            if msg.startswith("cannot find entry symbol _start"):
                msg = "no entry point: define `_start` and make it global (`.globl _start`)"
            und = re.match(r"undefined symbol: (.+)$", msg)
            if und:
                sym = und.group(1)
                msg = f"undefined symbol '{sym}'" + (f" ({_NOLIBC})" if sym in _LIBC_FUNCS else "")
            for later in lines[i + 1:i + 4]:
                r = _REF_RE.match(later)
                if r:
                    # lld names the file as the debug info does: relative to the source's
                    # directory unless it differs from the compilation directory
                    file = r.group("file") or next((p for p in names if Path(p).name == r.group("short")),
                                                   r.group("short"))
                    return GuestBuildError(_display(file), msg, int(r.group("line")))
            return GuestBuildError(what, msg)
    if "File size limit exceeded" in text:
        return GuestBuildError(what, f"the output grew past {MAX_OUTPUT >> 20} MiB (a huge .space or .fill?)")
    first = next((ln.strip() for ln in lines if ln.strip()), f"exit status {rc}")
    return GuestBuildError(what, first)
