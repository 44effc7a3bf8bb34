"""Just enough of a kernel to run the guests on raw Unicorn (MMU off: VA == PA), written
from the ABI in guest/syscalls.py: exec (segments, populated regions, sp at the top of
the stack region), demand faults in demand regions, exit, getpid, sched_yield, __tfork,
__threxit, mmap (MAP_FIXED, MAP_POPULATE), errors as PSTATE.C + errno. Threads run
round-robin on one Unicorn instance with context save/restore; every loop is bounded."""
from __future__ import annotations

from unicorn import (UC_ARCH_ARM64, UC_HOOK_CODE, UC_HOOK_INTR, UC_HOOK_MEM_FETCH_UNMAPPED,
                     UC_HOOK_MEM_READ_UNMAPPED, UC_HOOK_MEM_WRITE_UNMAPPED, UC_MODE_ARM, Uc, UcError)
from unicorn.arm64_const import (UC_ARM64_REG_NZCV, UC_ARM64_REG_PC, UC_ARM64_REG_SP, UC_ARM64_REG_X0,
                                 UC_ARM64_REG_X1, UC_ARM64_REG_X2, UC_ARM64_REG_X3, UC_ARM64_REG_X8)

from guest.image import Image
from guest.syscalls import EAGAIN, EINVAL, ENOSYS, MAP_FIXED, MAP_POPULATE, Sys

PAGE = 4096


class MiniKernel:
    QUANTUM = 400
    SENTINEL = 0xFFFFFFFFFFF0

    def __init__(self, image: Image, count: bool = False, refuse_tfork: bool = False):
        self.image = image
        self.refuse_tfork = refuse_tfork
        uc = self.uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        self.mapped: set[int] = set()
        self.demand: list[tuple[int, int]] = []       # [start, end) entered on fault
        for s in image.segments:
            self._map(s.start, s.end)
            uc.mem_write(s.va, s.data)
        for r in image.regions:
            if r.populate:
                self._map(r.start, r.end)
            else:
                self.demand.append((r.start, r.end))
        uc.hook_add(UC_HOOK_INTR, self._intr)
        uc.hook_add(UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED | UC_HOOK_MEM_FETCH_UNMAPPED,
                    self._unmapped)
        self.insns = 0
        if count:
            uc.hook_add(UC_HOOK_CODE, self._count)
        self.event = None
        self.status = None
        self.fault = None
        self.faults: list[int] = []                   # pages entered on demand
        self.syscalls: list[int] = []
        self.next_tid = 100
        self.threads: list[list] = []                 # [tid, context]

    def _map(self, start: int, end: int) -> None:
        for va in range(start, end, PAGE):
            if va not in self.mapped:
                self.uc.mem_map(va, PAGE)
                self.mapped.add(va)

    def _count(self, uc, addr, size, ud):
        self.insns += 1

    def _unmapped(self, uc, access, addr, size, value, ud) -> bool:
        page = addr & ~(PAGE - 1)
        if any(lo <= addr < hi for lo, hi in self.demand) and page not in self.mapped:
            self._map(page, page + PAGE)
            self.faults.append(page)
            return True
        return False

    def _intr(self, uc, intno, _ud):
        self.event = (intno, uc.reg_read(UC_ARM64_REG_PC))
        uc.emu_stop()

    def _ret(self, value: int, error: bool = False):
        self.uc.reg_write(UC_ARM64_REG_X0, value)
        nzcv = self.uc.reg_read(UC_ARM64_REG_NZCV)
        self.uc.reg_write(UC_ARM64_REG_NZCV, nzcv | (1 << 29) if error else nzcv & ~(1 << 29))

    def _mmap(self) -> None:
        uc = self.uc
        addr, length, flags = (uc.reg_read(r) for r in (UC_ARM64_REG_X0, UC_ARM64_REG_X1, UC_ARM64_REG_X3))
        if not flags & MAP_FIXED or addr % PAGE or length == 0:
            return self._ret(EINVAL, error=True)
        end = addr + (length + PAGE - 1) // PAGE * PAGE
        if flags & MAP_POPULATE:
            self._map(addr, end)
        else:
            self.demand.append((addr, end))
        self._ret(addr)

    def run(self, max_quanta: int = 20000) -> int | None:
        uc = self.uc
        uc.reg_write(UC_ARM64_REG_PC, self.image.entry)
        if self.image.initial_sp is not None:
            uc.reg_write(UC_ARM64_REG_SP, self.image.initial_sp)
        self.threads = [[1, uc.context_save()]]
        cur = 0
        for _ in range(max_quanta):
            uc.context_restore(self.threads[cur][1])
            self.event = None
            try:
                uc.emu_start(uc.reg_read(UC_ARM64_REG_PC), self.SENTINEL, count=self.QUANTUM)
            except UcError as e:
                self.fault = (e.errno, uc.reg_read(UC_ARM64_REG_PC))
                return None
            switch = self.event is None
            if self.event is not None:
                intno, pc = self.event
                if intno != 2:
                    self.fault = ("intr", intno, pc)
                    return None
                num = uc.reg_read(UC_ARM64_REG_X8)
                self.syscalls.append(num)
                uc.reg_write(UC_ARM64_REG_PC, self.image.syscall_return(pc - 4))
                if num == Sys.EXIT:
                    self.status = uc.reg_read(UC_ARM64_REG_X0) & 0xFF
                    return self.status
                if num == Sys.GETPID:
                    self._ret(4242)
                elif num == Sys.SCHED_YIELD:
                    self._ret(0)
                    switch = True
                elif num == Sys.MMAP:
                    self._mmap()
                elif num == Sys.TFORK and self.refuse_tfork:
                    self._ret(EAGAIN, error=True)
                elif num == Sys.TFORK:
                    param = uc.reg_read(UC_ARM64_REG_X0)
                    _tcb, tidp, stack = (int.from_bytes(uc.mem_read(param + 8 * k, 8), "little") for k in range(3))
                    tid, self.next_tid = self.next_tid, self.next_tid + 1
                    uc.mem_write(tidp, tid.to_bytes(4, "little"))
                    sp = uc.reg_read(UC_ARM64_REG_SP)
                    self._ret(0)
                    uc.reg_write(UC_ARM64_REG_SP, stack)
                    self.threads.append([tid, uc.context_save()])
                    uc.reg_write(UC_ARM64_REG_SP, sp)
                    self._ret(tid)
                elif num == Sys.THREXIT:
                    notdead = uc.reg_read(UC_ARM64_REG_X0)
                    if notdead:
                        uc.mem_write(notdead, bytes(4))
                    del self.threads[cur]
                    if not self.threads:
                        self.status = 0
                        return 0
                    cur %= len(self.threads)
                    continue
                else:
                    self._ret(ENOSYS, error=True)
            self.threads[cur][1] = uc.context_save()
            if switch:
                cur = (cur + 1) % len(self.threads)
        return None

    def u64(self, va: int) -> int:
        return int.from_bytes(self.uc.mem_read(va, 8), "little")

    def reg(self, r: int) -> int:
        return self.uc.reg_read({0: UC_ARM64_REG_X0, 1: UC_ARM64_REG_X1, 2: UC_ARM64_REG_X2,
                                 3: UC_ARM64_REG_X3}[r])
