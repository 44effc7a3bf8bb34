"""Physical memory: one numpy buffer shared by every CPU (and every Unicorn instance).

The buffer is an anonymous mmap, so it is page aligned (Unicorn maps it as guest RAM)
and lazily zeroed by the host kernel: a large size costs nothing until it is written.
"""
from __future__ import annotations

import mmap

import numpy as np

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = PAGE_SIZE - 1


class PhysMemError(Exception):
    """A host-side physical access that no bus could serve (misaligned or out of range)."""


class PhysMem:
    """Byte-addressed physical memory starting at PA 0."""

    def __init__(self, size: int):
        if size <= 0 or size % PAGE_SIZE:
            raise PhysMemError(f"physical memory size {size:#x} is not a positive multiple of {PAGE_SIZE:#x}")
        self.size = size
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.buf = np.frombuffer(self._map, dtype=np.uint8)
        self.u64 = self.buf.view(np.uint64)   # descriptor-sized view, indexed by pa >> 3
        self.q = memoryview(self._map).cast("Q")  # same words; indexing returns a Python int 3x faster
        # Called as fn(pa, length) after every host-side write (code-page invalidation hangs here).
        self.write_listeners: list = []

    @property
    def address(self) -> int:
        """Host address of PA 0 (for Unicorn's mem_map_ptr)."""
        return self.buf.ctypes.data

    def contains(self, pa: int, length: int = 1) -> bool:
        return 0 <= pa and pa + length <= self.size

    def _check(self, pa: int, length: int, align: int) -> None:
        if pa % align:
            raise PhysMemError(f"misaligned {length}-byte physical access at {pa:#x}")
        if not self.contains(pa, length):
            raise PhysMemError(f"physical access {pa:#x}+{length:#x} outside memory of {self.size:#x} bytes")

    def read64(self, pa: int) -> int:
        """One 64-bit descriptor (little-endian)."""
        if pa & 7 or pa < 0 or pa + 8 > self.size:
            self._check(pa, 8, 8)
        return self.q[pa >> 3]

    def write64(self, pa: int, value: int) -> None:
        if pa & 7 or pa < 0 or pa + 8 > self.size:
            self._check(pa, 8, 8)
        self.u64[pa >> 3] = value & 0xFFFF_FFFF_FFFF_FFFF
        for fn in self.write_listeners:
            fn(pa, 8)

    def read(self, pa: int, length: int) -> bytes:
        self._check(pa, length, 1)
        return self.buf[pa:pa + length].tobytes()

    def write(self, pa: int, data: bytes) -> None:
        self._check(pa, len(data), 1)
        self.buf[pa:pa + len(data)] = np.frombuffer(bytes(data), dtype=np.uint8)
        for fn in self.write_listeners:
            fn(pa, len(data))

    def zero_frame(self, pa: int) -> None:
        self._check(pa, PAGE_SIZE, PAGE_SIZE)
        self.buf[pa:pa + PAGE_SIZE] = 0
        for fn in self.write_listeners:
            fn(pa, PAGE_SIZE)
