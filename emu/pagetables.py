"""Hand-built 3-level user tables (T0SZ=25, L1 -> L2 -> L3), for tools, benchmarks and tests.

The OS layer (pmap_py) builds its tables its own way; this is the minimal builder that
the hardware-level tools need without depending on the OS layer.
"""
from __future__ import annotations

from .descriptors import AP_RW_ALL, OA_MASK, level_index, page_desc, table_desc
from .frames import FrameAllocator, FrameKind
from .physmem import PhysMem


class UserTables:
    def __init__(self, mem: PhysMem, frames: FrameAllocator, owner="tables"):
        self.mem = mem
        self.frames = frames
        self.owner = owner
        self.l1 = frames.alloc(FrameKind.PAGE_TABLE, owner, 1)

    def leaf_slot(self, va: int) -> int:
        """PA of va's L3 descriptor, allocating the L2/L3 tables on the way."""
        t = self.l1
        for lvl in (1, 2):
            slot = t + level_index(va, lvl) * 8
            d = self.mem.read64(slot)
            if not d & 1:
                self.mem.write64(slot, table_desc(self.frames.alloc(FrameKind.PAGE_TABLE, self.owner, lvl + 1)))
                d = self.mem.read64(slot)
            t = d & OA_MASK
        return t + level_index(va, 3) * 8

    def map(self, va: int, pa: int | None = None, **kw) -> int:
        """Map one 4 KB page (a fresh USER frame unless pa is given); returns the PA.
        Keyword arguments go to page_desc (default: user RW, UXN, PXN, nG)."""
        if pa is None:
            pa = self.frames.alloc(FrameKind.USER, self.owner)
        kw.setdefault("ap", AP_RW_ALL)
        kw.setdefault("uxn", True)
        kw.setdefault("pxn", True)
        self.mem.write64(self.leaf_slot(va), page_desc(pa, **kw))
        return pa

    def unmap(self, va: int) -> None:
        self.mem.write64(self.leaf_slot(va), 0)
