"""The emulator's own speed against raw Unicorn, measured in one run (issue 3).

Prints, for the same guest loops:
  1. guest instructions per second with the model in the loop (fast mode, and
     instrumented mode) as a ratio to raw Unicorn with no hooks at all, and to raw
     Unicorn with the same instruction-count quanta (Unicorn's count hook alone);
  2. the host cost of one TLB miss served by the model (walk + fill, fast mode) as a
     ratio to a bare fill hook that returns a fixed mapping, with and without the
     model's capacity evictions;
  3. the same miss cost in instrumented mode.

Usage: python benchmarks/bench_emulator.py [--iterations K] [--pages P] [--quantum Q]
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from unicorn import (UC_ARCH_ARM64, UC_HOOK_INTR, UC_HOOK_TLB_FILL, UC_MODE_ARM, UC_PROT_ALL,
                     UC_TLB_VIRTUAL, Uc)
from unicorn import arm64_const as A

from emu.cpu import SENTINEL, StopKind
from emu.descriptors import AP_RO_ALL
from emu.pagetables import UserTables
from emu.machine import Machine
from emu.sysregs import SysReg, make_ttbr
from guest.asm import assemble

CODE = 0x400000
DATA = 0x1000000

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


def build(src: str, npages: int, **kw) -> tuple[Machine, object]:
    m = Machine(ncpus=1, mem_size=64 << 20, **kw)
    fr, mem = m.frames, m.mem
    tables = UserTables(mem, fr, "bench")
    prog = assemble(src, CODE)
    code_pa = tables.map(CODE, ap=AP_RO_ALL, uxn=False, pxn=True)
    m.load_code(code_pa, prog.code)
    for i in range(npages):
        tables.map(DATA + i * 0x1000)
    l1 = tables.l1
    mem.buf[::4096] = mem.buf[::4096].copy()   # touch every host page now: no host page faults while timing
    cpu = m.cpus[0]
    cpu.msr(SysReg.TTBR1_EL1, make_ttbr(0, 5))
    cpu.msr(SysReg.TTBR0_EL1, make_ttbr(l1))
    cpu.set_el(0)
    return m, prog


def timed_start() -> float:
    """Like timeit: collect garbage left by earlier runs, then keep the collector out of the timing."""
    gc.collect()
    gc.disable()
    return time.perf_counter()


def timed_end(t0: float) -> float:
    dt = time.perf_counter() - t0
    gc.enable()
    return dt


def run_model(src: str, npages: int, quantum: int, **kw) -> tuple[float, int, object]:
    m, prog = build(src, npages, **kw)
    cpu = m.cpus[0]
    pc = CODE
    t0 = timed_start()
    while True:
        stop = cpu.run(quantum, pc=pc)
        pc = stop.pc
        if stop.kind is not StopKind.QUANTUM:
            break
    dt = timed_end(t0)
    assert stop.kind is StopKind.SVC, stop
    return dt, cpu.insns, cpu


def raw_unicorn(src: str, npages: int, quantum: int | None, fill_hook: bool) -> tuple[float, int]:
    """Raw Unicorn on an identity-like fixed mapping: no model, optional bare fill hook."""
    import mmap

    import numpy as np
    size = 64 << 20
    buf = np.frombuffer(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), dtype=np.uint8)
    buf[:] = 0                      # touch every host page now: no host page faults while timing
    prog = assemble(src, CODE)
    buf[CODE:CODE + len(prog.code)] = np.frombuffer(prog.code, dtype=np.uint8)
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_page_size(4096)
    if fill_hook:
        uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)

        def fill(uc, va, access, entry, ud):       # fixed mapping: VA = PA inside the buffer
            entry.paddr = va if va < size else 0
            entry.perms = 7
            return True
        uc.hook_add(UC_HOOK_TLB_FILL, fill)
    uc.mem_map_ptr(0, size, UC_PROT_ALL, buf.ctypes.data)
    done = []
    uc.hook_add(UC_HOOK_INTR, lambda uc, n, ud: (done.append(n), uc.emu_stop()))
    uc.reg_write(A.UC_ARM64_REG_PSTATE, 0)
    uc.reg_write(A.UC_ARM64_REG_CP_REG, (13, 0, 3, 3, 2, 0))   # rebuild hflags: EL0
    pc = CODE
    t0 = timed_start()
    while not done:
        uc.emu_start(pc, SENTINEL, count=quantum or 0)
        pc = uc.reg_read(A.UC_ARM64_REG_PC)
    return timed_end(t0), 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=2_000_000, help="loop iterations (5 insns each)")
    ap.add_argument("--pages", type=int, default=1000, help="pages touched once each (miss cost); the A72 L2 holds 1024")
    ap.add_argument("--quantum", type=int, default=100_000, help="instructions per emu_start")
    ap.add_argument("--repeat", type=int, default=5, help="best (throughput) or median (miss cost) of N runs")
    a = ap.parse_args(argv)
    k, p, q = a.iterations, a.pages, a.quantum
    best = lambda f: min((f() for _ in range(a.repeat)), key=lambda r: r[0])
    loop = LOOP.replace("{k}", str(k))
    insns = 2 + 5 * k + 1

    print(f"# guest loop: {insns} instructions, quantum {q}")
    t_raw, _ = best(lambda: raw_unicorn(loop, 1, None, False))
    t_rawq, _ = best(lambda: raw_unicorn(loop, 1, q, False))
    t_fast, n_fast, _ = best(lambda: run_model(loop, 1, q))
    ki = max(k // 50, 1000)
    loop_i = LOOP.replace("{k}", str(ki))
    insns_i = 2 + 5 * ki + 1
    t_rawi, _ = best(lambda: raw_unicorn(loop_i, 1, None, False))
    t_ins, n_ins, _ = best(lambda: run_model(loop_i, 1, q, instrument=True))
    assert n_fast == insns and n_ins == insns_i, (n_fast, n_ins)
    mips = lambda n, t: n / t / 1e6
    print(f"raw unicorn, no hooks, no count      {mips(insns, t_raw):9.1f} M insn/s")
    print(f"raw unicorn, no hooks, count quanta  {mips(insns, t_rawq):9.1f} M insn/s")
    print(f"armmu fast mode                      {mips(insns, t_fast):9.1f} M insn/s   "
          f"ratio to raw {t_raw / t_fast:.3f}   to raw+count {t_rawq / t_fast:.3f}")
    print(f"armmu instrumented mode              {mips(insns_i, t_ins):9.3f} M insn/s   "
          f"ratio to raw {(insns_i / t_ins) / (insns_i / t_rawi):.5f}")

    # Cost of one miss = marginal time per page: (T(n pages) - T(16 pages)) / (n - 16), each the
    # median of --repeat fresh runs, so that emu_start, code translation and setup cancel out.
    print(f"\n# TLB misses: marginal cost of one store to a new page, {p} pages (no capacity "
          f"evictions) and {4 * p} pages (L2 evictions, each flushing Unicorn's TLB)")
    median = lambda f: sorted(f()[0] for _ in range(a.repeat))[a.repeat // 2]
    small = 16

    def per_miss(npages, fn):
        t_n = median(lambda: fn(TOUCH.replace("{p}", str(npages)), npages))
        t_s = median(lambda: fn(TOUCH.replace("{p}", str(small)), small))
        return (t_n - t_s) / (npages - small) * 1e6

    for npages in (p, 4 * p):
        bare = per_miss(npages, lambda src, n: raw_unicorn(src, n, q, True))
        model = per_miss(npages, lambda src, n: run_model(src, n, q))
        inst = per_miss(npages, lambda src, n: run_model(src, n, q, instrument=True))
        print(f"{npages:6d} pages: bare fill hook {bare:5.2f} us/miss   model {model:5.2f} us/miss "
              f"(ratio {model / bare:.2f})   instrumented {inst:5.2f} us/miss (ratio {inst / bare:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
