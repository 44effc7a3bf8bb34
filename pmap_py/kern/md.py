"""The machine-dependent register half of a context switch and a trap (what arm64's
trap entry, cpuswitch.S and the trapframe do): save and restore a thread's user
registers, PSTATE's NZCV flags, SP_EL0 and TPIDR_EL0.

The hardware layer's Cpu does the register work (Cpu.save_context/restore_context:
a thread's whole user state as one Unicorn context, restored with this CPU's own
EL, SP_EL1 and system registers); this module names the kernel's uses of it.
"""
from __future__ import annotations

NZCV_C = 1 << 29                     # PSTATE.C: set on a syscall error


def save_context(cpu):
    return cpu.save_context()


def restore_context(cpu, ctx) -> None:
    cpu.restore_context(ctx)


def nzcv(cpu) -> int:
    return cpu.nzcv


def set_nzcv(cpu, value: int) -> None:
    cpu.nzcv = value


def set_sp_el0(cpu, value: int) -> None:
    cpu.sp_el0 = value


def set_tpidr_el0(cpu, value: int) -> None:
    cpu.tpidr_el0 = value
