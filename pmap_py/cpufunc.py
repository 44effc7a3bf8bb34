"""TLB maintenance and TTBR helpers, as OpenBSD's arm64 cpufunc_asm.S (1.5/1.6).

Each TLBI helper is exactly

    dsb ishst ; tlbi <op>, x0 ; dsb ish ; isb

issued on the Cpu of the calling thread, so every instruction is counted in
``cpu.events`` and costed on that CPU's clock. ``xt`` is the raw operand the C code
passes: ``VA >> 12`` in bits [43:0] and the ASID in bits [63:48] (see
``emu.tlbi.tlbi_operand``); generation bits above the 16-bit ASID fall off the top,
as ``(uint64_t)pm->pm_asid << 48`` does in C.

On a core whose preset sets ``repeat_tlbi`` (Cortex-A76 erratum 1286807, Neoverse-N1
erratum 4193800 / CVE-2025-10263) every TLBI is issued as Linux's ``__tlbi()`` does
under ARM64_WORKAROUND_REPEAT_TLBI (arch/arm64/include/asm/tlbflush.h):
``tlbi <op>; dsb ish; tlbi <op>``, so each helper issues two TLBIs and three DSBs.
OpenBSD's own workaround (codepatch CPTAG_REPEAT_TLBI, cpufunc_asm.S 1.9) is assumed
to emit the same sequence.
"""
from __future__ import annotations

from emu.sysregs import SysReg
from emu.tlbi import TLBIOp

MASK64 = (1 << 64) - 1
TTBR_ASID_FIELD = 0xFFFF << 48


def tlbi(cpu, op: TLBIOp, xt: int) -> None:
    """One TLBI as the kernel emits it: repeated after a DSB ISH on affected cores."""
    cpu.tlbi(op, xt)
    if cpu.machine.core.repeat_tlbi:
        cpu.dsb("ish")
        cpu.tlbi(op, xt)


def tlb_flush_seq(cpu, op: TLBIOp, xt: int) -> None:
    """``dsb ishst ; tlbi ; dsb ish ; isb`` (the body of every cpufunc_asm.S helper)."""
    cpu.dsb("ishst")
    tlbi(cpu, op, xt & MASK64)
    cpu.dsb("ish")
    cpu.isb()


def cpu_tlb_flush(cpu) -> None:
    """TLBI VMALLE1IS: everything at EL1&0 on every CPU (ASID rollover, pmap_init)."""
    tlb_flush_seq(cpu, TLBIOp.VMALLE1IS, 0)


def cpu_tlb_flush_asid(cpu, xt: int) -> None:
    """TLBI VAE1IS: one VA in one ASID, all levels (walk cache included)."""
    tlb_flush_seq(cpu, TLBIOp.VAE1IS, xt)


def cpu_tlb_flush_all_asid(cpu, xt: int) -> None:
    """TLBI VAALE1IS: one VA in every ASID, last level only (kernel mappings)."""
    tlb_flush_seq(cpu, TLBIOp.VAALE1IS, xt)


def cpu_tlb_flush_asid_all(cpu, xt: int) -> None:
    """TLBI ASIDE1IS: every entry of one ASID."""
    tlb_flush_seq(cpu, TLBIOp.ASIDE1IS, xt)


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


def cpu_flush_bp(cpu) -> None:
    """ci_flush_bp() at the end of pmap_setttb: cpu_flush_bp_psci (a firmware SMC,
    SMCCC_ARCH_WORKAROUND_1) on cores without CSV2 that are not known safe
    (OpenBSD arm64 cpu.c, cpu_mitigate_spectre_v2); cpu_flush_bp_noop elsewhere."""
    if cpu.machine.core.ci_flush_bp == "cpu_flush_bp_psci":
        cpu.charge(cpu.cost.flush_bp_psci, "flush_bp_psci")
