"""Frame allocator: every physical frame has an owner and a kind.

The checker and the trace read ownership from here, so every frame the OS layer uses
(page tables, user data, the zero page) must come from this allocator. Freed frames
are reused most-recently-freed first, so that reuse hazards show up quickly.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .physmem import PAGE_SHIFT, PAGE_SIZE, PhysMem, PhysMemError


class FrameKind(Enum):
    FREE = "free"
    PAGE_TABLE = "page-table"   # level L of pmap P
    USER = "user"               # user data of address space P
    KERNEL = "kernel"
    ZERO = "zero"               # the kernel's all-invalid L1 table


@dataclass(frozen=True, slots=True)
class FrameInfo:
    kind: FrameKind
    owner: object = None        # pmap / address-space identity (anything hashable)
    level: int | None = None    # translation level for PAGE_TABLE frames

    def __str__(self) -> str:
        if self.kind is FrameKind.PAGE_TABLE:
            return f"L{self.level} table of {self.owner}"
        if self.owner is not None:
            return f"{self.kind.value} of {self.owner}"
        return self.kind.value


FREE_INFO = FrameInfo(FrameKind.FREE)


class OutOfFrames(Exception):
    pass


class FrameAllocator:
    """Allocates 4 KB frames from [first_pa, end_pa) of a PhysMem."""

    def __init__(self, mem: PhysMem, first_pa: int = 0, end_pa: int | None = None):
        end_pa = mem.size if end_pa is None else end_pa
        if first_pa % PAGE_SIZE or end_pa % PAGE_SIZE or not 0 <= first_pa < end_pa <= mem.size:
            raise PhysMemError(f"bad frame range {first_pa:#x}..{end_pa:#x}")
        self.mem = mem
        self.first_pa = first_pa
        self.end_pa = end_pa
        self._info: dict[int, FrameInfo] = {}           # frame number -> info, absent = free
        # Never-used frames are handed out in ascending order after the free stack is empty.
        self._next_fresh = first_pa >> PAGE_SHIFT
        self._free_stack: list[int] = []                # LIFO of freed frame numbers
        self.allocs = 0
        self.frees = 0
        # fn(pa, old_info, new_info) on every alloc, free and retag.
        self.listeners: list = []

    @property
    def nframes(self) -> int:
        return (self.end_pa - self.first_pa) >> PAGE_SHIFT

    def alloc(self, kind: FrameKind, owner=None, level: int | None = None, zero: bool = True) -> int:
        if kind is FrameKind.FREE:
            raise ValueError("cannot allocate a frame as FREE")
        if self._free_stack:
            fn = self._free_stack.pop()
        elif self._next_fresh < self.end_pa >> PAGE_SHIFT:
            fn = self._next_fresh
            self._next_fresh += 1
            zero = False                                # never written: already zero
        else:
            raise OutOfFrames(f"out of physical frames ({self.nframes} in use)")
        pa = fn << PAGE_SHIFT
        info = FrameInfo(kind, owner, level)
        self._info[fn] = info
        self.allocs += 1
        if zero:
            self.mem.zero_frame(pa)
        for cb in self.listeners:
            cb(pa, FREE_INFO, info)
        return pa

    def free(self, pa: int) -> None:
        fn = self._frame_number(pa)
        old = self._info.pop(fn, None)
        if old is None:
            raise PhysMemError(f"double free of frame {pa:#x}")
        self._free_stack.append(fn)
        self.frees += 1
        for cb in self.listeners:
            cb(pa, old, FREE_INFO)

    def retag(self, pa: int, kind: FrameKind, owner=None, level: int | None = None) -> None:
        fn = self._frame_number(pa)
        old = self._info.get(fn)
        if old is None:
            raise PhysMemError(f"retag of free frame {pa:#x}")
        new = FrameInfo(kind, owner, level)
        self._info[fn] = new
        for cb in self.listeners:
            cb(pa, old, new)

    def info(self, pa: int) -> FrameInfo:
        """Owner and kind of the frame holding pa (FREE for free or unmanaged frames)."""
        return self._info.get(pa >> PAGE_SHIFT, FREE_INFO)

    def in_use(self) -> int:
        return len(self._info)

    def counts(self) -> dict[FrameKind, int]:
        out = {k: 0 for k in FrameKind}
        for info in self._info.values():
            out[info.kind] += 1
        out[FrameKind.FREE] = self.nframes - len(self._info)
        return out

    def owned_by(self, owner) -> list[int]:
        return sorted(fn << PAGE_SHIFT for fn, i in self._info.items() if i.owner == owner)

    def _frame_number(self, pa: int) -> int:
        if pa % PAGE_SIZE or not self.first_pa <= pa < self.end_pa:
            raise PhysMemError(f"{pa:#x} is not a managed frame address")
        return pa >> PAGE_SHIFT
