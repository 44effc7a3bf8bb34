"""Guest workloads: the ``.S`` and ``.c`` sources in this directory.

Every source starts with a one-line description comment and declares its knobs in
comment lines ``// @param NAME=default  one-line doc``; a build passes each knob as
``-DNAME=value`` (the default unless overridden: ``load("touch", {"NPAGES": 256})``).
The memory a workload needs besides its segments is declared in the source with
ARMMU_REGION (guest/include/armmu/region.h) and read back from the ELF.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..build import TEXT_BASE, build, load_file as _load_file
from ..image import GuestBuildError, Image

DEFAULT_BASE = TEXT_BASE
PROGRAM_DIR = Path(__file__).resolve().parent
_PARAM_RE = re.compile(r"^\s*//\s*@param\s+([A-Za-z_]\w*)=(\S+)\s*(.*)$")
_SUFFIXES = (".S", ".c")


@dataclass(frozen=True)
class Param:
    name: str
    default: str        # as written in the source
    doc: str


@dataclass(frozen=True)
class ProgramInfo:
    name: str
    description: str            # the first comment line
    path: Path
    params: dict[str, Param]    # the knobs, in source order


def parse_info(name: str, path: Path, text: str) -> ProgramInfo:
    description = ""
    for line in text.splitlines():
        s = line.strip()
        if s:
            description = s[2:].strip() if s.startswith("//") else ""
            break
    params = {}
    for line in text.splitlines():
        m = _PARAM_RE.match(line)
        if m:
            params[m.group(1)] = Param(m.group(1), m.group(2), m.group(3).strip())
    return ProgramInfo(name, description, path, params)


def _path(name: str) -> Path:
    stem = Path(name).stem if name.endswith(_SUFFIXES) else name
    if re.fullmatch(r"[A-Za-z0-9_]+", stem):
        for suffix in _SUFFIXES:
            path = PROGRAM_DIR / f"{stem}{suffix}"
            if path.is_file():
                return path
    raise GuestBuildError(name, f"unknown guest program; available: {', '.join(list_programs())}")


def list_programs() -> dict[str, str]:
    """``{name: one-line description}`` for every bundled workload, sorted by name."""
    paths = sorted(p for p in PROGRAM_DIR.iterdir() if p.suffix in _SUFFIXES)
    return {p.stem: info(p.stem).description for p in paths}


@cache
def info(name: str) -> ProgramInfo:
    """Description and knobs of a bundled workload."""
    path = _path(name)
    return parse_info(path.stem, path, path.read_text())


def source(name: str) -> str:
    return _path(name).read_text()


def _defines(pinfo: ProgramInfo, defines: dict | None) -> dict:
    """The knobs' defaults, overridden by ``defines`` (which may only name knobs)."""
    for key in defines or {}:
        if key not in pinfo.params:
            raise GuestBuildError(pinfo.path.name, f"no parameter {key!r}; parameters: "
                                                   f"{', '.join(pinfo.params) or 'none'}")
    return {**{k: p.default for k, p in pinfo.params.items()}, **(defines or {})}


def load(name: str, defines: dict[str, int | str] | None = None, base: int = DEFAULT_BASE) -> Image:
    """Build a bundled workload (``"touch"``, ``"touch.S"``, ``"threads_c"``) with its text at ``base``."""
    pinfo = info(Path(name).stem if name.endswith(_SUFFIXES) else name)
    return build(pinfo.path, _defines(pinfo, defines), base=base, name=pinfo.path.name)


def load_file(path: str | Path, defines: dict[str, int | str] | None = None, base: int = DEFAULT_BASE) -> Image:
    """A user's own guest (``armmu run --guest FILE``): a ``.S``/``.c`` source, built with
    the same rules as :func:`load` (its ``@param`` lines, if any, give defaults and limit
    the defines), or a static AArch64 ELF."""
    path = Path(path)
    if path.suffix not in (".S", ".s", ".c"):
        return _load_file(path, defines, name=str(path))
    try:
        text = path.read_text()
    except OSError as e:
        raise GuestBuildError(str(path), f"cannot read guest source: {e.strerror}") from None
    pinfo = parse_info(path.stem, path, text)
    defs = _defines(pinfo, defines) if pinfo.params else dict(defines or {})
    return build(path, defs, base=base, name=str(path))
