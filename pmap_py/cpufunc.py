"""TLB maintenance and TTBR helpers, as OpenBSD's arm64 cpufunc_asm.S (1.5/1.6).

Each TLBI helper is exactly

    dsb ishst ; tlbi <op>, x0 ; dsb ish ; isb

issued on the Cpu of the calling thread, so every instruction is counted in
``cpu.events`` and costed on that CPU's clock. ``xt`` is the raw operand the C code
passes: ``VA >> 12`` in bits [43:0] and the ASID in bits [63:48] (see
``emu.tlbi.tlbi_operand``); generation bits above the 16-bit ASID fall off the top,
as ``(uint64_t)pm->pm_asid << 48`` does in C.
"""
from __future__ import annotations

from emu.sysregs import SysReg
from emu.tlbi import TLBIOp

MASK64 = (1 << 64) - 1
TTBR_ASID_FIELD = 0xFFFF << 48


def _flush(cpu, op: TLBIOp, xt: int) -> None:
    cpu.dsb("ishst")
    cpu.tlbi(op, xt & MASK64)
    cpu.dsb("ish")
    cpu.isb()


def cpu_tlb_flush(cpu) -> None:
    """TLBI VMALLE1IS: everything at EL1&0 on every CPU (ASID rollover, pmap_init)."""
    _flush(cpu, TLBIOp.VMALLE1IS, 0)


def cpu_tlb_flush_asid(cpu, xt: int) -> None:
    """TLBI VAE1IS: one VA in one ASID, all levels (walk cache included)."""
    _flush(cpu, TLBIOp.VAE1IS, xt)


def cpu_tlb_flush_all_asid(cpu, xt: int) -> None:
    """TLBI VAALE1IS: one VA in every ASID, last level only (kernel mappings)."""
    _flush(cpu, TLBIOp.VAALE1IS, xt)


def cpu_tlb_flush_asid_all(cpu, xt: int) -> None:
    """TLBI ASIDE1IS: every entry of one ASID."""
    _flush(cpu, TLBIOp.ASIDE1IS, xt)


def cpu_setttb(cpu, asid: int, ttbr0_pa: int) -> None:
    """``mrs x2, ttbr1; bfi x2, x0, #48, #16; msr ttbr1, x2; isb; msr ttbr0, x1; isb``.

    TTBR1 keeps its base (the kernel L1 while in the kernel); only its ASID field
    changes (low 16 bits of pm_asid: the generation is dropped by the BFI). TTBR0
    gets the bare table address.
    """
    ttbr1 = (cpu.mrs(SysReg.TTBR1_EL1) & ~TTBR_ASID_FIELD) | (asid & 0xFFFF) << 48
    cpu.msr(SysReg.TTBR1_EL1, ttbr1)
    cpu.isb()
    cpu.msr(SysReg.TTBR0_EL1, ttbr0_pa)
    cpu.isb()
