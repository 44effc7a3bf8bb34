"""struct process and struct proc (sys/sys/proc.h), with OpenBSD's names.

A process owns the vmspace and the thread list; a proc is one thread: its state
(p_stat), its CPU (p_cpu), its kernel stack (``p_kstack``: the generator running its
kernel code, None while it runs user code) and its saved user context.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntFlag
from typing import Generator


class PStat(Enum):
    """p_stat."""
    SIDL = "idl"
    SRUN = "run"
    SSLEEP = "sleep"
    SSTOP = "stop"
    SONPROC = "onproc"
    SDEAD = "dead"


class PFlag(IntFlag):
    """p_flag."""
    P_NONE = 0
    P_INKTR = 0x1
    P_SYSTEM = 0x200          # kernel thread (idle, reaper, the shell's waiting proc)
    P_SUSPSINGLE = 0x80000    # suspended by single_thread_set
    P_WEXIT = 0x2000          # in exit1
    P_THREAD = 0x4000000      # not the main thread of its process


class PsFlag(IntFlag):
    """ps_flags."""
    PS_NONE = 0
    PS_EXITING = 0x8
    PS_SINGLEEXIT = 0x800000
    PS_NOZOMBIE = 0x20000
    PS_ZOMBIE = 0x40000
    PS_SYSTEM = 0x10000


# exit1() flags (sys/sys/proc.h)
EXIT_NORMAL = 0x00000001
EXIT_THREAD = 0x00000002
EXIT_THREAD_NOCHECK = 0x00000003


@dataclass(eq=False)
class Tally:
    """Cycles a thread spent, split as the kernel's tuagg does: user and system."""
    user: int = 0
    sys: int = 0


@dataclass(eq=False)
class MdState:
    """The machine-dependent half (struct mdproc / the trapframe): the Unicorn context
    holding the user registers, the NZCV flags saved at kernel entry, and what the
    kernel puts into the registers at the next return to user mode."""
    ctx: object = None                  # unicorn context (user registers)
    live_on: int | None = None          # index of the CPU whose Unicorn holds them
    nzcv: int = 0
    ret: dict = field(default_factory=dict)   # "pc", "x0", "x1", "sp", "tpidr", "carry"


@dataclass(eq=False)
class Proc:
    """struct proc: one thread."""
    p_tid: int
    p_p: "Process"
    p_name: str
    p_flag: PFlag = PFlag.P_NONE
    p_stat: PStat = PStat.SIDL
    p_cpu: int = 0                       # CPU it last ran on (ci index)
    p_wchan: object = None
    p_wmesg: str = ""
    p_sleep_intr: bool = False           # PCATCH sleep: single_thread_set may interrupt it
    p_kstack: Generator | None = None    # kernel code it is running, None in user mode
    p_ast: bool = False                  # an AST is pending (signotify)
    p_md: MdState = field(default_factory=MdState)
    p_uarea: int | None = None           # kernel VA of its u-area (kernel stack + PCB)
    p_tally: Tally = field(default_factory=Tally)
    p_teardown: bool = False             # its kernel code is tearing an address space down
    p_insns: int = 0                     # user instructions retired
    p_faults: int = 0
    p_last_fault: tuple | None = None    # (pc, va) of its last fault

    @property
    def is_main(self) -> bool:
        return not self.p_flag & PFlag.P_THREAD

    def __str__(self) -> str:
        return self.p_name

    def __repr__(self) -> str:
        return f"Proc({self.p_name}, {self.p_stat.name}, cpu{self.p_cpu})"


@dataclass(eq=False)
class Process:
    """struct process."""
    ps_pid: int
    ps_comm: str
    ps_vmspace: object = None            # uvm.Vmspace (None for kernel processes)
    ps_pmap: object = None               # its pmap, kept for reports after uvm_exit
    ps_mainproc: Proc | None = None
    ps_threads: list[Proc] = field(default_factory=list)
    ps_allthreads: list[Proc] = field(default_factory=list)   # every thread it had, for reports
    ps_threadcnt: int = 0
    ps_exitcnt: int = 0
    ps_suspendcnt: int = 0               # siblings single_thread_set still waits for
    ps_single: Proc | None = None
    ps_flags: PsFlag = PsFlag.PS_NONE
    ps_pptr: "Process | None" = None
    ps_children: list["Process"] = field(default_factory=list)
    ps_xexit: int = 0
    ps_xsig: int = 0
    ps_kill_reason: str = ""             # why the kernel killed it (fatal fault, out of memory)
    ps_output: list[bytes] = field(default_factory=list)   # what write() printed
    ps_tally: Tally = field(default_factory=Tally)          # folded in from dead threads
    ps_exit_cycle: int | None = None     # cycle of the first exit syscall
    ps_zombie_cycle: int | None = None   # cycle the reaper made it a zombie
    ps_program: object = None            # the guest Program it runs

    def __str__(self) -> str:
        return f"{self.ps_comm}[{self.ps_pid}]"
