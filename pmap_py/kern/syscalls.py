"""System calls over SVC (numbers in guest/syscalls.py; ABI of OpenBSD/arm64's
syscall.c: number in x8, arguments in x0..x5, result in x0, PSTATE.C set and the
errno in x0 on error, resume past the ``dsb nsh; isb`` that follows the svc).

Each handler is a generator (it may sleep or yield) returning ``(value, errno)``.
Bad guest input gets what OpenBSD returns: ENOSYS for an unknown number, EFAULT for
a pointer no entry maps, EINVAL for bad lengths, flags or alignment, EAGAIN past the
thread limit, ENOMEM when physical memory cannot hold a populated mapping.
"""
from __future__ import annotations

from typing import Generator

from emu.frames import OutOfFrames
from emu.physmem import PAGE_SIZE
from guest.syscalls import (MAP_ANON, MAP_FIXED, MAP_FLAGMASK, MAP_POPULATE, TFORK_PARAM_SIZE,
                            Sys)

from ..pmap import PROT_MASK, PROT_READ, PROT_WRITE, VM_MAXUSER_ADDRESS
from ..uvm import EAGAIN, EBADF, EFAULT, EINVAL, ENOMEM, ENOSYS
from . import exit as kexit
from . import md
from .proc import EXIT_NORMAL, EXIT_THREAD, PFlag, PsFlag
from .steps import STEP, YIELD, fork_return

MAP_KNOWN = MAP_FLAGMASK | MAP_POPULATE   # sys/mman.h, plus armmu's populate extension
WRITE_MAX = 1 << 20           # bytes one write() may copy (armmu's bound)
NOTDEAD_SIZE = 4              # sizeof(pid_t)


def syscall(k, p, svc_va: int) -> Generator:
    """The syscall path: fetch the arguments, dispatch, set up the return."""
    cpu = k.curcpu(p)
    code = cpu.reg(8)
    args = [cpu.reg(i) for i in range(6)]
    prog = p.p_p.ps_program
    resume = prog.syscall_return(svc_va) if prog is not None else svc_va + 4
    try:
        name = Sys(code).openbsd_name
    except ValueError:
        name = None
    k.ktrace(p, "syscall", name=name or f"#{code}", x0=args[0])
    handler = HANDLERS.get(code)
    if handler is None:
        value, err = -1, ENOSYS
    else:
        value, err = yield from handler(k, p, args, svc_va, resume)
    if err:
        p.p_md.ret = {"pc": resume, "x0": err, "carry": True}
    else:
        p.p_md.ret = {"pc": resume, "x0": value & ((1 << 64) - 1), "carry": False}


def _s64(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def copyin(k, p, va: int, n: int) -> bytes | None:
    """Read user memory through the process's map (faulting pages in); None = EFAULT."""
    out = bytearray()
    end = va + n
    while va < end:
        pa = _user_pa(k, p, va, PROT_READ)
        if pa is None:
            return None
        chunk = min(end - va, PAGE_SIZE - (va & (PAGE_SIZE - 1)))
        out += k.machine.mem.read(pa, chunk)
        va += chunk
    return bytes(out)


def copyout(k, p, va: int, data: bytes) -> bool:
    end = va + len(data)
    off = 0
    while va < end:
        pa = _user_pa(k, p, va, PROT_WRITE)
        if pa is None:
            return False
        chunk = min(end - va, PAGE_SIZE - (va & (PAGE_SIZE - 1)))
        k.machine.mem.write(pa, data[off:off + chunk])
        va += chunk
        off += chunk
    return True


def _user_pa(k, p, va: int, ftype: int) -> int | None:
    if not 0 <= va < VM_MAXUSER_ADDRESS:
        return None
    vm = p.p_p.ps_vmspace
    e = vm.vm_map.lookup(va)
    if e is None or ftype & ~e.protection:
        return None
    pa = k.ps.pmap_extract(vm.pmap, va)
    if pa is None:
        if k.uvm.uvm_fault(k.curcpu(p), vm, va, ftype):
            return None
        pa = k.ps.pmap_extract(vm.pmap, va)
    return pa


# ---------------------------------------------------------------- handlers
def sys_exit(k, p, args, svc_va, resume) -> Generator:
    kexit.exit_called(k, p, process=True)          # exit latency counts the lock wait too
    yield from k.kernel_lock.acquire(p)
    yield from kexit.exit1(k, p, args[0] & 0xFF, 0, EXIT_NORMAL)
    return 0, 0


def sys___threxit(k, p, args, svc_va, resume) -> Generator:
    notdead = args[0]
    kexit.exit_called(k, p, process=False)
    if not k.cfg.unlocked_exit:
        yield from k.kernel_lock.acquire(p)
    if notdead and not copyout(k, p, notdead, bytes(NOTDEAD_SIZE)):
        yield from kexit.sigexit(k, p, 11, f"{p} killed by signal 11: __threxit's notdead {notdead:#x} "
                                           f"is not writable")
    yield from kexit.exit1(k, p, 0, 0, EXIT_THREAD)
    return 0, 0


def sys___tfork(k, p, args, svc_va, resume) -> Generator:
    """struct __tfork { tf_tcb, tf_tid, tf_stack }: a new thread sharing the vmspace,
    starting at the same return address with x0 = 0, sp = tf_stack, TPIDR = tf_tcb."""
    param, psize = args[0], args[1]
    if psize < TFORK_PARAM_SIZE:
        return -1, EINVAL
    raw = copyin(k, p, param, TFORK_PARAM_SIZE)
    if raw is None:
        return -1, EFAULT
    tcb, tidp, stack = (int.from_bytes(raw[i:i + 8], "little") for i in (0, 8, 16))
    pr = p.p_p
    if pr.ps_flags & (PsFlag.PS_EXITING | PsFlag.PS_SINGLEEXIT) or pr.ps_threadcnt >= k.cfg.maxthread:
        return -1, EAGAIN
    cpu = k.curcpu(p)
    try:
        uarea = k.uvm.uvm_uarea_alloc(cpu)
    except OutOfFrames:
        return -1, ENOMEM
    q = k._new_proc(pr, f"{pr.ps_comm}/{pr.ps_pid}.{pr.ps_threadcnt}", PFlag.P_NONE, main=False)
    q.p_uarea = uarea
    q.p_cpu = p.p_cpu
    q.p_md.ctx = md.save_context(cpu)          # the parent's user registers (still live here)
    q.p_md.live_on = None
    q.p_md.nzcv = p.p_md.nzcv & ~md.NZCV_C
    q.p_md.ret = {"pc": resume, "x0": 0, "sp": stack, "tpidr": tcb}
    if tidp:
        copyout(k, p, tidp, q.p_tid.to_bytes(4, "little"))    # a bad tf_tid is ignored, as OpenBSD does
    k.ps.pmap_activate(cpu, k.pmap_of(p), curproc=False)      # cpu_fork: pm_active++
    q.p_kstack = fork_return()
    k.ktrace(p, "__tfork", tid=q.p_tid)
    k.setrunnable(q, cpu.cycles)
    yield STEP
    return q.p_tid, 0


def sys_mmap(k, p, args, svc_va, resume) -> Generator:
    addr, length, prot, flags, fd = args[0], args[1], args[2], args[3], _s64(args[4])
    if prot & ~PROT_MASK or flags & ~MAP_KNOWN or not flags & MAP_ANON or fd != -1:
        return -1, EINVAL
    if length == 0 or length > VM_MAXUSER_ADDRESS:
        return -1, EINVAL
    size = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    vm = p.p_p.ps_vmspace
    if flags & MAP_FIXED:
        if addr % PAGE_SIZE:
            return -1, EINVAL
        yield from k.uvm.uvm_unmap(p, vm, addr, addr + size)
        start = addr
    else:
        start = addr if addr and addr % PAGE_SIZE == 0 and vm.vm_map.free_range(addr, addr + size) else None
    va = k.uvm.uvm_map(k.curcpu(p), vm, start, size, prot, "mmap", bool(flags & MAP_POPULATE))
    yield STEP
    if va < 0:
        return -1, -va
    return va, 0


def sys_munmap(k, p, args, svc_va, resume) -> Generator:
    addr, length = args[0], args[1]
    if addr % PAGE_SIZE or length == 0 or addr + length > VM_MAXUSER_ADDRESS:
        return -1, EINVAL
    size = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    yield from k.uvm.uvm_unmap(p, p.p_p.ps_vmspace, addr, addr + size)
    return 0, 0


def sys_mprotect(k, p, args, svc_va, resume) -> Generator:
    addr, length, prot = args[0], args[1], args[2]
    if addr % PAGE_SIZE or prot & ~PROT_MASK or addr + length > VM_MAXUSER_ADDRESS:
        return -1, EINVAL
    size = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    yield from k.uvm.uvm_map_protect(p, p.p_p.ps_vmspace, addr, addr + size, prot)
    return 0, 0


def sys_sched_yield(k, p, args, svc_va, resume) -> Generator:
    yield YIELD
    return 0, 0


def sys_getpid(k, p, args, svc_va, resume) -> Generator:
    return p.p_p.ps_pid, 0
    yield


def sys_write(k, p, args, svc_va, resume) -> Generator:
    fd, buf, n = _s64(args[0]), args[1], args[2]
    if fd not in (1, 2):
        return -1, EBADF
    if n > WRITE_MAX:
        return -1, EINVAL
    data = copyin(k, p, buf, n) if n else b""
    if data is None:
        return -1, EFAULT
    p.p_p.ps_output.append(data)
    k.output.append((p.p_p.ps_pid, data))
    k.ktrace(p, "write", fd=fd, text=data[:64].decode("utf-8", "replace"))
    yield STEP
    return n, 0


def sys_wait4(k, p, args, svc_va, resume) -> Generator:
    pid = (args[0] & 0xFFFFFFFF) - ((args[0] & 0x80000000) << 1)      # pid_t is 32-bit
    status = args[1]
    rpid, st = yield from kexit.dowait4(k, p, -1 if pid in (-1, 0) else pid)
    if rpid < 0:
        return -1, -rpid
    if status and not copyout(k, p, status, st.to_bytes(4, "little")):
        return -1, EFAULT
    return rpid, 0


HANDLERS = {
    Sys.EXIT: sys_exit,
    Sys.THREXIT: sys___threxit,
    Sys.TFORK: sys___tfork,
    Sys.MMAP: sys_mmap,
    Sys.MUNMAP: sys_munmap,
    Sys.MPROTECT: sys_mprotect,
    Sys.SCHED_YIELD: sys_sched_yield,
    Sys.GETPID: sys_getpid,
    Sys.WRITE: sys_write,
    Sys.WAIT4: sys_wait4,
}
