"""The emulator's own speed against raw Unicorn, measured in one run (issue 7).

Every ratio compares a subject with its baseline timed in the same loop, interleaved
round by round (baseline, subject, baseline, subject, ...), so that a slow phase of this
shared machine cannot favour either. Prints, for the same guest loops:

  1. guest instructions per second with the model in the loop (fast mode, instrumented
     mode) as a ratio to raw Unicorn with no hooks at all, and to raw Unicorn running the
     same instruction-count quanta (Unicorn's count hook alone);
  2. the host cost of one TLB miss served by the model (walk + fill, fast mode) as a ratio
     (median of the per-round ratios) to a bare fill hook through the binding's hook_add
     that returns a fixed mapping, at
     P pages (no capacity evictions) and 4P pages (L2 evictions); and the floors: the same
     fixed mapping through our own ctypes callback (the least a Python fill hook costs) and
     QEMU's own TLB refill in C (Unicorn with its MMU off: no hook at all);
  3. the same miss cost in instrumented mode, and in fast mode with the pure Python paths
     (Machine(fast=False)) beside the compiled twins (emu/fastpath.py).

Usage: python benchmarks/bench_emulator.py [--iterations K] [--pages P] [--quantum Q] [--repeat N] [--json]
"""
from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np
from unicorn import (UC_ARCH_ARM64, UC_HOOK_INTR, UC_HOOK_TLB_FILL, UC_MODE_ARM, UC_PROT_ALL,
                     UC_TLB_VIRTUAL, Uc)
from unicorn import arm64_const as A

from emu import fastpath
from emu import unicorn_boundary as ucb
from emu.cpu import StopKind
from emu.descriptors import AP_RO_ALL
from emu.machine import Machine
from emu.pagetables import UserTables
from emu.sysregs import SysReg, make_ttbr
from guest.asm import assemble

CODE = 0x400000
DATA = 0x1000000
RAW_SIZE = 64 << 20

LOOP = """
// TLB-friendly: K iterations over 4 words on one data page
_start:
    ldr x0, =0x1000000
    ldr x1, ={k}
loop:  ldr x2, [x0]
    add x2, x2, #1
    str x2, [x0, #8]
    subs x1, x1, #1
    b.ne loop
    svc #0
"""

TOUCH = """
// TLB-hostile: one store to each of P pages
_start:
    ldr x0, =0x1000000
    ldr x1, ={p}
loop:  str x1, [x0]
    add x0, x0, #0x1000
    subs x1, x1, #1
    b.ne loop
    svc #0
"""


def timed(fn) -> float:
    """fn's CPU time (this process only: the machine is shared, and a run is single-threaded
    and never waits, so CPU time is its wall time minus other processes' turns), garbage
    collected before and the collector held off (as timeit does)."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.process_time()
        fn()
        return time.process_time() - t0
    finally:
        gc.enable()


# ---------------------------------------------------------------- subjects: set up, then return the timed part
def model(src: str, npages: int, quantum: int, **kw):
    m = Machine(ncpus=1, mem_size=64 << 20, **kw)
    tables = UserTables(m.mem, m.frames, "bench")
    prog = assemble(src, CODE)
    m.load_code(tables.map(CODE, ap=AP_RO_ALL, uxn=False, pxn=True), prog.code)
    for i in range(npages):
        tables.map(DATA + i * 0x1000)
    m.mem.buf[::4096] = m.mem.buf[::4096].copy()   # touch every host page now: no host page faults while timing
    cpu = m.cpus[0]
    cpu.msr(SysReg.TTBR1_EL1, make_ttbr(0, 5))
    cpu.msr(SysReg.TTBR0_EL1, make_ttbr(tables.l1))
    cpu.set_el(0)

    def go():
        pc = CODE
        while True:
            stop = cpu.run(quantum, pc=pc)
            pc = stop.pc
            if stop.kind is not StopKind.QUANTUM:
                break
        assert stop.kind is StopKind.SVC, stop
    return go


def raw(src: str, quantum: int | None, fill: str | None):
    """Raw Unicorn on a fixed mapping (VA = PA inside the buffer), no model. `fill`: None
    (Unicorn's MMU off: QEMU refills its TLB in C), "binding" (a bare Python fill hook
    through hook_add) or "ctypes" (the same hook through our own ctypes callback)."""
    buf = np.frombuffer(mmap.mmap(-1, RAW_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), dtype=np.uint8)
    buf[:] = 0                      # touch every host page now: no host page faults while timing
    prog = assemble(src, CODE)
    buf[CODE:CODE + len(prog.code)] = np.frombuffer(prog.code, dtype=np.uint8)
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_page_size(4096)
    if fill is not None:
        uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
    if fill == "binding":
        def bare(uc, va, access, entry, ud):
            entry.paddr = va if va < RAW_SIZE else 0
            entry.perms = 7
            return True
        uc.hook_add(UC_HOOK_TLB_FILL, bare)
    elif fill == "ctypes":
        r = ucb.Raw(uc)
        entry_at = ucb.entry_at

        def bare_c(uch, va, access, entry, ud):
            e = entry_at(entry)
            e.paddr = va if va < RAW_SIZE else 0
            e.perms = 7
            return True
        r.add_tlb_fill_hook(bare_c)
        uc._armmu_raw = r                          # keep the callback alive with uc
    uc.mem_map_ptr(0, RAW_SIZE, UC_PROT_ALL, buf.ctypes.data)
    done = []
    uc.hook_add(UC_HOOK_INTR, lambda uc, n, ud: (done.append(n), uc.emu_stop()))
    uc.reg_write(A.UC_ARM64_REG_PSTATE, 0)
    uc.reg_write(A.UC_ARM64_REG_CP_REG, (13, 0, 3, 3, 2, 0))   # rebuild hflags: EL0

    def go():
        pc = CODE
        while not done:
            uc.emu_start(pc, ucb.SENTINEL, count=quantum or 0)
            pc = uc.reg_read(A.UC_ARM64_REG_PC)
    go.buf = buf                    # the buffer lives as long as the run
    return go


def interleaved(repeat: int, subjects: dict) -> dict[str, list[float]]:
    """Time each subject once per round, round after round: {name: [seconds per round]}.
    A subject is a factory: setup (untimed), then the returned function is timed."""
    times = {name: [] for name in subjects}
    for _ in range(repeat):
        for name, make in subjects.items():
            times[name].append(timed(make()))
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=2_000_000, help="loop iterations (5 insns each)")
    ap.add_argument("--pages", type=int, default=1000, help="pages touched once each (miss cost); the A72 L2 holds 1024")
    ap.add_argument("--quantum", type=int, default=100_000, help="instructions per emu_start")
    ap.add_argument("--repeat", type=int, default=9, help="rounds: best (throughput) or median (miss cost) of N")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    a = ap.parse_args(argv)
    say = (lambda *args: None) if a.json else print
    k, p, q, n = a.iterations, a.pages, a.quantum, a.repeat
    fast = fastpath.default()           # the model as a run uses it (compiled twins when built)
    out: dict = {"iterations": k, "pages": p, "quantum": q, "repeat": n, "compiled_fast_paths": fast}
    say(f"# model: {'compiled fast paths' if fast else 'pure Python'} (emu/fastpath.py)")

    loop = LOOP.replace("{k}", str(k))
    insns = 2 + 5 * k + 1
    ki = max(k // 50, 1000)
    loop_i = LOOP.replace("{k}", str(ki))
    insns_i = 2 + 5 * ki + 1
    t = interleaved(n, {
        "raw": lambda: raw(loop, None, None),
        "raw_count": lambda: raw(loop, q, None),
        "fast": lambda: model(loop, 1, q, fast=fast),
        "raw_small": lambda: raw(loop_i, None, None),
        "instrumented": lambda: model(loop_i, 1, q, instrument=True, fast=fast),
    })
    best = {name: min(v) for name, v in t.items()}
    mips = lambda count, sec: count / sec / 1e6
    out["throughput"] = {
        "raw_mips": mips(insns, best["raw"]), "raw_count_mips": mips(insns, best["raw_count"]),
        "fast_mips": mips(insns, best["fast"]), "fast_ratio_to_raw": best["raw"] / best["fast"],
        "fast_ratio_to_raw_count": best["raw_count"] / best["fast"],
        "instrumented_mips": mips(insns_i, best["instrumented"]),
        "instrumented_ratio_to_raw": best["raw_small"] / best["instrumented"]}
    th = out["throughput"]
    say(f"# guest loop: {insns} instructions, quantum {q}, best of {n} interleaved rounds")
    say(f"raw unicorn, no hooks, no count      {th['raw_mips']:9.1f} M insn/s")
    say(f"raw unicorn, no hooks, count quanta  {th['raw_count_mips']:9.1f} M insn/s")
    say(f"armmu fast mode                      {th['fast_mips']:9.1f} M insn/s   "
          f"ratio to raw {th['fast_ratio_to_raw']:.3f}   to raw+count {th['fast_ratio_to_raw_count']:.3f}")
    say(f"armmu instrumented mode              {th['instrumented_mips']:9.3f} M insn/s   "
          f"ratio to raw {th['instrumented_ratio_to_raw']:.5f}")

    # Cost of one miss = marginal time per page: (T(N pages) - T(16 pages)) / (N - 16) in each
    # round, so that emu_start, code translation and setup cancel out.
    small = 16
    say(f"\n# TLB misses: marginal cost of one store to a new page, {p} pages (no capacity "
          f"evictions) and {4 * p} pages (L2 evictions); medians of {n} rounds")
    out["miss_us"] = {}
    for npages in (p, 4 * p):
        src_n, src_s = TOUCH.replace("{p}", str(npages)), TOUCH.replace("{p}", str(small))
        subjects = {}
        for name, make in (("qemu_c", lambda s, pages: raw(s, q, None)),
                           ("ctypes_hook", lambda s, pages: raw(s, q, "ctypes")),
                           ("bare_hook", lambda s, pages: raw(s, q, "binding")),
                           ("model", lambda s, pages: model(s, pages, q, fast=fast)),
                           ("model_python", lambda s, pages: model(s, pages, q, fast=False)),
                           ("instrumented", lambda s, pages: model(s, pages, q, instrument=True, fast=fast))):
            subjects[name] = (lambda mk, s: lambda: mk(s, npages))(make, src_n)
            subjects[name + "_small"] = (lambda mk, s: lambda: mk(s, small))(make, src_s)
        t = interleaved(n, subjects)
        # per round: the marginal cost of each subject, and its ratio to the baseline of the
        # same round (timed next to it); figures are medians over the rounds
        rounds = {name: [(a - b) / (npages - small) * 1e6 for a, b in zip(t[name], t[name + "_small"])]
                  for name in ("qemu_c", "ctypes_hook", "bare_hook", "model", "model_python", "instrumented")}
        per = {name: statistics.median(v) for name, v in rounds.items()}
        ratio = lambda a, b: statistics.median(x / y for x, y in zip(rounds[a], rounds[b]))
        bare = per["bare_hook"]
        r = {**per, "model_ratio": ratio("model", "bare_hook"), "instrumented_ratio": ratio("instrumented", "bare_hook"),
             "ctypes_hook_ratio": ratio("ctypes_hook", "bare_hook"),
             "model_ratio_to_ctypes_hook": ratio("model", "ctypes_hook"),
             "model_python_ratio": ratio("model_python", "bare_hook"),
             "compiled_speedup": ratio("model_python", "model")}
        out["miss_us"][str(npages)] = r
        say(f"{npages:6d} pages: QEMU's C refill {per['qemu_c']:5.2f} us   ctypes hook {per['ctypes_hook']:5.2f} us   "
              f"bare fill hook {bare:5.2f} us/miss")
        say(f"{'':13} model {per['model']:5.2f} us/miss (ratio {r['model_ratio']:.2f}; "
              f"{r['model_ratio_to_ctypes_hook']:.2f} x the ctypes hook)   "
              f"instrumented {per['instrumented']:5.2f} us/miss (ratio {r['instrumented_ratio']:.2f})")
        say(f"{'':13} the same model in pure Python {per['model_python']:5.2f} us/miss (ratio "
              f"{r['model_python_ratio']:.2f}): the compiled paths are {r['compiled_speedup']:.2f}x faster")
    if a.json:
        print(json.dumps(out, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
