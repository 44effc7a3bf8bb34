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
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from unicorn import (UC_ARCH_ARM64, UC_HOOK_INTR, UC_HOOK_TLB_FILL, UC_MODE_ARM, UC_PROT_ALL,
                     UC_TLB_VIRTUAL, Uc, UcError)
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
    m.load_code(code_pa, prog.code, prog.barriers)
    for i in range(npages):
        tables.map(DATA + i * 0x1000)
    l1 = tables.l1
    mem.buf[::4096] = mem.buf[::4096].copy()   # touch every host page now: no host page faults while timing
    cpu = m.cpus[0]
    cpu.msr(SysReg.TTBR1_EL1, make_ttbr(0, 5))
    cpu.msr(SysReg.TTBR0_EL1, make_ttbr(l1))
    cpu.set_el(0)
    return m, prog


def run_model(src: str, npages: int, quantum: int, **kw) -> tuple[float, int, object]:
    m, prog = build(src, npages, **kw)
    cpu = m.cpus[0]
    pc = CODE
    t0 = time.perf_counter()
    while True:
        stop = cpu.run(quantum, pc=pc)
        pc = stop.pc
        if stop.kind is not StopKind.QUANTUM:
            break
    dt = time.perf_counter() - t0
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
    t0 = time.perf_counter()
    while not done:
        uc.emu_start(pc, SENTINEL, count=quantum or 0)
        pc = uc.reg_read(A.UC_ARM64_REG_PC)
    return time.perf_counter() - t0, 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=2_000_000, help="loop iterations (5 insns each)")
    ap.add_argument("--pages", type=int, default=512, help="pages touched once each (miss cost)")
    ap.add_argument("--quantum", type=int, default=100_000, help="instructions per emu_start")
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings (the machine is noisy)")
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

    print(f"\n# TLB misses: one store to each of {p} pages (no capacity evictions) and {4 * p} pages")
    for npages in (p, 4 * p):
        touch = TOUCH.replace("{p}", str(npages))
        t_bare, _ = best(lambda: raw_unicorn(touch, npages, q, True))
        t_model, _, cpu = best(lambda: run_model(touch, npages, q))
        t_inst, _, cpu_i = best(lambda: run_model(touch, npages, q, instrument=True))
        per = lambda t: t / npages * 1e6
        print(f"{npages:6d} pages: bare fill hook {per(t_bare):6.2f} us/miss   "
              f"model {per(t_model):6.2f} us/miss (ratio {t_model / t_bare:.2f}, "
              f"walks {cpu.walks}, unicorn flushes {cpu.uc_flushes})   "
              f"instrumented {per(t_inst):6.2f} us/miss (ratio {t_inst / t_bare:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
