"""System registers the MMU depends on: TCR_EL1, TTBRn_EL1, SCTLR_EL1 (docs/hardware.md §System registers).

Encodings as (op0, op1, CRn, CRm, op2); Unicorn's CP_REG tuple is (crn, crm, op0, op1, op2).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class SysReg(Enum):
    SCTLR_EL1 = (3, 0, 1, 0, 0)
    TTBR0_EL1 = (3, 0, 2, 0, 0)
    TTBR1_EL1 = (3, 0, 2, 0, 1)
    TCR_EL1 = (3, 0, 2, 0, 2)
    ESR_EL1 = (3, 0, 5, 2, 0)
    FAR_EL1 = (3, 0, 6, 0, 0)
    PAR_EL1 = (3, 0, 7, 4, 0)
    MAIR_EL1 = (3, 0, 10, 2, 0)
    CONTEXTIDR_EL1 = (3, 0, 13, 0, 1)

    @property
    def cp_reg(self) -> tuple[int, int, int, int, int]:
        """Unicorn UC_ARM64_REG_CP_REG field order: (crn, crm, op0, op1, op2)."""
        op0, op1, crn, crm, op2 = self.value
        return (crn, crm, op0, op1, op2)

    @classmethod
    def from_encoding(cls, op0: int, op1: int, crn: int, crm: int, op2: int) -> "SysReg | None":
        return _BY_ENCODING.get((op0, op1, crn, crm, op2))


_BY_ENCODING = {r.value: r for r in SysReg}

# SCTLR_EL1 bits the model reads
SCTLR_M = 1 << 0
SCTLR_WXN = 1 << 19

# TTBR fields
TTBR_ASID_SHIFT = 48
TTBR_BADDR_MASK = ((1 << 48) - 1) & ~1      # bits[47:1]
TTBR_CNP = 1


def make_ttbr(baddr: int, asid: int = 0) -> int:
    return (asid & 0xFFFF) << TTBR_ASID_SHIFT | (baddr & TTBR_BADDR_MASK)


def ttbr_asid(ttbr: int) -> int:
    return (ttbr >> TTBR_ASID_SHIFT) & 0xFFFF


def ttbr_baddr(ttbr: int) -> int:
    return ttbr & TTBR_BADDR_MASK


# IPS / PARange encodings -> PA bits
PA_BITS = {0: 32, 1: 36, 2: 40, 3: 42, 4: 44, 5: 48, 6: 52}
IPS_FOR_BITS = {v: k for k, v in PA_BITS.items()}

TG0_4K = 0b00
TG1_4K = 0b10


@dataclass(frozen=True, slots=True)
class TCR:
    """Decoded TCR_EL1 (4 KB granule fields only)."""
    t0sz: int = 25
    t1sz: int = 25
    epd0: bool = False
    epd1: bool = False
    a1: bool = True
    as16: bool = False
    ips: int = 4
    tbi0: bool = False
    tbi1: bool = False
    hpd0: bool = False
    hpd1: bool = False
    tg0: int = TG0_4K
    tg1: int = TG1_4K
    # walk cacheability/shareability: carried for fidelity, not used by the walker
    irgn0: int = 1
    orgn0: int = 1
    sh0: int = 3
    irgn1: int = 1
    orgn1: int = 1
    sh1: int = 3

    @classmethod
    def decode(cls, v: int) -> "TCR":
        return cls(
            t0sz=v & 0x3F, epd0=bool(v >> 7 & 1), irgn0=v >> 8 & 3, orgn0=v >> 10 & 3, sh0=v >> 12 & 3,
            tg0=v >> 14 & 3, t1sz=v >> 16 & 0x3F, a1=bool(v >> 22 & 1), epd1=bool(v >> 23 & 1),
            irgn1=v >> 24 & 3, orgn1=v >> 26 & 3, sh1=v >> 28 & 3, tg1=v >> 30 & 3, ips=v >> 32 & 7,
            as16=bool(v >> 36 & 1), tbi0=bool(v >> 37 & 1), tbi1=bool(v >> 38 & 1),
            hpd0=bool(v >> 41 & 1), hpd1=bool(v >> 42 & 1))

    @property
    def value(self) -> int:
        return (self.t0sz | self.epd0 << 7 | self.irgn0 << 8 | self.orgn0 << 10 | self.sh0 << 12
                | self.tg0 << 14 | self.t1sz << 16 | self.a1 << 22 | self.epd1 << 23 | self.irgn1 << 24
                | self.orgn1 << 26 | self.sh1 << 28 | self.tg1 << 30 | self.ips << 32 | self.as16 << 36
                | self.tbi0 << 37 | self.tbi1 << 38 | self.hpd0 << 41 | self.hpd1 << 42)


def start_level(txsz: int) -> int:
    """First lookup level for a 4 KB granule and an input size of 64 - TxSZ bits (QEMU's formula)."""
    ia = 64 - txsz
    return 4 - (ia - 4) // 9


def openbsd_tcr(as16: bool = False, ips: int = 4) -> TCR:
    """TCR_EL1 as OpenBSD's pmap_init programs it: 39-bit user space (T0SZ=25), A1=1."""
    return TCR(t0sz=25, t1sz=25, a1=True, as16=as16, ips=ips)
