"""Guest workloads: the AArch64 ``.S`` sources in this directory and their loader.

Every source starts with a one-line description comment, documents what it does and
which memory it expects, and declares its knobs as ``.equ NAME, default  // @param doc``
and its memory layout as ``.equ NAME, value  // @layout doc`` (HEAP_BASE, HEAP_SIZE,
STACK_TOP, STACK_SIZE; code goes at the load base). Any ``.equ`` can be overridden:
``load("touch", {"NPAGES": 256})``. ``Program.layout`` turns the result into regions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..asm import Program, assemble

DEFAULT_BASE = 0x100000          # where programs are loaded unless told otherwise
PROGRAM_DIR = Path(__file__).resolve().parent

_EQU_RE = re.compile(r"^\s*(?:[\w.$]+:\s*)*\.(?:equ|set|equiv)\s+([\w.$]+)\s*,\s*(.*?)\s*(?://\s*(.*))?$")
_ASSIGN_RE = re.compile(r"^\s*([A-Za-z_.$][\w.$]*)\s*=\s*(.*?)\s*(?://\s*(.*))?$")


@dataclass(frozen=True)
class Param:
    name: str
    default: str        # the expression in the source
    doc: str


@dataclass(frozen=True)
class ProgramInfo:
    name: str
    description: str    # first comment line of the source
    path: Path
    params: dict[str, Param]     # `// @param` constants: the workload's knobs
    layout: dict[str, Param]     # `// @layout` constants: memory it expects mapped
    constants: tuple[str, ...]   # every constant the source defines (all overridable)


def _parse_info(name: str, path: Path, text: str) -> ProgramInfo:
    description = ""
    for line in text.splitlines():
        s = line.strip()
        if s:
            if s.startswith("//"):
                description = s[2:].strip()
            break
    params, layout, consts = {}, {}, []
    for line in text.splitlines():
        m = _EQU_RE.match(line) or _ASSIGN_RE.match(line)
        if not m:
            continue
        cname, expr, comment = m.group(1), m.group(2), (m.group(3) or "").strip()
        consts.append(cname)
        if comment.startswith("@param"):
            params[cname] = Param(cname, expr, comment[len("@param"):].strip())
        elif comment.startswith("@layout"):
            layout[cname] = Param(cname, expr, comment[len("@layout"):].strip())
    return ProgramInfo(name, description, path, params, layout, tuple(dict.fromkeys(consts)))


def _path(name: str) -> Path:
    stem = name[:-2] if name.endswith(".S") else name
    path = PROGRAM_DIR / f"{stem}.S"
    if not re.fullmatch(r"[A-Za-z0-9_]+", stem) or not path.is_file():
        raise ValueError(f"unknown guest program {name!r}; available: {', '.join(list_programs())}")
    return path


def list_programs() -> dict[str, str]:
    """``{name: one-line description}`` for every bundled program, sorted by name."""
    return {p.stem: info(p.stem).description for p in sorted(PROGRAM_DIR.glob("*.S"))}


@lru_cache(maxsize=None)
def info(name: str) -> ProgramInfo:
    """Description, parameters and layout constants of a bundled program."""
    path = _path(name)
    return _parse_info(path.stem, path, path.read_text())


def source(name: str) -> str:
    return _path(name).read_text()


def _check_defines(pinfo: ProgramInfo, defines: dict | None) -> None:
    for key in defines or {}:
        if key not in pinfo.constants:
            raise ValueError(f"{pinfo.path.name} has no constant {key!r}; parameters: "
                             f"{', '.join(pinfo.params) or 'none'}; layout: {', '.join(pinfo.layout) or 'none'}")


def load(name: str, defines: dict[str, int | str] | None = None, base: int = DEFAULT_BASE) -> Program:
    """Assemble a bundled program (``"touch"`` or ``"touch.S"``) at ``base``.

    ``defines`` may only name constants the source defines (ValueError otherwise)."""
    pinfo = info(name[:-2] if name.endswith(".S") else name)
    _check_defines(pinfo, defines)
    return assemble(pinfo.path.read_text(), base, pinfo.path.name, defines)


def load_file(path: str | Path, defines: dict[str, int | str] | None = None, base: int = DEFAULT_BASE) -> Program:
    """Assemble a user's own ``.S`` file (``armmu --guest FILE.S``), same rules as :func:`load`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"cannot read guest source {str(path)!r}: {e.strerror}") from None
    _check_defines(_parse_info(path.stem, path, text), defines)
    return assemble(text, base, path.name, defines)
