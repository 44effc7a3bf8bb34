"""Test helper: hand-built OpenBSD-style 3-level user tables (T0SZ=25) in a machine's memory.

The emu tests build tables directly so that they do not depend on pmap_py.
"""
from __future__ import annotations

from emu.descriptors import AP_RO_EL1, AP_RW_ALL, OA_MASK, level_index, page_desc, table_desc
from emu.frames import FrameKind


class Tables:
    def __init__(self, machine, owner="test"):
        self.m = machine
        self.owner = owner
        self.l1 = machine.frames.alloc(FrameKind.PAGE_TABLE, owner, 1)

    def _leaf_table(self, va: int) -> int:
        t = self.l1
        for lvl in (1, 2):
            slot = t + level_index(va, lvl) * 8
            d = self.m.mem.read64(slot)
            if not d & 1:
                n = self.m.frames.alloc(FrameKind.PAGE_TABLE, self.owner, lvl + 1)
                self.m.mem.write64(slot, table_desc(n))
                d = self.m.mem.read64(slot)
            t = d & OA_MASK
        return t

    def map(self, va: int, pa: int | None = None, **kw) -> int:
        """Map one 4 KB page (a fresh USER frame unless pa is given); returns the PA."""
        if pa is None:
            pa = self.m.frames.alloc(FrameKind.USER, self.owner)
        kw.setdefault("ap", AP_RW_ALL)
        kw.setdefault("uxn", True)
        kw.setdefault("pxn", True)
        self.m.mem.write64(self._leaf_table(va) + level_index(va, 3) * 8, page_desc(pa, **kw))
        return pa

    def map_code(self, va: int, code: bytes, el: int = 0, barriers=()) -> int:
        """Map and fill executable pages: user code (EL0, read-only) or kernel code (EL1)."""
        pa0 = None
        for off in range(0, max(len(code), 1), 0x1000):
            if el == 0:
                pa = self.map(va + off, ap=0b11, uxn=False, pxn=True)
            else:
                pa = self.map(va + off, ap=AP_RO_EL1, uxn=True, pxn=False)
            self.m.load_code(pa, code[off:off + 0x1000], barriers)
            pa0 = pa if pa0 is None else pa0
        return pa0

    def unmap(self, va: int) -> None:
        self.m.mem.write64(self._leaf_table(va) + level_index(va, 3) * 8, 0)

    def leaf_slot(self, va: int) -> int:
        return self._leaf_table(va) + level_index(va, 3) * 8
