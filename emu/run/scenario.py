"""Composing the layers: a guest image loaded into a pmap (an exec, in short).

An outer module like cli.py: the only place in emu, with them, that imports pmap_py and guest.
"""
from __future__ import annotations

from pmap_py import PROT_EXEC

from ..frames import FrameKind
from ..physmem import PAGE_SIZE


def map_program(machine, ps, cpu, pm, prog) -> list[int]:
    """Exec ``prog`` (a guest.image.Image) into pm: every page of each PT_LOAD segment gets a
    USER frame holding the segment's bytes (code through ``load_code``, so every CPU sees it
    fresh) and is pmap_enter'ed with the segment's protection (guest.image uses OpenBSD's PROT_* bits,
    as pmap_py does); every page of each declared
    region with ``populate`` is entered zero-filled (regions entered on fault are left to
    the kernel model's fault handler). Returns the frames, for uvm_unmap_detach."""
    frames = []
    for seg in prog.segments:
        for va in range(seg.start, seg.end, PAGE_SIZE):
            pa = machine.frames.alloc(FrameKind.USER, owner=pm)
            frames.append(pa)
            if seg.prot & PROT_EXEC:
                machine.load_code(pa, seg.page(va))
            else:
                machine.mem.write(pa, seg.page(va))
            ps.pmap_enter(cpu, pm, va, pa, seg.prot)
    for region in prog.regions:
        if region.populate:
            for va in range(region.start, region.end, PAGE_SIZE):
                pa = machine.frames.alloc(FrameKind.USER, owner=pm)
                frames.append(pa)
                ps.pmap_enter(cpu, pm, va, pa, region.prot)
    return frames


def setregs(cpu, prog) -> None:
    """exec's setregs (sys/arch/arm64/arm64/machdep.c): x0..x30 = 0, pc = the entry point,
    sp = the top of the stack region (SP_EL0, at either EL)."""
    for n in range(31):
        cpu.set_reg(n, 0)
    cpu.pc = prog.entry
    if prog.initial_sp is not None:
        cpu.sp_el0 = prog.initial_sp
