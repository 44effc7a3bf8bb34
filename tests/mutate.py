"""Mutation run for the TLB and TLB-maintenance model (issue 7, "Tests that would have caught
them"): each mutant is a set of textual edits of emu/, applied to a temporary copy of the
repository; the tests that should catch it run there (pytest -x -q); the mutant is killed
when they fail. Not part of the suite (one pytest run per mutant, a few minutes in all).

An edit whose text is no longer in the source makes the mutant "stale": the code changed
and the mutant must be rewritten; stale mutants count against the score.

A mutant of a compiled twin (emu/_fast_*.c) is rebuilt in the copy and its tests run with
the compiled paths; the others run with ARMMU_PURE_PYTHON=1, the Python they edit.

Usage: python tests/mutate.py [--list] [--only NAME ...] [--keep] [--timeout S]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TLB_TESTS = ["tests/emu/test_tlb.py", "tests/emu/test_tlbi.py", "tests/emu/test_tlb_properties.py"]
CPU_TESTS = ["tests/emu/test_cpu.py", "tests/emu/test_cpu_semantics.py", "tests/emu/test_tlbi.py",
             "tests/emu/test_tlb_properties.py"]
# the compiled twins against the Python they mirror (emu/fastpath.py)
FAST_TESTS = ["tests/emu/test_fast_translate.py", "tests/test_fast_tlbi.py", "tests/run/test_fast_equivalence.py"]


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    edits: tuple          # ((path, old text, new text), ...): all applied together
    tests: tuple
    compiled: bool = False  # an edit of a C twin: rebuilt, and its tests run with the compiled paths


MUTANTS = [
    Mutant("va-tlbi-ignores-globals", "VA TLBIs ignoring global entries", (
        ("emu/tlb.py", "n = self._invalidate_va(va, (asid, GLOBAL_TAG) if scope is _VA else None)",
         "n = self._invalidate_va(va, (asid,) if scope is _VA else None)"),
        ("emu/tlb.py", "m = t._invalidate_va(va, (asid, GLOBAL_TAG) if by_asid else None)",
         "m = t._invalidate_va(va, (asid,) if by_asid else None)"),
        ("emu/tlb.py", "    keys = (ka, kg)\n", "    keys = (ka,)\n"),
        ("emu/tlb.py", "            yield va, (asid, GLOBAL_TAG)", "            yield va, (asid,)"),
        ("emu/tlb.py", "            return sid in ids\n", "            return False\n"),
    ), tuple(TLB_TESTS)),
    Mutant("asid-always-16-bit", "the TLBI ASID always taken as 16-bit", (
        ("emu/tlbi.py", "return (xt >> 48) & (0xFFFF if as16 else 0xFF)", "return (xt >> 48) & 0xFFFF"),
    ), tuple(TLB_TESTS)),
    Mutant("va-not-sign-extended", "TLBI VAs not sign-extended (kernel TTBR1 VA TLBIs never hit)", (
        ("emu/tlbi.py", "    if va >> 55 & 1:\n", "    if False:\n"),
    ), tuple(TLB_TESTS)),
    Mutant("vae1-drops-asid-walk-cache", "VAE1 dropping the whole ASID's walk cache", (
        ("emu/tlb.py", "            if by_asid and levels[-1] >= 2:\n", "            if False:\n"),
        ("emu/tlb.py", "                m = w._invalidate_va(va, (asid,) if by_asid else None)",
         "                m = w._invalidate_asid(asid) if by_asid else w._invalidate_va(va, None)"),
        ("emu/tlb.py", "            n = self._invalidate_va(va, (asid,) if scope is _VA else None)",
         "            n = self._invalidate_asid(asid) if scope is _VA else self._invalidate_va(va, None)"),
    ), tuple(TLB_TESTS)),
    Mutant("walk-cache-ignores-asid", "the walk cache ignoring the ASID", (
        ("emu/tlb.py", "            k = ((vpn << 6 | level) << _TAG_BITS) | asid\n            e = s.get(k)\n",
         "            k = next((x for x in s if x >> _TAG_BITS == vpn << 6 | level), None)\n            e = s.get(k)\n"),
        ("emu/cpu.py", "                        k = ((vpn << 6 | 3) << tag_bits) | asid\n                        we = s.get(k)\n",
         "                        k = next((x for x in s if x >> tag_bits == vpn << 6 | 3), None)\n"
         "                        we = s.get(k)\n"),
    ), tuple(CPU_TESTS)),
    Mutant("pending-not-completed-at-quantum-end", "pending TLBIs not completed at quantum end", (
        ("emu/cpu.py", "        if self.pending:\n            self.complete_tlbis()",
         "        if False:\n            self.complete_tlbis()"),
    ), tuple(CPU_TESTS)),
    Mutant("no-epd-check-on-walk-cache-resume", "no EPD check on walks resumed from the walk cache", (
        ("emu/cpu.py", "                    if not regime.epd[(va >> 55) & 1]:\n",
         "                    if True:\n"),
        ("emu/cpu.py", "        if regime.epd[sel]:\n            return Fault(FaultKind.TRANSLATION, 0, va)",
         "        if False:\n            return Fault(FaultKind.TRANSLATION, 0, va)"),
    ), tuple(CPU_TESTS)),
    Mutant("msr-does-not-flush-unicorn", "MSR not flushing Unicorn", (
        ("emu/cpu.py", "            self.uc.reg_write(A.UC_ARM64_REG_CP_REG, reg.cp_reg + (value,))\n        self._uc_flush()\n",
         "            self.uc.reg_write(A.UC_ARM64_REG_CP_REG, reg.cp_reg + (value,))\n"),
    ), tuple(CPU_TESTS)),
    # the compiled twins: each must differ from the Python somewhere the twin tests look
    Mutant("c-l1-lru-not-updated", "compiled miss path: an L1 hit leaves the LRU order alone", (
        ("emu/_fast_translate.c", "if (e != NULL && l1->lru && lru_touch(s, k, e) < 0)", "if (0)"),
    ), tuple(FAST_TESTS), compiled=True),
    Mutant("c-data-fill-grants-execute", "compiled fill hook: a data fill gives Unicorn the execute right too", (
        ("emu/_fast_translate.c", "entry->perms = (uint32_t)(perms & 3);", "entry->perms = (uint32_t)(perms & 7);"),
    ), tuple(FAST_TESTS), compiled=True),
    Mutant("c-eviction-not-lost", "compiled miss path: an evicted last reference does not set tlb.lost", (
        ("emu/_fast_translate.c", "if (PyObject_SetAttr(self->tlb, S_lost, Py_True) < 0)", "if (0)"),
    ), tuple(FAST_TESTS), compiled=True),
    Mutant("c-perm-el-swapped", "compiled miss path: EL0 and EL1 rights swapped", (
        ("emu/_fast_translate.c", "if ((perms >> (acc + (el == 0 ? 3 : 0))) & 1)", "if ((perms >> (acc + (el == 0 ? 0 : 3))) & 1)"),
    ), tuple(FAST_TESTS), compiled=True),
    Mutant("c-observers-hidden-from-gc", "compiled miss path: the walk observers not reported to the collector", (
        ("emu/_fast_translate.c", "X(wc_sets) X(wc_stats) X(walk_observers) X(recent)", "X(wc_sets) X(wc_stats) X(recent)"),
    ), tuple(FAST_TESTS), compiled=True),
    Mutant("c-walk-cache-index-kept", "compiled TLBI: a removed walk-cache entry stays in by_asid", (
        ("emu/_fast_tlbi.c", "if (unindex(p->index, o->asid, k) < 0)", "if (0)"),
    ), tuple(FAST_TESTS), compiled=True),
    Mutant("c-refs-not-dropped", "compiled TLBI: a removed entry keeps its reference count", (
        ("emu/_fast_tlbi.c", "fast_slot_add(e, off_refs, -1, &r)", "fast_slot_add(e, off_refs, 0, &r)"),
    ), tuple(FAST_TESTS), compiled=True),
    Mutant("c-asid-keeps-level-count", "compiled ASIDE1: the walk cache's level counts not lowered", (
        ("emu/_fast_tlbi.c", "rc = nv == NULL ? -1 : PyList_SetItem(lc, level, nv);",
         "rc = nv == NULL ? -1 : 0; Py_XDECREF(nv);"),
    ), tuple(FAST_TESTS), compiled=True),
    Mutant("c-asid-ignores-slices", "compiled ASIDE1: held slices not handed to the Python", (
        ("emu/_fast_tlbi.c", "    if (slices) {", "    if (0) {"),
    ), tuple(FAST_TESTS), compiled=True),
    Mutant("c-foreign-hierarchy", "compiled TLBI: another machine's TLBs taken for its own", (
        ("emu/_fast_tlbi.c", "        if (j == self->ncpus)\n            python = 1;",
         "        if (j == self->ncpus)\n            python = 0;"),
    ), tuple(FAST_TESTS), compiled=True),
]


def copy_tree(dst: Path) -> None:
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis", "build", "dist"))


def build(tree: Path, timeout: float) -> tuple[bool, str]:
    """Compile the copy's C twins in place (a mutant that does not compile is not a result)."""
    p = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "--force"], cwd=tree,
                       capture_output=True, text=True, timeout=timeout)
    errors = [l for l in p.stderr.splitlines() if "error" in l]
    return p.returncode == 0 and not errors, errors[0] if errors else ""


def run_tests(tree: Path, tests, timeout: float, compiled: bool = False) -> tuple[bool, str]:
    """(passed, last line of pytest's output). The copy is imported, not the installed tree:
    `python -m pytest` puts the copy's root first on sys.path."""
    # a mutant of the Python paths: the compiled twins of two of them (emu/fastpath.py) would
    # otherwise run instead (their equivalence to the Python is tested on its own)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", ARMMU_PURE_PYTHON="0" if compiled else "1")
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                           cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s"
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    failed = [l.split()[1] for l in lines if l.startswith(("FAILED ", "ERROR "))]
    last = lines[-1] if lines else " ".join(p.stderr.strip().splitlines()[-1:])
    return p.returncode == 0, f"{last}  {failed[0]}" if failed else last


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per pytest run")
    a = ap.parse_args(argv)
    if a.list:
        for m in MUTANTS:
            print(f"{m.name:40s} {m.what}")
        return 0
    chosen = MUTANTS if not a.only else [m for m in MUTANTS if m.name in a.only]
    unknown = set(a.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        print(f"mutate: unknown mutant(s): {', '.join(sorted(unknown))} (see --list)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="armmu-mutate-"))
    tree = tmp / "armmu"
    copy_tree(tree)
    try:
        where = subprocess.run([sys.executable, "-c", "import emu.tlb; print(emu.tlb.__file__)"], cwd=tree,
                               capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(tree)):
            print(f"mutate: the copy is not what gets imported ({where})", file=sys.stderr)
            return 2
        if any(m.compiled for m in chosen):
            ok, line = build(tree, a.timeout)
            if not ok:
                print(f"mutate: the unmutated C twins do not build ({line})", file=sys.stderr)
                return 2
        for compiled in (False, True):
            all_tests = sorted({t for m in chosen if m.compiled == compiled for t in m.tests})
            ok, line = run_tests(tree, all_tests, a.timeout, compiled) if all_tests else (True, "")
            if not ok:
                print(f"mutate: the unmutated tests fail ({line}); fix them first", file=sys.stderr)
                return 2
        killed = 0
        results = []
        for m in chosen:
            originals = {}
            stale = None
            for path, old, new in m.edits:
                f = tree / path
                text = originals.get(path) or f.read_text()
                originals.setdefault(path, text)
                cur = f.read_text()
                if cur.count(old) != 1:
                    stale = f"{path}: edit text found {cur.count(old)} times"
                    break
                f.write_text(cur.replace(old, new))
            t0 = time.time()
            if stale:
                verdict, line = "STALE", stale
            else:
                built, line = build(tree, a.timeout) if m.compiled else (True, "")
                if not built:
                    verdict = "STALE"                  # the edit no longer compiles: rewrite it
                else:
                    passed, line = run_tests(tree, m.tests, a.timeout, m.compiled)
                    verdict = "survived" if passed else "killed"
                    killed += not passed
            for path, text in originals.items():
                (tree / path).write_text(text)
            results.append(m.name)
            print(f"{verdict:9s} {m.name:40s} {time.time() - t0:5.1f} s  {line}", flush=True)
        print(f"mutation score: {killed}/{len(chosen)} killed")
        return 0 if killed == len(chosen) else 1
    finally:
        if a.keep:
            print(f"copy kept in {tree}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
