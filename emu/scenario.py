"""Composing the layers: a guest program loaded into a pmap (an exec, in short).

An outer module like cli.py: the only place in emu, with them, that imports pmap_py and guest.
"""
from __future__ import annotations

from pmap_py import PROT_EXEC, PROT_READ, PROT_WRITE

from .frames import FrameKind
from .physmem import PAGE_SIZE


def map_program(machine, ps, cpu, pm, prog) -> list[int]:
    """Give every page of prog.layout a USER frame of pm and pmap_enter it (code r-x with
    the code copied in, heap and stack rw-). Returns the frames, for uvm_unmap_detach."""
    frames = []
    for name, region in prog.layout.items():
        prot = PROT_READ | (PROT_EXEC if name == "code" else PROT_WRITE)
        for off in range(0, region.size, PAGE_SIZE):
            pa = machine.frames.alloc(FrameKind.USER, owner=pm)
            frames.append(pa)
            if name == "code":
                machine.load_code(pa, prog.code[off:off + PAGE_SIZE])
            ps.pmap_enter(cpu, pm, region.start + off, pa, prot)
    return frames
