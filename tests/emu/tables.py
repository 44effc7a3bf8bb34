"""Test helper: hand-built OpenBSD-style 3-level user tables (T0SZ=25) in a machine's memory.

The emu tests build tables directly so that they do not depend on pmap_py.
"""
from __future__ import annotations

from emu.descriptors import AP_RO_EL1
from emu.pagetables import UserTables


class Tables(UserTables):
    def __init__(self, machine, owner="test"):
        super().__init__(machine.mem, machine.frames, owner)
        self.m = machine

    def map_code(self, va: int, code: bytes, el: int = 0) -> int:
        """Map and fill executable pages: user code (EL0, read-only) or kernel code (EL1)."""
        pa0 = None
        for off in range(0, max(len(code), 1), 0x1000):
            if el == 0:
                pa = self.map(va + off, ap=0b11, uxn=False, pxn=True)
            else:
                pa = self.map(va + off, ap=AP_RO_EL1, uxn=True, pxn=False)
            self.m.load_code(pa, code[off:off + 0x1000])
            pa0 = pa if pa0 is None else pa0
        return pa0
