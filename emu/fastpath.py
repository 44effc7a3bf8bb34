"""The compiled fast paths, and the switch between them and the Python they mirror.

The hottest paths of a teardown study are the translation of a Unicorn TLB miss
(Cpu._build_translate, and the fill hook around it) and a completed by-VA or by-ASID TLBI
reaching every CPU (tlb.invalidate_va, tlb.invalidate_asid). Each has a C twin
(emu/_fast_translate.c: Translator, FillHook; emu/_fast_tlbi.c: Invalidator, one per
machine, and its invalidate_asid) that
works on the same Python objects (the same dict sets, Translation entries, statistics
and indexes) with the same effects in the same order, and hands every case it does not
handle to the Python function before changing anything. The Python stays the reference:
tests run both and compare, and ARMMU_PURE_PYTHON=1 selects it for a whole process (the
mutation script does, so that its mutants are run).

setup.py builds the twins as optional extensions: without a C compiler and Python's
headers the pure Python paths run, slower and otherwise the same (`armmu list` says
which is in use).
"""
from __future__ import annotations

import os

PURE_ENV = "ARMMU_PURE_PYTHON"

try:
    from . import _fast_translate, _fast_tlbi
except ImportError:                 # not built (no compiler when the project was installed)
    _fast_translate = _fast_tlbi = None


def built() -> bool:
    """Both extensions were compiled and load."""
    return _fast_translate is not None and _fast_tlbi is not None


def default() -> bool:
    """Whether a Machine uses the compiled paths unless told otherwise."""
    return built() and os.environ.get(PURE_ENV, "") in ("", "0")


def describe() -> str:
    """One line for `armmu list`: which paths a run uses, and why."""
    if not built():
        return ("pure Python: the compiled fast paths are not built "
                "(install a C compiler and Python's headers, then: make clean setup)")
    if not default():
        return f"pure Python: {PURE_ENV}=1"
    return f"compiled fast paths (emu/_fast_translate.c, emu/_fast_tlbi.c); {PURE_ENV}=1 selects the Python"


def resolve(fast: bool | None) -> bool:
    """A Machine's `fast` argument: None for the default; True refuses to run without them."""
    if fast is None:
        return default()
    if fast and not built():
        raise RuntimeError("the compiled fast paths are not built "
                           "(install a C compiler and Python's headers, then: make clean setup)")
    return bool(fast)


# the compiled functions, given what they share with the Python (set up once, at import)
Translator = _fast_translate.Translator if built() else None
FillHook = _fast_translate.FillHook if built() else None
# Invalidator(machine.tlbs)(hierarchies, op, va, asid), and its .invalidate_asid(hierarchies, op, asid)
Invalidator = _fast_tlbi.Invalidator if built() else None
if built():
    from .tlb import (_ASID, _ONLY_4K, _TAG_BITS, _VA, GLOBAL_TAG, TLBStats, invalidate_asid as _invalidate_asid_py,
                      invalidate_va as _invalidate_va_py)
    from .walker import Translation
    _fast_tlbi.configure(only_4k=_ONLY_4K, tag_bits=_TAG_BITS, global_tag=GLOBAL_TAG, scope_va=_VA, scope_asid=_ASID,
                         python=_invalidate_va_py, python_asid=_invalidate_asid_py, stats=TLBStats,
                         translation=Translation)
