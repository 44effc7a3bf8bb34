"""The kernel model: processes on CPUs in simulated time.

One loop advances the CPU whose cycle clock is furthest behind, by one step: a guest
quantum (``cpu.run``) if its current proc is in user mode, one step of kernel code
(the proc's ``p_kstack`` generator) if it is in the kernel, or one pass of its idle
loop. The order is a heap keyed by ``(cycles, cpu index, seq)``, so a run is a pure
function of its configuration and seed. An idle CPU with nothing to run leaves the heap
until a wakeup puts a proc on its run queue (its clock then jumps to the waker's).

Scheduling follows kern_sched.c / sched_bsd.c in outline: per-CPU run queues,
sched_choosecpu (the proc's last CPU if idle, else an idle CPU, else the shortest
queue, ties broken by the seeded rng), roundrobin preemption when the time slice is
used up, sched_yield, sleep/wakeup on wait channels, an idle proc per CPU on the
kernel pmap, work stealing by idle CPUs. Every switch goes through pmap_setttb for the
incoming proc (cpuswitch.S 1.4), so it writes TTBR0/TTBR1 and issues ISBs.

Every loop has a budget (guest instructions, kernel steps, cycles, faults): a run
that exceeds one ends with ``RunEnded`` and a reason, never a hang.
"""
from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Generator

from emu.cpu import StopKind
from emu.trace import Ev
from emu.walker import Access

from .. import uvm as uvm_mod
from ..pmap import PROT_EXEC, PROT_READ, PROT_WRITE
from ..uvm import EFAULT, Uvm
from . import exit as kexit
from . import md, syscalls
from .lock import KernelLock
from .proc import PFlag, Proc, Process, PStat, PsFlag
from .steps import PREEMPT, STEP, Preempt, Sleep, Step, SwitchExit, Yield, fork_return

THREAD_PID_OFFSET = 100000           # sys/proc.h: thread ids start here
SIGKILL, SIGSEGV, SIGILL, SIGBUS, SIGTRAP = 9, 11, 4, 10, 5


class RunEnded(Exception):
    """The run stopped before every process was reaped; str() says why."""


@dataclass
class KernConfig:
    quantum: int = 2000              # guest instructions per cpu.run call
    slice_cycles: int = 200_000      # roundrobin time slice
    max_insns: int = 200_000_000     # guest instructions, all CPUs
    max_steps: int = 20_000_000      # kernel steps, all CPUs
    max_cycles: int = 50_000_000_000  # any CPU's clock
    max_faults: int = 100_000        # faults taken by guest code, all threads
    maxthread: int = 256             # threads per process (__tfork beyond: EAGAIN)
    jobs: int = 0                    # processes the shell runs at once (0: all)
    # Threads leave through exit1 without the kernel lock (the unwinding of
    # single_thread_check and __threxit), as an unlocked exit1 would: then nothing holds
    # the main thread back between a sibling's ps_exitcnt-- and its pmap_deactivate, the
    # window pmap_purge's spin is for. False (OpenBSD today): the sibling takes the lock in
    # proc_suspend_check_locked (kern_sig.c 1.365: KERNEL_LOCK(); exit1(...)) or as a locked
    # syscall, keeps it through pmap_deactivate until sched_toidle releases it (kern_sched.c
    # 1.113 sched_exit: KERNEL_ASSERT_LOCKED), and the main thread woken from "thrdeath"
    # must take it back in mi_switch (sched_bsd.c 1.104) before it reaches uvm_purge.
    unlocked_exit: bool = False
    # Interrupts (clock, IPIs) taken between kernel steps: with probability irq_prob a
    # step is followed by a handler of irq_cycles (a seeded uniform range). Off by
    # default (the counts tests derive by hand assume none); schedule exploration turns
    # it on so that short windows (a sibling between ps_exitcnt-- and pmap_deactivate)
    # sometimes stretch, as they do on real machines.
    irq_prob: float = 0.0
    irq_cycles: tuple = (500, 5000)


@dataclass(eq=False)
class CpuInfo:
    """struct cpu_info / schedstate_percpu."""
    index: int
    cpu: object
    ci_idleproc: Proc = None
    ci_curproc: Proc = None
    spc_runq: list = field(default_factory=list)
    spc_deadproc: list = field(default_factory=list)
    slice_start: int = 0
    in_heap: bool = False
    uc_owner: Proc | None = None      # whose user registers this CPU's Unicorn holds
    idle_cycles: int = 0

    @property
    def idle(self) -> bool:
        return self.ci_curproc is self.ci_idleproc and not self.spc_runq


class Kernel:
    def __init__(self, machine, ps, strategy, config: KernConfig | None = None, rng: random.Random | None = None):
        self.machine = machine
        self.ps = ps
        self.strategy = strategy
        self.cfg = config or KernConfig()
        self.rng = rng or random.Random(f"{machine.seed}/sched")
        self.uvm = Uvm(ps, self.curcpu, self.ktrace)
        self.kernel_lock = KernelLock(self)
        self.cpus = [CpuInfo(i, c) for i, c in enumerate(machine.cpus)]
        self._heap: list = []
        self._seq = 0
        self._next_pid = 1
        self._next_tid = THREAD_PID_OFFSET
        self.processes: dict[int, Process] = {}
        self.sleepq: dict[object, list[Proc]] = {}     # wait channel -> sleepers
        self.deadproc: list[Proc] = []
        self.output: list[tuple[int, bytes]] = []
        self.steps = 0
        self.insns = 0
        self.faults = 0
        self.switches = 0
        self.teardown_cycles = 0
        self.finished = False
        self.stepping: int | None = None  # the CPU whose step runs now (who frees a frame)
        self.shell_done = False
        self.live_threads = 0             # workload threads not yet reaped
        self.window: dict = {}            # exit window: events and cycles at start and end
        self.workload: list[Process] = []
        kproc = self._new_process("swapper", None, kernel=True)
        self.kernel_process = kproc
        for ci in self.cpus:
            ci.ci_idleproc = self._new_proc(kproc, f"idle{ci.index}", PFlag.P_SYSTEM, main=False)
            ci.ci_idleproc.p_cpu = ci.index
            ci.ci_idleproc.p_stat = PStat.SONPROC
            ci.ci_curproc = ci.ci_idleproc
        self.reaper = self.kthread_create("reaper", kexit.reaper(self))
        self.shell = self._new_process("sh", None, kernel=True)
        self.shell_proc: Proc | None = None
        self._embryos: list[Proc] = []
        self._loop(until_idle=True)                     # boot: the reaper starts and sleeps

    # ------------------------------------------------------------------ creation
    def _new_process(self, comm: str, parent: Process | None, kernel: bool = False) -> Process:
        pr = Process(self._next_pid, comm, ps_pptr=parent)
        self._next_pid += 1
        if kernel:
            pr.ps_flags |= PsFlag.PS_SYSTEM
        if parent is not None:
            parent.ps_children.append(pr)
        self.processes[pr.ps_pid] = pr
        return pr

    def _new_proc(self, pr: Process, name: str, flags: PFlag, main: bool) -> Proc:
        tid = self._next_tid
        self._next_tid += 1
        p = Proc(tid, pr, name, flags | (PFlag.P_NONE if main else PFlag.P_THREAD))
        if pr.ps_pptr is not None:                       # a workload process's thread
            self.live_threads += 1
        if main:
            pr.ps_mainproc = p
        pr.ps_threads.append(p)
        pr.ps_allthreads.append(p)
        pr.ps_threadcnt += 1
        return p

    def kthread_create(self, name: str, body: Generator, process: Process | None = None) -> Proc:
        """A kernel thread (kthread_create): runs `body` on the kernel pmap, never in user mode."""
        pr = process or self.kernel_process
        p = self._new_proc(pr, name, PFlag.P_SYSTEM, main=process is not None and pr.ps_mainproc is None)
        p.p_kstack = body
        self.setrunnable(p, 0)
        return p

    def spawn(self, prog, populate: dict[str, bool] | None = None, name: str | None = None,
              extra: tuple = ()) -> Process:
        """fork + exec of a guest program by the shell (not simulated step by step):
        a new process with a fresh vmspace holding prog's segments (populated) and
        regions (populated as declared, or as `populate[region]` says), a main thread
        with its u-area, activated (cpu_fork); it becomes runnable when run() starts,
        once the shell sleeps in wait4."""
        cpu = self.cpus[0].cpu
        pr = self._new_process(name or str(getattr(prog, "name", "guest")).rsplit("/", 1)[-1].split(".")[0],
                               self.shell)
        pr.ps_program = prog
        vm = self.uvm.uvmspace_alloc(cpu)
        pr.ps_vmspace = vm
        pr.ps_pmap = vm.pmap
        populate = populate or {}
        for seg in prog.segments:
            self._map(pr, vm, seg.start, seg.end - seg.start, seg.prot, seg.name, True, seg.page)
        for region in prog.regions:
            self._map(pr, vm, region.start, region.size, region.prot, region.name,
                      populate.get(region.name, region.populate))
        for rname, start, npages, prot in extra:        # more populated pages than the image declares
            self._map(pr, vm, start, npages * uvm_mod.PAGE_SIZE, prot, rname, True)
        p = self._new_proc(pr, f"{pr.ps_comm}/{pr.ps_pid}", PFlag.P_NONE, main=True)
        p.p_uarea = self.uvm.uvm_uarea_alloc(cpu)
        self.ps.pmap_activate(cpu, vm.pmap, curproc=False)          # cpu_fork
        p.p_md.ret = {"pc": prog.entry, **{f"x{i}": 0 for i in range(31)}}   # exec: clean registers
        p.p_kstack = fork_return()
        self.workload.append(pr)
        self._embryos.append(p)                          # SIDL until the shell waits
        return pr

    def _map(self, pr, vm, start, size, prot, name, populate, contents=None) -> None:
        va = self.uvm.uvm_map(self.cpus[0].cpu, vm, start, size, prot, name, populate, contents)
        if va < 0:
            raise MemoryError(f"cannot map {name} of {pr}: "
                              f"{'out of memory' if va == -uvm_mod.ENOMEM else 'bad region'}")

    # ------------------------------------------------------------------ helpers
    def curcpu(self, p: Proc):
        return self.machine.cpus[p.p_cpu]

    def pmap_of(self, p: Proc):
        vm = p.p_p.ps_vmspace
        return vm.pmap if vm is not None else self.ps.pmap_kernel()

    def ktrace(self, p: Proc, op: str, **f) -> None:
        trace = self.machine.trace
        if trace is not None:
            cpu = self.curcpu(p)
            trace.add(cpu.cycles, cpu.index, Ev.KERNEL, op=op, proc=p.p_name, **f)

    def teardown(self, p: Proc, gen: Generator) -> Generator:
        """Run `gen` with its cycles counted as address-space teardown."""
        self.ktrace(p, "teardown", kernel_lock=str(self.kernel_lock.holder))
        p.p_teardown = True
        try:
            yield from gen
        finally:
            p.p_teardown = False

    def spin(self, p: Proc) -> Generator:
        """One busy-wait iteration (CPU_BUSY_CYCLE). Nothing can change before another
        CPU runs, so the spinner's clock moves to the earliest other running CPU's
        (as many iterations as fit), which keeps spins cheap for the host."""
        cpu = self.curcpu(p)
        it = max(1, cpu.cost.spin_wait_iteration)
        others = [c.cpu.cycles for c in self.cpus if c.in_heap and c.cpu is not cpu]
        n = 1
        if others:
            n = max(1, -(-(min(others) - cpu.cycles) // it) + 1)
        cpu.charge(n * it)
        cpu.events["spin_wait"] += n
        yield STEP

    def tsleep(self, p: Proc, chan, wmesg: str, intr: bool = False) -> Generator:
        """tsleep(): the kernel lock is released while asleep (mi_switch's
        __mp_release_all) and taken back after. Returns True if interrupted
        (PCATCH sleep ended by single_thread_set)."""
        held = self.kernel_lock.release_all(p)
        self.ktrace(p, "sleep", wmesg=wmesg)
        yield Sleep(chan, wmesg, intr)
        interrupted = p.p_wmesg == "interrupted"
        p.p_wmesg = ""
        if held:
            yield from self.kernel_lock.acquire(p, held)
        return interrupted

    def wakeup(self, chan, waker: Proc | None = None) -> None:
        now = self.curcpu(waker).cycles if waker is not None else 0
        for q in self.sleepq.pop(chan, []):
            q.p_wchan = None
            self.setrunnable(q, now)

    def unsleep(self, q: Proc, now: int) -> None:
        """Interrupt a PCATCH sleep (single_thread_set on an exiting process)."""
        lst = self.sleepq.get(q.p_wchan, [])
        if q in lst:
            lst.remove(q)
        q.p_wchan = None
        q.p_wmesg = "interrupted"
        self.setrunnable(q, now)

    def signotify(self, q: Proc) -> None:
        """Post an AST: a proc running user code on another CPU enters the kernel at
        its next quantum boundary (the IPI's effect)."""
        q.p_ast = True

    # ------------------------------------------------------------------ scheduler
    def sched_choosecpu(self, p: Proc) -> CpuInfo:
        last = self.cpus[p.p_cpu]
        if last.idle:
            return last
        idle = [ci for ci in self.cpus if ci.idle]
        if idle:
            return self.rng.choice(idle)
        load = [len(ci.spc_runq) + 1 for ci in self.cpus]
        best = min(load)
        return self.rng.choice([ci for ci, n in zip(self.cpus, load) if n == best])

    def setrunnable(self, p: Proc, now: int) -> None:
        """setrunnable + setrunqueue on the CPU sched_choosecpu picks; an idle CPU is
        woken (its clock catches up with the waker's)."""
        p.p_stat = PStat.SRUN
        ci = self.sched_choosecpu(p)
        ci.spc_runq.append(p)
        self._wake_cpu(ci, now)

    def _wake_cpu(self, ci: CpuInfo, now: int) -> None:
        if ci.in_heap:
            return
        cpu = ci.cpu
        if now > cpu.cycles:
            gap = now - cpu.cycles
            ci.idle_cycles += gap
            if cpu.spec_rate:
                cpu.speculate(elapsed=gap)
            cpu.cycles = now
        self._push(ci)

    def _push(self, ci: CpuInfo) -> None:
        ci.in_heap = True
        self._seq += 1
        heapq.heappush(self._heap, (ci.cpu.cycles, ci.index, self._seq))

    def cpu_switchto(self, ci: CpuInfo, old: Proc, new: Proc) -> None:
        """mi_switch's cpu_switchto: save the old proc's user registers, charge the
        switch, pmap_setttb for the incoming proc, make it curproc."""
        cpu = ci.cpu
        if ci.uc_owner is old and old.p_stat is not PStat.SDEAD:
            old.p_md.ctx = md.save_context(cpu)
            old.p_md.live_on = ci.index
        cpu.charge(cpu.cost.context_switch, "context_switches")
        trace = self.machine.trace
        if trace is not None:
            trace.add(cpu.cycles, ci.index, Ev.KERNEL, op="cpu_switchto", proc=old.p_name, to=new.p_name)
        self.ps.pmap_setttb(cpu, self.pmap_of(new))
        self.switches += 1
        new.p_stat = PStat.SONPROC
        new.p_cpu = ci.index
        ci.ci_curproc = new
        ci.slice_start = cpu.cycles

    def mi_switch(self, ci: CpuInfo, p: Proc) -> None:
        nxt = ci.spc_runq.pop(0) if ci.spc_runq else ci.ci_idleproc
        if nxt is not p:
            self.cpu_switchto(ci, p, nxt)
        else:
            p.p_stat = PStat.SONPROC

    def _steal(self, ci: CpuInfo) -> Proc | None:
        """sched_steal_proc: an idle CPU takes a waiting proc from the longest queue."""
        victims = [o for o in self.cpus if o is not ci and o.spc_runq]
        if not victims:
            return None
        most = max(len(o.spc_runq) for o in victims)
        victim = self.rng.choice([o for o in victims if len(o.spc_runq) == most])
        return victim.spc_runq.pop(0)

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        """Start the shell (the parent, waiting in wait4) and run until it has reaped
        every workload process, or a budget ends the run (RunEnded)."""
        self.shell_proc = self.kthread_create("sh", self._shell_main(), process=self.shell)
        self._loop(until_idle=True)                     # the shell forks, then sleeps in wait4
        jobs = self.cfg.jobs or len(self._embryos)
        for p in self._embryos[:jobs]:
            self.setrunnable(p, 0)
        del self._embryos[:jobs]
        self._loop()

    def _loop(self, until_idle: bool = False) -> None:
        cfg = self.cfg
        heap = self._heap
        for ci in self.cpus:
            if not ci.in_heap and ci.spc_runq:
                self._push(ci)
        while not self.finished:
            if not heap:
                if until_idle:
                    return
                raise RunEnded("deadlock: no CPU has anything to run; " + self.describe_sleepers())
            cycles, idx, _ = heapq.heappop(heap)
            ci = self.cpus[idx]
            self.stepping = idx
            if cycles != ci.cpu.cycles:            # its clock moved since it was queued
                self._seq += 1
                heapq.heappush(heap, (ci.cpu.cycles, idx, self._seq))
                continue
            ci.in_heap = False
            self._step(ci)
            if self.steps > cfg.max_steps:
                raise RunEnded(f"kernel step budget exceeded ({cfg.max_steps} steps); " + self.describe_sleepers())
            if self.insns > cfg.max_insns:
                raise RunEnded(f"guest instruction budget exceeded ({cfg.max_insns}); " + self.describe_running())
            if ci.cpu.cycles > cfg.max_cycles:
                raise RunEnded(f"cycle budget exceeded on cpu{idx} ({cfg.max_cycles}); " + self.describe_running())
            if not ci.in_heap and not (ci.ci_curproc is ci.ci_idleproc and not ci.spc_runq
                                       and not ci.spc_deadproc):
                self._push(ci)

    def describe_sleepers(self) -> str:
        asleep = [f"{q} on {q.p_wmesg or '?'}" for lst in self.sleepq.values() for q in lst
                  if q.p_p is not self.kernel_process and q is not self.shell_proc]
        return "sleeping: " + (", ".join(asleep) if asleep else "none")

    def describe_running(self) -> str:
        parts = []
        for ci in self.cpus:
            p = ci.ci_curproc
            if p is not ci.ci_idleproc:
                where = "kernel" if p.p_kstack is not None else f"user pc {ci.cpu.pc:#x}"
                parts.append(f"cpu{ci.index}: {p} in {where}")
        return "; ".join(parts) or "every CPU idle"

    def _step(self, ci: CpuInfo) -> None:
        p = ci.ci_curproc
        cpu = ci.cpu
        before = cpu.cycles
        if p is ci.ci_idleproc:
            self._idle_step(ci)
            ci.idle_cycles += cpu.cycles - before
            return
        if p.p_kstack is None:
            self._user_step(ci, p)
            return
        teardown = p.p_teardown
        self._kernel_step(ci, p)
        if self.cfg.irq_prob and self.rng.random() < self.cfg.irq_prob:
            lo, hi = self.cfg.irq_cycles
            cpu.charge(cpu.cost.exception_entry + self.rng.randint(lo, hi) + cpu.cost.exception_return,
                       "interrupts")
        delta = cpu.cycles - before
        p.p_tally.sys += delta
        if teardown or p.p_teardown:
            self.teardown_cycles += delta
        if cpu.spec_rate:
            cpu.speculate()

    def _idle_step(self, ci: CpuInfo) -> None:
        """sched_idle: exit2 for procs that died here, then run what is queued (or
        steal); with nothing to do the CPU leaves the heap."""
        idle = ci.ci_idleproc
        while ci.spc_deadproc:
            kexit.exit2(self, ci.spc_deadproc.pop(0), idle)
        nxt = ci.spc_runq.pop(0) if ci.spc_runq else self._steal(ci)
        if nxt is not None:
            self.cpu_switchto(ci, idle, nxt)

    def _user_step(self, ci: CpuInfo, p: Proc) -> None:
        cpu = ci.cpu
        cfg = self.cfg
        if ci.uc_owner is not p or p.p_md.live_on != ci.index or p.p_md.ret or cpu.el != 0:
            raise AssertionError(f"{p} on cpu{ci.index} is not set up for user mode (no userret)")
        t0 = cpu.cycles
        stop = cpu.run(min(cfg.quantum, max(1, cfg.max_insns - self.insns + 1)))
        p.p_tally.user += cpu.cycles - t0
        p.p_insns += stop.executed
        self.insns += stop.executed
        trace = self.machine.trace
        if trace is not None:
            trace.add(t0, ci.index, Ev.USER, proc=p.p_name, insns=stop.executed, pc=stop.pc)
        kind = stop.kind
        if kind is StopKind.QUANTUM:
            if p.p_ast or (cpu.cycles - ci.slice_start >= cfg.slice_cycles and ci.spc_runq):
                self.kernel_entry(ci, p, "interrupt")
                p.p_kstack = self.ast(p)
            return
        if kind is StopKind.SVC:
            self.kernel_entry(ci, p, "syscall")
            p.p_kstack = syscalls.syscall(self, p, stop.pc - 4)
            return
        if kind is StopKind.FAULT:
            self.kernel_entry(ci, p, "fault")
            p.p_kstack = self.trap_fault(p, stop)
            return
        self.kernel_entry(ci, p, "fault")
        sig = {StopKind.UNDEF: SIGILL, StopKind.BRK: SIGTRAP, StopKind.BUS_ERROR: SIGBUS}.get(kind, SIGSEGV)
        p.p_kstack = kexit.sigexit(self, p, sig, f"{p} killed by signal {sig}: {stop}")

    def kernel_entry(self, ci: CpuInfo, p: Proc, why: str) -> None:
        """Exception from EL0: the trampoline's vector entry (TTBR1 -> kernel table with
        the even ASID, ISB), state save; the NZCV flags go to the trapframe."""
        cpu = ci.cpu
        p.p_md.nzcv = md.nzcv(cpu)
        ci.uc_owner = p
        p.p_md.live_on = ci.index
        cost = cpu.cost
        cpu.charge(cost.exception_entry + (cost.syscall_entry if why == "syscall" else
                                           cost.fault_entry if why == "fault" else 0), "el0_entries")
        if self.strategy.trampoline:
            self.ps.pmap_kernel_entry(cpu)
        else:
            cpu.set_el(1)

    def userret_regs(self, ci: CpuInfo, p: Proc) -> None:
        """Load p's user registers into this CPU if they are not there (the saved
        context carries the kernel's PSTATE and another CPU's TTBRs: the caller drops to
        EL0 afterwards, and this CPU's system registers are put back), then apply what
        the kernel left for them (syscall results, a new thread's start state)."""
        cpu = ci.cpu
        if ci.uc_owner is not p or p.p_md.live_on != ci.index:
            if p.p_md.ctx is not None:
                md.restore_context(cpu, p.p_md.ctx)
            ci.uc_owner = p
            p.p_md.live_on = ci.index
        ret = p.p_md.ret
        if ret:
            for key, value in ret.items():
                if key == "pc":
                    cpu.pc = value
                elif key == "sp":
                    md.set_sp_el0(cpu, value)
                elif key == "tpidr":
                    md.set_tpidr_el0(cpu, value)
                elif key == "carry":
                    p.p_md.nzcv = (p.p_md.nzcv | md.NZCV_C) if value else (p.p_md.nzcv & ~md.NZCV_C)
                else:
                    cpu.set_reg(int(key[1:]), value)
            p.p_md.ret = {}

    def userret(self, ci: CpuInfo, p: Proc) -> None:
        """Return to user mode: the user registers in place, then ERET through the
        trampoline (TTBR1 -> trampoline table with ASID|ASID_USER, ISB) to EL0, with
        the trapframe's NZCV (PSTATE.C for a syscall error)."""
        cpu = ci.cpu
        cpu.charge(cpu.cost.exception_return, "el0_returns")
        self.userret_regs(ci, p)
        if self.strategy.trampoline:
            self.ps.pmap_userret(cpu)
        else:
            cpu.set_el(0)
        md.set_nzcv(cpu, p.p_md.nzcv)

    def _kernel_step(self, ci: CpuInfo, p: Proc) -> None:
        self.steps += 1
        try:
            req = p.p_kstack.send(None)
        except StopIteration:
            p.p_kstack = None
            if p.p_flag & PFlag.P_SYSTEM:
                raise AssertionError(f"kernel thread {p} returned")
            # userret: a pending single-thread exit or AST is handled before going back
            if p.p_ast or p.p_p.ps_flags & PsFlag.PS_SINGLEEXIT:
                p.p_kstack = self.ast(p)
                return
            self.userret(ci, p)
            return
        if req is STEP or req.__class__ is Step:
            return
        if req.__class__ is Preempt:
            if ci.spc_runq and ci.cpu.cycles - ci.slice_start >= self.cfg.slice_cycles:
                p.p_stat = PStat.SRUN
                ci.spc_runq.append(p)
                self._unlock_for_switch(p)
                self.mi_switch(ci, p)
            return
        if req.__class__ is Yield:
            if ci.spc_runq:
                p.p_stat = PStat.SRUN
                ci.spc_runq.append(p)
                self._unlock_for_switch(p)
                self.mi_switch(ci, p)
            return
        if req.__class__ is Sleep:
            p.p_stat = PStat.SSLEEP
            p.p_wchan = req.chan
            p.p_wmesg = req.wmesg
            p.p_sleep_intr = req.intr
            self.sleepq.setdefault(req.chan, []).append(p)
            self.mi_switch(ci, p)
            return
        if req.__class__ is SwitchExit:
            ci.spc_deadproc.append(p)
            self.cpu_switchto(ci, p, ci.ci_idleproc)  # sched_toidle: cpu_switchto(NULL, idle)
            return
        raise AssertionError(f"{p} yielded {req!r}")

    def _unlock_for_switch(self, p: Proc) -> None:
        """mi_switch drops every kernel-lock hold and takes them back when the proc runs
        again (sched_bsd.c 1.104: __mp_release_all, __mp_acquire_count): a holder preempted
        in sched_pause must not leave the lock to spinners that then own its CPU."""
        held = self.kernel_lock.release_all(p)
        if held:
            p.p_kstack = self._relock(p, held, p.p_kstack)

    def _relock(self, p: Proc, held: int, gen: Generator) -> Generator:
        yield from self.kernel_lock.acquire(p, held)
        return (yield from gen)                       # resumes gen where it yielded

    # ------------------------------------------------------------------ traps
    def ast(self, p: Proc) -> Generator:
        """ast()/userret(): a single-thread exit unwinds here (single_thread_check ->
        KERNEL_LOCK; exit1(EXIT_THREAD_NOCHECK)); an expired slice preempts."""
        p.p_ast = False
        pr = p.p_p
        if pr.ps_flags & PsFlag.PS_SINGLEEXIT and pr.ps_single is not p:
            if not self.cfg.unlocked_exit:
                yield from self.kernel_lock.acquire(p)
            yield from kexit.exit1(self, p, 0, 0, kexit.EXIT_THREAD_NOCHECK)
            return
        yield PREEMPT

    def trap_fault(self, p: Proc, stop) -> Generator:
        """data_abort / instruction abort from EL0: pmap_fault_fixup (referenced/modified
        emulation), else uvm_fault; an address no entry maps (or a protection it
        forbids) kills the process with SIGSEGV."""
        fault = stop.fault
        cpu = self.curcpu(p)
        self.faults += 1
        p.p_faults += 1
        p.p_last_fault = (stop.pc, fault.va)
        if self.faults > self.cfg.max_faults:
            worst = max((q for pr in self.workload for q in pr.ps_threads), key=lambda q: q.p_faults, default=p)
            pc, va = worst.p_last_fault or (0, 0)
            ttbr0 = self.machine.cpus[worst.p_cpu].ttbr0
            table = "the kernel's zero page" if ttbr0 == self.ps.zero_page else f"{ttbr0:#x}"
            raise RunEnded(f"fault budget exceeded ({self.cfg.max_faults} faults): {worst} faulted "
                           f"{worst.p_faults} times, last at pc {pc:#x} va {va:#x}, its TTBR0 = {table}")
        checker = getattr(self.machine, "checker", None)
        if checker is not None:
            checker.note_fault(cpu, p.p_name, stop.pc, fault.va, fault.fsc, p.p_insns)
        ftype = {Access.READ: PROT_READ, Access.WRITE: PROT_WRITE, Access.FETCH: PROT_EXEC}[fault.access]
        vm = p.p_p.ps_vmspace
        pm = vm.pmap
        self.ktrace(p, "trap", va=fault.va, pc=stop.pc, fault=fault.kind.value)
        if not self.ps.pmap_fault_fixup(cpu, pm, fault.va & ~0xFFF, ftype):
            err = self.uvm.uvm_fault(cpu, vm, fault.va, ftype)
            if err:
                what = {EFAULT: "no mapping", uvm_mod.EACCES: "protection", uvm_mod.ENOMEM: "out of memory"}[err]
                sig = SIGKILL if err == uvm_mod.ENOMEM else SIGSEGV
                yield STEP
                yield from kexit.sigexit(self, p, sig, f"{p} killed by signal {sig} ({what}): "
                                                        f"{fault} at pc {stop.pc:#x}")
                return
        p.p_md.ret = {"pc": stop.pc}
        yield STEP

    # ------------------------------------------------------------------ the shell
    def _shell_main(self) -> Generator:
        """The parent of every workload process: wait4 until all are reaped."""
        p = self.shell_proc
        while True:
            pid, _ = yield from kexit.dowait4(self, p, -1)
            if pid < 0:
                break
            if self._embryos:                           # `make -j`: start the next one
                self.setrunnable(self._embryos.pop(0), self.curcpu(p).cycles)
        self.shell_done = True
        self._maybe_finish()
        yield Sleep(self, "done")

    def reaped(self, r: Proc) -> None:
        """The reaper finished a workload thread: the last one closes the exit window."""
        self.live_threads -= 1
        if self.live_threads == 0:
            self.window_mark("end", r)
            self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.shell_done and self.live_threads == 0:
            self.finished = True

    # ------------------------------------------------------------------ exit window
    def snapshot(self) -> Counter:
        """The counts the exit window compares (the runner may install a fuller one)."""
        total = Counter()
        for c in self.machine.cpus:
            total.update(c.events)
        return total

    def window_mark(self, which: str, p: Proc) -> None:
        """Exit window: from the first exit syscall of a workload process to the reaper's
        completion for the last one."""
        if which == "start" and "start" in self.window:
            return
        self.window[which] = (self.snapshot(), self.curcpu(p).cycles)
