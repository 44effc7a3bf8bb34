"""QEMU's own AArch64 stage-1 walker (Unicorn 2.1.4 = QEMU 5.0, UC_TLB_CPU mode) as a test oracle.

How the oracle gets answers out of QEMU (docs/unicorn.md §QEMU's walker as an oracle):

* Read / write at EL0 and EL1: the AT instructions (AT S1E1R, S1E1W, S1E0R, S1E0W) followed by
  ISB; MRS Xt, PAR_EL1. The problem: AT only walks when SCTLR_EL1.M = 1, and at EL1 the stub's own
  instruction fetch would then go through the random tables under test. Solution: the stub runs at
  **EL3**. AT S1E1x/S1E0x executed at EL3 walk the (non-secure, SCR_EL3.NS = 1) EL1&0 regime with
  SCTLR_EL1/TCR_EL1/TTBRn_EL1, while EL3's own fetches and loads/stores use the EL3 regime, whose
  MMU (SCTLR_EL3.M) is off: the stub sees physical memory 1:1. So TTBR0 and TTBR1 stay fully random
  and no table has to be reserved. One emu_start runs a loop over a batch of VAs (4 ATs each) and
  stores the PAR values into a scratch array: about 1 us per AT.
* Instruction fetch at EL0 and EL1: AT cannot check execute permission, so the oracle asks QEMU's
  real TLB-fill path through `uc_vmem_translate(uc, va, UC_PROT_EXEC, &pa)` (exported by
  libunicorn 2.1.4, not wrapped by the binding; called via ctypes). It translates for the CPU's
  current mmu_idx, so PSTATE is switched to EL1h or EL0t first (PSTATE write + one CP_REG write,
  which rebuilds QEMU's cached hflags, docs/unicorn.md §EL0), and Unicorn's TLB is flushed before
  every probe (it consults the TLB first). It only says pass/fail (+ PA): the fault status of a
  fetch fault is derived from the AT results of the same VA and EL (the walk is the same; see
  `fetch_result`).

Scratch memory: the stub, the VA array and the PAR array live in a separate 64 KiB host buffer
mapped at SCRATCH_PA (far above any PhysMem, below the A72's 44-bit PARange so the MMU-off EL3
fetch is legal). Page tables under test must never point into [SCRATCH_PA, SCRATCH_PA+SCRATCH_SIZE)
(the stub writes there while QEMU walks). Everything else — including PAs outside `mem` — is fair
game; note that in Unicorn a walk that reads unmapped PA reads 0 (no external abort).

Register setup: SCR_EL3.RW = 1 (else QEMU decodes EL1's tables in AArch32 format) and NS = 1,
HCR_EL2.RW = 1 (EL1 is AArch64; VM/TGE/E2H = 0: no stage 2), MAIR_EL1 = a fixed value with eight
distinct attribute bytes, PSTATE = EL3h.

Instruction words are hand-encoded and checked with capstone by tests/emu/test_walker_qemu.py
(keystone mis-encodes some system instructions, docs/unicorn.md §Pitfalls).
"""
from __future__ import annotations

import ctypes
import mmap
import struct

import numpy as np
from unicorn import (UC_ARCH_ARM64, UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_HOOK_INTR, UC_MODE_ARM,
                     UC_PROT_ALL, UC_PROT_EXEC, UC_TLB_CPU, Uc, UcError)
from unicorn.arm64_const import (UC_ARM64_REG_CP_REG, UC_ARM64_REG_PC, UC_ARM64_REG_PSTATE,
                                 UC_ARM64_REG_X0, UC_ARM64_REG_X9, UC_ARM64_REG_X10)
from unicorn.unicorn_py3.unicorn import uclib

from emu.physmem import PhysMem
from emu.sysregs import SCTLR_M, SysReg

# ---------------------------------------------------------------------------------------------
# Hand-encoded A64 instructions (checked against capstone in the test file)


def enc_at(op2: int, rt: int) -> int:
    """AT <op>, Xt = SYS #0, C7, C8, #op2, Xt. op2: 0 S1E1R, 1 S1E1W, 2 S1E0R, 3 S1E0W."""
    return 0xD5087800 | op2 << 5 | rt


ENC_ISB = 0xD5033FDF
ENC_NOP = 0xD503201F


def enc_mrs_par_el1(rt: int) -> int:
    """MRS Xt, PAR_EL1 (op0=3, op1=0, CRn=7, CRm=4, op2=0)."""
    return 0xD5387400 | rt


def enc_ldr_post(rt: int, rn: int, imm: int) -> int:
    """LDR Xt, [Xn], #imm (post-index)."""
    return 0xF8400400 | (imm & 0x1FF) << 12 | rn << 5 | rt


def enc_str_post(rt: int, rn: int, imm: int) -> int:
    """STR Xt, [Xn], #imm (post-index)."""
    return 0xF8000400 | (imm & 0x1FF) << 12 | rn << 5 | rt


def enc_subs_imm(rd: int, rn: int, imm: int) -> int:
    """SUBS Xd, Xn, #imm."""
    return 0xF1000000 | (imm & 0xFFF) << 10 | rn << 5 | rd


def enc_b_ne(offset: int) -> int:
    """B.NE <pc + offset>."""
    return 0x54000001 | ((offset >> 2) & 0x7FFFF) << 5


# the order of the four ATs per VA in the stub and in the results
AT_OPS = (("S1E1R", 1, 0), ("S1E1W", 1, 1), ("S1E0R", 0, 0), ("S1E0W", 0, 1))   # (name, el, write)


def stub_words() -> list[int]:
    """x0 = VA array, x9 = PAR array, x10 = count; loops over the VAs, 4 ATs each."""
    words = [enc_ldr_post(1, 0, 8)]                                  # ldr x1, [x0], #8
    for op2 in range(4):
        words += [enc_at(op2, 1), ENC_ISB, enc_mrs_par_el1(2), enc_str_post(2, 9, 8)]
    words.append(enc_subs_imm(10, 10, 1))                            # subs x10, x10, #1
    words.append(enc_b_ne(-4 * len(words)))                          # b.ne loop
    words.append(ENC_NOP)                                            # `until`: never executed
    return words


# ---------------------------------------------------------------------------------------------

SCRATCH_PA = 0xF00_0000_0000
SCRATCH_SIZE = 0x10000
_CODE_OFF, _VA_OFF, _PAR_OFF = 0x0, 0x1000, 0x4000
MAX_BATCH = (_PAR_OFF - _VA_OFF) // 8                      # 1536 VAs per emu_start

# eight distinct, valid MAIR attributes (attrindx 0..7): Normal WB, NC, WT, Device-nGnRnE, ...
MAIR_VALUE = int.from_bytes(bytes([0xFF, 0x44, 0xBB, 0x00, 0x04, 0x08, 0x0C, 0xEE]), "little")

_SCR_EL3 = (1, 1, 3, 6, 0)           # CP_REG tuples are (crn, crm, op0, op1, op2)
_HCR_EL2 = (1, 1, 3, 4, 0)
_TPIDR_EL0 = (13, 0, 3, 3, 2)
_SCR_RW, _SCR_NS, _HCR_RW = 1 << 10, 1 << 0, 1 << 31
PSTATE_EL3H, PSTATE_EL1H, PSTATE_EL0T = 0x3CD, 0x3C5, 0x3C0

_vmem_translate = uclib.uc_vmem_translate
_vmem_translate.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                            ctypes.POINTER(ctypes.c_uint64)]
_vmem_translate.restype = ctypes.c_int

PAR_F = 1


class OracleError(Exception):
    """QEMU did something the oracle does not expect (an exception during the AT stub, ...)."""


def decode_par(par: int, va: int) -> tuple:
    """('ok', pa) or ('fault', fsc) from a 64-bit-format PAR_EL1 value."""
    if par & PAR_F:
        return ("fault", (par >> 1) & 0x3F)
    return ("ok", (par & 0xFFFF_FFFF_F000) | (va & 0xFFF))


class QemuOracle:
    """One Unicorn (QEMU 5.0) CPU in UC_TLB_CPU mode over the same physical memory as `mem`."""

    def __init__(self, mem: PhysMem):
        if mem.size > SCRATCH_PA:
            raise ValueError("physical memory overlaps the oracle's scratch window")
        self.mem = mem
        uc = self.uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        uc.ctl_set_page_size(4096)                      # must come first (docs/unicorn.md §Setup)
        uc.ctl_set_tlb_mode(UC_TLB_CPU)
        uc.mem_map_ptr(0, mem.size, UC_PROT_ALL, mem.address)
        # scratch: keep a reference, Unicorn does not (docs/unicorn.md §Setup)
        self._scratch_map = mmap.mmap(-1, SCRATCH_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.scratch = np.frombuffer(self._scratch_map, dtype=np.uint8)
        self._s64 = self.scratch.view(np.uint64)
        uc.mem_map_ptr(SCRATCH_PA, SCRATCH_SIZE, UC_PROT_ALL, self.scratch.ctypes.data)
        code = b"".join(struct.pack("<I", w) for w in stub_words())
        self.scratch[_CODE_OFF:_CODE_OFF + len(code)] = np.frombuffer(code, np.uint8)
        self._stub = SCRATCH_PA + _CODE_OFF
        self._until = self._stub + len(code) - 4

        self._cp(_SCR_EL3, self._rd(_SCR_EL3) | _SCR_RW | _SCR_NS)
        self._cp(_HCR_EL2, _HCR_RW)
        self._cp(SysReg.MAIR_EL1.cp_reg, MAIR_VALUE)
        self._sctlr_reset = self._rd(SysReg.SCTLR_EL1.cp_reg) & ~SCTLR_M
        self._set_el(PSTATE_EL3H)
        self.intr: list = []
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        self.regs = None
        self.at_runs = 0
        self.probes = 0

    # -- registers ---------------------------------------------------------------------------
    def _cp(self, reg: tuple, value: int) -> None:
        self.uc.reg_write(UC_ARM64_REG_CP_REG, reg + (value,))

    def _rd(self, reg: tuple) -> int:
        return self.uc.reg_read(UC_ARM64_REG_CP_REG, reg)

    def _set_el(self, pstate: int) -> None:
        self.uc.reg_write(UC_ARM64_REG_PSTATE, pstate)
        self._cp(_TPIDR_EL0, 0)                         # any CP_REG write rebuilds hflags (docs/unicorn.md §EL0)

    def _on_intr(self, uc, intno, _ud):
        self.intr.append((intno, uc.reg_read(UC_ARM64_REG_PC)))
        uc.emu_stop()

    def _flush_tlb(self) -> None:
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    def set_regime(self, ttbr0: int, ttbr1: int, tcr: int, sctlr: int = SCTLR_M) -> None:
        """Program TCR/TTBR0/TTBR1/SCTLR_EL1 (M and WXN taken from `sctlr`) and flush the TLB."""
        regs = (ttbr0, ttbr1, tcr, sctlr)
        if regs == self.regs:
            return
        self._cp(SysReg.TCR_EL1.cp_reg, tcr)
        self._cp(SysReg.TTBR0_EL1.cp_reg, ttbr0)
        self._cp(SysReg.TTBR1_EL1.cp_reg, ttbr1)
        self._cp(SysReg.SCTLR_EL1.cp_reg, self._sctlr_reset | (sctlr & ((1 << 19) | SCTLR_M)))
        self._flush_tlb()
        self.regs = regs

    # -- AT ----------------------------------------------------------------------------------
    def at_batch(self, vas) -> list[tuple[int, int, int, int]]:
        """Raw PAR_EL1 after AT S1E1R, S1E1W, S1E0R, S1E0W for every VA (see AT_OPS)."""
        vas = [v & 0xFFFF_FFFF_FFFF_FFFF for v in vas]
        out = []
        for i in range(0, len(vas), MAX_BATCH):
            chunk = vas[i:i + MAX_BATCH]
            n = len(chunk)
            self._s64[_VA_OFF // 8:_VA_OFF // 8 + n] = np.array(chunk, dtype=np.uint64)
            self._s64[_PAR_OFF // 8:_PAR_OFF // 8 + 4 * n] = 0xDEAD_BEEF_DEAD_BEEF
            uc = self.uc
            uc.reg_write(UC_ARM64_REG_X0, SCRATCH_PA + _VA_OFF)
            uc.reg_write(UC_ARM64_REG_X9, SCRATCH_PA + _PAR_OFF)
            uc.reg_write(UC_ARM64_REG_X10, n)
            self.intr.clear()
            try:
                uc.emu_start(self._stub, self._until)
            except UcError as e:
                raise OracleError(f"AT stub failed: {e}; interrupts {self.intr}") from e
            pc = uc.reg_read(UC_ARM64_REG_PC)
            if self.intr or pc != self._until:
                raise OracleError(f"AT stub stopped at {pc:#x} (interrupts {self.intr}) for VAs {chunk}")
            self.at_runs += 1
            pars = self._s64[_PAR_OFF // 8:_PAR_OFF // 8 + 4 * n].tolist()
            out.extend(tuple(pars[4 * j:4 * j + 4]) for j in range(n))
        return out

    # -- fetch -------------------------------------------------------------------------------
    def fetch_probe(self, vas, el: int) -> list:
        """PA (or None on a fault) of an instruction fetch from each VA at EL0/EL1, by
        uc_vmem_translate(UC_PROT_EXEC) = QEMU's TLB-fill walk for the current mmu_idx."""
        self._set_el(PSTATE_EL1H if el == 1 else PSTATE_EL0T)
        try:
            out = []
            pa = ctypes.c_uint64()
            h = self.uc._uch
            for va in vas:
                self._flush_tlb()
                r = _vmem_translate(h, va & 0xFFFF_FFFF_FFFF_FFFF, UC_PROT_EXEC, ctypes.byref(pa))
                out.append(pa.value if r == 0 else None)
            self.probes += len(out)
            return out
        finally:
            self._set_el(PSTATE_EL3H)

    def probe(self, va: int, prot: int, el: int):
        """uc_vmem_translate for any UC_PROT_* at EL0/EL1 (cross-check of the AT path)."""
        self._set_el(PSTATE_EL1H if el == 1 else PSTATE_EL0T)
        try:
            self._flush_tlb()
            pa = ctypes.c_uint64()
            r = _vmem_translate(self.uc._uch, va & 0xFFFF_FFFF_FFFF_FFFF, prot, ctypes.byref(pa))
            self.probes += 1
            return pa.value if r == 0 else None
        finally:
            self._set_el(PSTATE_EL3H)

    # -- one query ---------------------------------------------------------------------------
    def query(self, vas, ttbr0: int, ttbr1: int, tcr: int, sctlr: int = SCTLR_M) -> list[dict]:
        """For each VA: {(access, el): ('ok', pa) | ('fault', fsc)} for access in 0 read, 1 write,
        2 fetch and el in 0, 1, plus 'par': the four raw PARs."""
        self.set_regime(ttbr0, ttbr1, tcr, sctlr)
        pars = self.at_batch(vas)
        fetch = {el: self.fetch_probe(vas, el) for el in (1, 0)}
        out = []
        for j, va in enumerate(vas):
            r = {"par": pars[j]}
            for (_name, el, write), par in zip(AT_OPS, pars[j]):
                r[(write, el)] = decode_par(par, va)
            for el in (1, 0):
                r[(2, el)] = fetch_result(fetch[el][j], r[(0, el)], r)
            out.append(r)
        return out

    def at(self, va: int, access: int, el: int, ttbr0: int, ttbr1: int, tcr: int,
           sctlr: int = SCTLR_M) -> tuple:
        """('ok', pa) | ('fault', fsc) for one access (0 read, 1 write, 2 fetch) at EL0/EL1.

        For a fetch permission fault whose level no AT of the same VA reveals, fsc is None."""
        return self.query([va], ttbr0, ttbr1, tcr, sctlr)[0][(int(access), el)]


def fetch_result(fetch_pa, read_res: tuple, all_res: dict) -> tuple:
    """Fault status of a fetch from uc_vmem_translate's pass/fail plus the AT results of the VA.

    Same VA, same EL => same walk as the AT read: a translation/access-flag/address-size fault of
    the read is the fetch's fault too. Otherwise a failed fetch is a Permission fault at the
    leaf's level, which any AT permission fault (FSC 0x0D-0x0F) of the same VA reveals."""
    if fetch_pa is not None:
        return ("ok", fetch_pa)
    if read_res[0] == "fault" and not 0x0C <= read_res[1] <= 0x0F:
        return read_res
    for key in ((1, 1), (0, 0), (1, 0)):
        kind, v = all_res[key]
        if kind == "fault" and 0x0C <= v <= 0x0F:
            return ("fault", v)
    return ("fault", None)
