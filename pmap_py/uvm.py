"""A small uvm: map entries, anonymous memory, demand faults and teardown.

Names and order follow OpenBSD's uvm (uvm_map.c 1.346, uvm_glue.c 1.94, uvm_fault.c):
``uvm_map`` / ``uvm_unmap`` / ``uvm_map_protect`` for mmap/munmap/mprotect,
``uvm_fault`` for a fault the pmap cannot fix up, ``uvm_map_teardown`` (a
breadth-first walk of the entry tree, ``sched_pause(yield)`` per entry, pmap_remove
per entry, then ``uvm_unmap_detach`` frees the pages), ``uvmspace_purge``,
``uvmspace_free`` (last reference: purge again, then pmap_destroy) and the u-area
(kernel stack) of each thread, entered with pmap_kenter_pa and removed with
pmap_kremove (one VAALE1IS per page).

Each entry holds its anonymous pages directly (an amap without sharing): the frames
are USER frames owned by the pmap, allocated on fault or at map time (populate) and
returned to the frame allocator when the entry is torn down. Teardown paths are
generators (see pmap_py.kern.steps) so the scheduler can interleave them with other
CPUs; ``curcpu(p)`` gives the CPU the proc runs on at each step.
"""
from __future__ import annotations

import bisect
import gc
from dataclasses import dataclass, field
from typing import Callable, Generator

from emu.frames import FrameKind, OutOfFrames
from emu.physmem import PAGE_SIZE

from .kern.steps import PREEMPT, STEP
from .pmap import (PMAP_CANFAIL, PROT_EXEC, PROT_MASK, PROT_READ, PROT_WRITE, VM_MAXUSER_ADDRESS,
                   VM_MIN_KERNEL_ADDRESS, Pmap)

# errno values (sys/errno.h)
EPERM, ENOENT, ESRCH, EINTR, EIO, EBADF = 1, 2, 3, 4, 5, 9
ECHILD, EAGAIN, ENOMEM, EACCES, EFAULT = 10, 35, 12, 13, 14
EINVAL, ENOSYS = 22, 78

# pages one pmap_remove call handles between two observation points of a long removal
PMAP_REMOVE_CHUNK = 512
USPACE_PAGES = 5                          # arm64 param.h 1.4: UPAGES 5
UAREA_BASE = VM_MIN_KERNEL_ADDRESS + (1 << 30)   # kernel VA range for u-areas
UAREA_STRIDE = (USPACE_PAGES + 1) * PAGE_SIZE    # one unmapped guard page between u-areas
MMAP_BASE = 0x10_0000_0000                # where mmap(NULL, ...) places new entries


def prot_str(prot: int) -> str:
    return ("r" if prot & PROT_READ else "-") + ("w" if prot & PROT_WRITE else "-") + \
        ("x" if prot & PROT_EXEC else "-")


def parse_prot(text: str) -> int:
    return (PROT_READ if "r" in text else 0) | (PROT_WRITE if "w" in text else 0) | \
        (PROT_EXEC if "x" in text else 0)


@dataclass(eq=False)
class MapEntry:
    """struct vm_map_entry with its anonymous pages (page VA -> frame PA)."""
    start: int
    end: int
    protection: int
    name: str = "anon"
    anon: dict[int, int] = field(default_factory=dict)

    @property
    def npages(self) -> int:
        return (self.end - self.start) // PAGE_SIZE

    def __repr__(self) -> str:
        return f"MapEntry({self.name} {self.start:#x}-{self.end:#x} {prot_str(self.protection)})"


class VmMap:
    """struct vm_map: entries sorted by start address (OpenBSD keeps an RB tree)."""

    def __init__(self, pmap: Pmap):
        self.pmap = pmap
        self.entries: list[MapEntry] = []
        self._starts: list[int] = []
        self.size = 0

    def lookup(self, va: int) -> MapEntry | None:
        i = bisect.bisect_right(self._starts, va) - 1
        if i >= 0 and va < self.entries[i].end:
            return self.entries[i]
        return None

    def free_range(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self._starts, end)
        return not (i > 0 and self.entries[i - 1].end > start)

    def insert(self, e: MapEntry) -> None:
        i = bisect.bisect_left(self._starts, e.start)
        self.entries.insert(i, e)
        self._starts.insert(i, e.start)
        self.size += e.end - e.start

    def remove(self, e: MapEntry) -> None:
        i = self.entries.index(e)
        del self.entries[i], self._starts[i]
        self.size -= e.end - e.start

    def clip(self, start: int, end: int) -> list[MapEntry]:
        """uvm_map_clip_start/end: split entries so that [start, end) is covered by
        whole entries; return those entries."""
        out = []
        for e in [e for e in self.entries if e.start < end and e.end > start]:
            for cut in (start, end):
                if e.start < cut < e.end:
                    tail = MapEntry(cut, e.end, e.protection, e.name,
                                    {va: pa for va, pa in e.anon.items() if va >= cut})
                    for va in tail.anon:
                        del e.anon[va]
                    self.remove(e)
                    head = e
                    head.end = cut
                    self.insert(head)
                    self.insert(tail)
                    e = tail if cut == start else head
            out.append(e)
        return sorted(out, key=lambda x: x.start)

    def find_space(self, size: int, hint: int) -> int | None:
        va = max(hint, MMAP_BASE)
        for e in self.entries:
            if e.end <= va:
                continue
            if e.start >= va + size:
                break
            va = e.end
        return va if va + size <= VM_MAXUSER_ADDRESS else None

    def teardown_order(self) -> list[MapEntry]:
        """Breadth-first order of a balanced tree over the entries, root first: the
        order uvm_map_teardown visits OpenBSD's address tree in."""
        out, queue = [], [(0, len(self.entries))]
        while queue:
            lo, hi = queue.pop(0)
            if lo >= hi:
                continue
            mid = (lo + hi) // 2
            out.append(self.entries[mid])
            queue.append((lo, mid))
            queue.append((mid + 1, hi))
        return out


@dataclass(eq=False)
class Vmspace:
    """struct vmspace."""
    vm_map: VmMap
    vm_refcnt: int = 1

    @property
    def pmap(self) -> Pmap:
        return self.vm_map.pmap


class Uvm:
    """The uvm globals of one kernel: the pmap system, the frame allocator, the kernel
    VA slots for u-areas, and how to find the CPU a proc runs on."""

    def __init__(self, ps, curcpu: Callable, ktrace: Callable | None = None):
        self.ps = ps
        self.machine = ps.machine
        self.frames = ps.machine.frames
        self.curcpu = curcpu
        self.ktrace = ktrace or (lambda p, op, **f: None)     # (proc, step name, fields)
        self._uarea_free: list[int] = []
        self._uarea_next = UAREA_BASE
        self.pages_freed = 0

    # ------------------------------------------------------------------ vmspaces
    def uvmspace_alloc(self, cpu) -> Vmspace:
        return Vmspace(VmMap(self.ps.pmap_create(cpu)))

    def uvm_map(self, cpu, vm: Vmspace, start: int | None, size: int, prot: int, name: str = "anon",
                populate: bool = False, contents: Callable | None = None) -> int:
        """Insert an entry (at `start`, or where there is room) and, with populate,
        give every page a frame and pmap_enter it now (`contents(va)`: the page's bytes,
        e.g. an ELF segment's). Returns the VA, or a negative errno (-EINVAL, -ENOMEM)
        with nothing changed."""
        if size <= 0 or size % PAGE_SIZE or prot & ~PROT_MASK:
            return -EINVAL
        if start is None:
            start = vm.vm_map.find_space(size, 0)
            if start is None:
                return -ENOMEM
        if start % PAGE_SIZE or start < PAGE_SIZE or start + size > VM_MAXUSER_ADDRESS:
            return -EINVAL
        if not vm.vm_map.free_range(start, start + size):
            return -ENOMEM
        e = MapEntry(start, start + size, prot, name)
        if populate or contents is not None:
            if size // PAGE_SIZE > self.frames.nframes - self.frames.in_use():
                return -ENOMEM
            try:
                self._populate(cpu, vm, e, contents)
            except OutOfFrames:
                self._drop_pages(cpu, vm, e)
                return -ENOMEM
        vm.vm_map.insert(e)
        return start

    def _populate(self, cpu, vm: Vmspace, e: MapEntry, contents) -> None:
        """pmap_populate-like: every page mapped with the entry's full protection."""
        # NOTE: the cyclic collector is held off while a big populate creates its
        # long-lived objects (pteds, frame records): it would rescan them again and again
        enabled = gc.isenabled()
        gc.disable()
        try:
            self._populate_pages(cpu, vm, e, contents)
        finally:
            if enabled:
                gc.enable()

    def _populate_pages(self, cpu, vm: Vmspace, e: MapEntry, contents) -> None:
        pm = vm.pmap
        enter = self.ps.pmap_enter
        alloc = self.frames.alloc
        anon = e.anon
        prot = e.protection
        flags = prot | PMAP_CANFAIL
        user = FrameKind.USER
        with self.ps.flushes_batched(cpu):          # (1.58 flushes every page entered)
            for va in range(e.start, e.end, PAGE_SIZE):
                pa = alloc(user, pm)
                anon[va] = pa
                if contents is not None:
                    if prot & PROT_EXEC:
                        self.machine.load_code(pa, contents(va))
                    else:
                        self.machine.mem.write(pa, contents(va))
                if enter(cpu, pm, va, pa, prot, flags):
                    raise OutOfFrames("no frame left for a page table")

    def _drop_pages(self, cpu, vm: Vmspace, e: MapEntry) -> None:
        self.ps.pmap_remove(cpu, vm.pmap, e.start, e.end)
        for pa in e.anon.values():
            self._free_page(cpu, pa)
        e.anon.clear()

    def _free_page(self, cpu, pa: int) -> None:
        self.frames.free(pa)
        cpu.charge(cpu.cost.frame_free)
        self.pages_freed += 1

    def free_pages(self, cpu, pas) -> None:
        """uvm_anfree for each page of an entry: back to the frame allocator."""
        free = self.frames.free
        n = 0
        for pa in pas:
            free(pa)
            n += 1
        cpu.charge(cpu.cost.frame_free * n)
        self.pages_freed += n

    def uvm_unmap(self, p, vm: Vmspace, start: int, end: int) -> Generator:
        """munmap: clip, pmap_remove each entry (pm_active > 0: flushed per page),
        free its pages. Yields per entry."""
        for e in vm.vm_map.clip(start, end):
            cpu = self.curcpu(p)
            vm.vm_map.remove(e)
            yield from self.pmap_remove_chunked(p, vm.pmap, e.start, e.end)
            self.free_pages(self.curcpu(p), e.anon.values())
            yield STEP

    def uvm_map_protect(self, p, vm: Vmspace, start: int, end: int, prot: int) -> Generator:
        """mprotect: new protection on whole entries; pmap_protect lowers the rights of
        mapped pages (raising them is left to faults, as uvm does)."""
        for e in vm.vm_map.clip(start, end):
            e.protection = prot
            self.ps.pmap_protect(self.curcpu(p), vm.pmap, e.start, e.end, prot)
            yield STEP

    # ------------------------------------------------------------------ faults
    def uvm_fault(self, cpu, vm: Vmspace, va: int, ftype: int) -> int:
        """Resolve a fault the pmap could not fix up. 0, or an errno: EFAULT (no entry),
        EACCES (the entry forbids the access), ENOMEM (no frame)."""
        e = vm.vm_map.lookup(va)
        if e is None:
            return EFAULT
        if ftype & ~e.protection:
            return EACCES
        pva = va & ~(PAGE_SIZE - 1)
        pa = e.anon.get(pva)
        fresh = pa is None
        if fresh:
            try:
                pa = self.frames.alloc(FrameKind.USER, owner=vm.pmap)
            except OutOfFrames:
                return ENOMEM
            cpu.charge(cpu.cost.frame_zero)
            e.anon[pva] = pa
        if self.ps.pmap_enter(cpu, vm.pmap, pva, pa, e.protection, ftype | PMAP_CANFAIL):
            if fresh:
                del e.anon[pva]
                self._free_page(cpu, pa)
            return ENOMEM
        return 0

    # ------------------------------------------------------------------ teardown
    def pmap_remove_chunked(self, p, pm: Pmap, sva: int, eva: int) -> Generator:
        """pmap_remove over [sva, eva) in chunks of PMAP_REMOVE_CHUNK pages, with an
        observation point between chunks (the real call holds pm_mtx throughout and is
        not preempted; other CPUs still run meanwhile)."""
        va = sva
        while va < eva:
            nxt = min(eva, va + PMAP_REMOVE_CHUNK * PAGE_SIZE)
            self.ps.pmap_remove(self.curcpu(p), pm, va, nxt)
            va = nxt
            if va < eva:
                yield STEP

    def uvm_map_teardown(self, p, vm: Vmspace) -> Generator:
        """Breadth-first over the entry tree: sched_pause(yield), then
        uvm_unmap_kill_entry (pmap_remove of the entry); then uvm_unmap_detach of the
        dead entries frees their pages. The vp tables stay (pmap_destroy frees them)."""
        vmap = vm.vm_map
        dead = vmap.teardown_order()
        self.ktrace(p, "uvm_map_teardown", pmap=vmap.pmap.pm_name, entries=len(dead))
        for e in dead:
            yield PREEMPT                                   # sched_pause(yield)
            yield from self.pmap_remove_chunked(p, vmap.pmap, e.start, e.end)
        vmap.entries.clear()
        vmap._starts.clear()
        vmap.size = 0
        if dead:
            self.ktrace(p, "uvm_unmap_detach", pmap=vmap.pmap.pm_name,
                        pages=sum(len(e.anon) for e in dead))
        for e in dead:                                      # uvm_unmap_detach
            self.free_pages(self.curcpu(p), e.anon.values())
            e.anon.clear()
            yield STEP

    def uvmspace_purge(self, p, vm: Vmspace) -> Generator:
        yield from self.uvm_map_teardown(p, vm)

    def uvmspace_free(self, p, vm: Vmspace, destroy: Callable | None = None) -> Generator:
        """vm_refcnt -= 1; at 0: uvmspace_purge (a no-op walk if exit1 already purged),
        then pmap_destroy (or `destroy(cpu, pmap)` for strategies that differ)."""
        vm.vm_refcnt -= 1
        self.ktrace(p, "uvmspace_free", pmap=vm.pmap.pm_name, refs=vm.vm_refcnt)
        if vm.vm_refcnt > 0:
            return
        yield from self.uvmspace_purge(p, vm)
        cpu = self.curcpu(p)
        if destroy is None:
            self.ps.pmap_destroy(cpu, vm.pmap)
        else:
            destroy(cpu, vm.pmap)
        yield STEP

    # ------------------------------------------------------------------ u-areas
    def uvm_uarea_alloc(self, cpu) -> int:
        """km_alloc of USPACE: kernel frames entered with pmap_kenter_pa."""
        if self._uarea_free:
            va = self._uarea_free.pop()
        else:
            va = self._uarea_next
            self._uarea_next += UAREA_STRIDE
        for i in range(USPACE_PAGES):
            pa = self.frames.alloc(FrameKind.KERNEL, owner="uarea")
            self.ps.pmap_kenter_pa(cpu, va + i * PAGE_SIZE, pa, PROT_READ | PROT_WRITE)
        return va

    def uvm_uarea_free(self, cpu, va: int) -> None:
        """km_free: pmap_kremove (one VAALE1IS per page), then the frames."""
        pas = [self.ps.pmap_extract(self.ps.pmap_kernel(), va + i * PAGE_SIZE) for i in range(USPACE_PAGES)]
        self.ps.pmap_kremove(cpu, va, USPACE_PAGES * PAGE_SIZE)
        for pa in pas:
            if pa is not None:
                self.frames.free(pa)
                cpu.charge(cpu.cost.frame_free)
        self._uarea_free.append(va)
