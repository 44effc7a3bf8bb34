"""exit1, single_thread_set, sched_exit, exit2, the reaper and wait4
(kern_exit.c 1.252, kern_sig.c 1.365, kern_sched.c 1.113).

Order of exit1 as modelled (numbers as in OpenBSD's exit1):
 1. P_WEXIT; with siblings, EXIT_NORMAL runs single_thread_set(SINGLE_EXIT): the
    others are told to unwind (an AST for one running user code on another CPU, a
    PCATCH sleep is interrupted) and the caller sleeps "suspend" until each of them
    has counted itself out (ps_suspendcnt == 0).
 2. The first EXIT_NORMAL exiter sets PS_EXITING and the exit status.
 3. The proc leaves ps_threads: ps_threadcnt--, ps_exitcnt++ (and, if it was asked to
    unwind, ps_suspendcnt--, waking the single-threading thread at 0). The main
    thread sleeps "thrdeath" until ps_threadcnt + ps_exitcnt == 1: it is always the
    last one and does the process-wide work.
 5. Main thread only: the strategy's exit1_purge (OpenBSD 1.252: release the kernel
    lock, uvm_purge, KERNEL_LOCK).
 7. p_stat = SDEAD: no more sleeping.
 9. Other threads: the strategy's thread_exit, then ps_exitcnt-- (waking the main
    thread when it is the only one left) -- before their own pmap_deactivate, which
    is why pmap_purge has to spin once exit1 runs unlocked (KernConfig.unlocked_exit);
    under the big lock the woken main thread cannot run before sched_toidle.
10. cpu_exit / pmap_deactivate (the strategy's cpu_exit), then sched_exit: onto
    this CPU's spc_deadproc and a switch to idle, whose exit2 hands the proc to the
    reaper.
"""
from __future__ import annotations

from typing import Generator

from .proc import (EXIT_NORMAL, EXIT_THREAD, EXIT_THREAD_NOCHECK, PFlag, Proc, PStat, PsFlag)
from .steps import SCHED_EXIT, STEP

ECHILD, EINTR = 10, 4

__all__ = ["EXIT_NORMAL", "EXIT_THREAD", "EXIT_THREAD_NOCHECK", "exit1", "single_thread_set",
           "sched_exit", "exit2", "reaper", "dowait4", "sigexit"]


def _workload(k, pr) -> bool:
    return pr in k.workload


def exit_called(k, p: Proc, process: bool) -> None:
    """An exit syscall (or a fatal signal) of a workload thread: the exit window opens
    at the first one; a process's exit latency starts at its first exit()."""
    pr = p.p_p
    if _workload(k, pr):
        k.window_mark("start", p)
        if process and pr.ps_exit_cycle is None:
            pr.ps_exit_cycle = k.curcpu(p).cycles


def exit1(k, p: Proc, xexit: int, xsig: int, flags: int) -> Generator:
    """Entered with the kernel lock held (unless KernConfig.unlocked_exit, for threads);
    never returns."""
    pr = p.p_p
    p.p_flag |= PFlag.P_WEXIT
    exit_called(k, p, flags == EXIT_NORMAL)
    k.ktrace(p, "exit1", flags={EXIT_NORMAL: "EXIT_NORMAL", EXIT_THREAD: "EXIT_THREAD",
                                EXIT_THREAD_NOCHECK: "EXIT_THREAD_NOCHECK"}[flags], main=p.is_main)
    if pr.ps_threadcnt <= 1:                              # !P_HASSIBLING(p)
        flags = EXIT_NORMAL
    elif flags == EXIT_NORMAL:
        if pr.ps_single is not None and pr.ps_single is not p:
            flags = EXIT_THREAD_NOCHECK                   # someone else is exiting the process
        else:
            yield from single_thread_set(k, p)
    if flags == EXIT_NORMAL and not pr.ps_flags & PsFlag.PS_EXITING:
        pr.ps_flags |= PsFlag.PS_EXITING
        pr.ps_xexit, pr.ps_xsig = xexit, xsig
        if pr.ps_exit_cycle is None:
            pr.ps_exit_cycle = k.curcpu(p).cycles
    # 3. unlink from the active threads
    pr.ps_threads.remove(p)
    pr.ps_threadcnt -= 1
    pr.ps_exitcnt += 1
    if p.p_flag & PFlag.P_SUSPSINGLE:                      # process_suspend_signal
        p.p_flag &= ~PFlag.P_SUSPSINGLE
        pr.ps_suspendcnt -= 1
        if pr.ps_suspendcnt == 0:
            k.wakeup(("suspend", pr.ps_pid), p)
    if p.is_main:
        while pr.ps_threadcnt + pr.ps_exitcnt > 1:
            yield from k.tsleep(p, ("thrdeath", pr.ps_pid), "thrdeath")
    yield STEP
    # 5. the process-wide work
    if p.is_main and pr.ps_vmspace is not None:
        yield from k.strategy.exit1_purge(k, p)
    # 7. no longer allowed to sleep
    p.p_stat = PStat.SDEAD
    k.ktrace(p, "SDEAD")
    # 9. a thread detaches from its process
    if not p.is_main:
        yield from k.strategy.thread_exit(k, p)
        cpu = k.curcpu(p)
        cpu.charge(cpu.cost.lock_acquire, "lock_acquire")        # ps_mtx
        pr.ps_exitcnt -= 1
        if pr.ps_threadcnt + pr.ps_exitcnt == 1:
            k.wakeup(("thrdeath", pr.ps_pid), p)
        yield STEP                                  # the main thread may see it from here on
    # 10. cpu_exit / pmap_deactivate, sched_exit
    if pr.ps_vmspace is not None:
        yield from k.strategy.cpu_exit(k, p)
    yield from sched_exit(k, p)


def single_thread_set(k, p: Proc) -> Generator:
    """SINGLE_EXIT: every other thread must unwind and count itself out; sleep
    "suspend" until ps_suspendcnt reaches 0."""
    pr = p.p_p
    now = k.curcpu(p).cycles
    k.ktrace(p, "single_thread_set", threads=pr.ps_threadcnt)
    pr.ps_single = p
    pr.ps_flags |= PsFlag.PS_SINGLEEXIT
    for q in list(pr.ps_threads):
        if q is p or q.p_flag & PFlag.P_WEXIT:
            continue
        q.p_flag |= PFlag.P_SUSPSINGLE
        pr.ps_suspendcnt += 1
        if q.p_stat is PStat.SSLEEP and q.p_sleep_intr:
            k.unsleep(q, now)
        elif q.p_stat in (PStat.SONPROC, PStat.SRUN):
            k.signotify(q)
    while pr.ps_suspendcnt > 0:
        yield from k.tsleep(p, ("suspend", pr.ps_pid), "suspend")


def sched_exit(k, p: Proc) -> Generator:
    """Onto spc_deadproc, release every kernel-lock hold (sched_toidle), switch to
    idle for good."""
    k.ktrace(p, "sched_exit")
    k.kernel_lock.release_all(p)
    yield SCHED_EXIT
    raise AssertionError(f"{p} ran after sched_exit")


def exit2(k, p: Proc, idle: Proc) -> None:
    """In the idle loop: fold the thread's time into its process (tuagg_add_process),
    put it on deadproc, wake the reaper."""
    pr = p.p_p
    pr.ps_tally.user += p.p_tally.user
    pr.ps_tally.sys += p.p_tally.sys
    k.deadproc.append(p)
    k.wakeup("deadproc", idle)


def reaper(k) -> Generator:
    """The reaper kernel thread: for each dead proc, uvm_uarea_free (pmap_kremove: one
    VAALE1IS per page), then proc_free for a thread, or for a main thread uvm_exit
    (the strategy's) and, under the kernel lock, PS_ZOMBIE and a wakeup of the parent."""
    r = k.reaper
    locked = k.strategy.reaper_kernel_lock
    while True:
        while not k.deadproc:
            yield from k.tsleep(r, "deadproc", "reaper")
        p = k.deadproc.pop()                                 # LIST_FIRST of a LIST_INSERT_HEAD list
        k.ktrace(r, "reaper", dead=p.p_name)
        if locked:
            yield from k.kernel_lock.acquire(r)
        k.ktrace(r, "uvm_uarea_free", dead=p.p_name, va=p.p_uarea)
        k.uvm.uvm_uarea_free(k.curcpu(r), p.p_uarea)
        yield STEP
        if p.is_main:
            pr = p.p_p
            if pr.ps_vmspace is not None:
                k.ktrace(r, "uvm_exit", process=str(pr))
                yield from k.strategy.uvm_exit(k, r, pr)
            if not locked:
                yield from k.kernel_lock.acquire(r)
            pr.ps_flags |= PsFlag.PS_ZOMBIE
            pr.ps_zombie_cycle = k.curcpu(r).cycles
            k.ktrace(r, "zombie", process=str(pr))
            k.wakeup(("wait", pr.ps_pptr.ps_pid), r)
            k.kernel_lock.release(r)
        elif locked:
            k.kernel_lock.release(r)
        if _workload(k, p.p_p):
            k.reaped(r)
        yield STEP


def dowait4(k, q: Proc, pid: int) -> Generator:
    """wait4: reap a PS_ZOMBIE child (pid -1: any). Returns (pid, status) or
    (-errno, 0): ECHILD with no such child, EINTR when the sleep is interrupted."""
    pr = q.p_p
    while True:
        kids = [c for c in pr.ps_children if pid in (-1, c.ps_pid)]
        if not kids:
            return -ECHILD, 0
        for c in kids:
            if c.ps_flags & PsFlag.PS_ZOMBIE:
                pr.ps_children.remove(c)                     # proc_finish_wait -> process_zap
                k.ktrace(q, "wait4", reaped=str(c))
                return c.ps_pid, (c.ps_xexit & 0xFF) << 8 | (c.ps_xsig & 0x7F)
        if (yield from k.tsleep(q, ("wait", pr.ps_pid), "wait", intr=True)):
            return -EINTR, 0


def sigexit(k, p: Proc, sig: int, reason: str) -> Generator:
    """A fatal signal: the process exits with it (exit1 via sigexit -> exit1(EXIT_NORMAL))."""
    pr = p.p_p
    if not pr.ps_kill_reason:
        pr.ps_kill_reason = reason
    k.ktrace(p, "sigexit", sig=sig, reason=reason)
    exit_called(k, p, process=True)
    yield from k.kernel_lock.acquire(p)
    yield from exit1(k, p, 0, sig, EXIT_NORMAL)
