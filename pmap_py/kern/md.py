"""The machine-dependent register half of a context switch and a trap (what arm64's
trap entry, cpuswitch.S and the trapframe do): save and restore a thread's user
registers, PSTATE's NZCV flags, SP_EL0 and TPIDR_EL0.

The Cpu offers registers one at a time; a thread's whole user context is moved as
one Unicorn context (a memcpy, ~4 us, against ~120 us for the 70 registers one by
one). A context also carries the CPU's system registers and PSTATE of the moment it
was saved, so a restore puts this CPU's TTBRs/TCR back (the model's are the truth)
and the caller drops to EL0 afterwards.
"""
from __future__ import annotations

from unicorn import arm64_const as A

NZCV_C = 1 << 29                     # PSTATE.C: set on a syscall error


def save_context(cpu):
    return cpu.uc.context_save()


def restore_context(cpu, ctx) -> None:
    cpu.uc.context_restore(ctx)
    cpu._sync_sysregs()              # NOTE: Cpu's own resync of TTBRn/TCR/MAIR into Unicorn


def nzcv(cpu) -> int:
    return cpu.uc.reg_read(A.UC_ARM64_REG_NZCV)


def set_nzcv(cpu, value: int) -> None:
    cpu.uc.reg_write(A.UC_ARM64_REG_NZCV, value)


def set_sp_el0(cpu, value: int) -> None:
    cpu.uc.reg_write(A.UC_ARM64_REG_SP_EL0, value)


def set_tpidr_el0(cpu, value: int) -> None:
    cpu.uc.reg_write(A.UC_ARM64_REG_TPIDR_EL0, value)
