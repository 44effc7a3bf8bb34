"""TLB maintenance operations at EL1 (docs/hardware.md §TLBI scopes): encodings, operands, scope.

A TLBI is `SYS #op1, C8, Cm, #op2, Xt`; CRm selects local (0111) or Inner
Shareable broadcast (0011); op2 selects the scope.
"""
from __future__ import annotations

from enum import Enum


class Scope(Enum):
    ALL = "all"          # VMALLE1: every entry, every ASID, globals too
    ASID = "asid"        # ASIDE1: non-global entries of one ASID
    VA = "va"            # VAE1 / VALE1: one VA, that ASID or global
    VAA = "vaa"          # VAAE1 / VAALE1: one VA, any ASID


class TLBIOp(Enum):
    """name = (CRm, op2). Attributes (set below): broadcast, scope, last_level, by_va, by_asid, all_entries, event."""
    VMALLE1IS = (0b0011, 0)
    VAE1IS = (0b0011, 1)
    ASIDE1IS = (0b0011, 2)
    VAAE1IS = (0b0011, 3)
    VALE1IS = (0b0011, 5)
    VAALE1IS = (0b0011, 7)
    VMALLE1 = (0b0111, 0)
    VAE1 = (0b0111, 1)
    ASIDE1 = (0b0111, 2)
    VAAE1 = (0b0111, 3)
    VALE1 = (0b0111, 5)
    VAALE1 = (0b0111, 7)

    @property
    def takes_operand(self) -> bool:
        return self.value[1] != 0

    @property
    def encoding(self) -> int:
        """Instruction word with Rt = x0 (Rt = 31 for VMALLE1/VMALLE1IS)."""
        crm, op2 = self.value
        rt = 0 if self.takes_operand else 31
        return 0xD5080000 | 0b1000 << 12 | crm << 8 | op2 << 5 | rt

    @classmethod
    def from_sys(cls, op1: int, crn: int, crm: int, op2: int) -> "TLBIOp | None":
        if op1 != 0 or crn != 8:
            return None
        return _BY_CRM_OP2.get((crm, op2))


_SCOPE = {0: Scope.ALL, 1: Scope.VA, 2: Scope.ASID, 3: Scope.VAA, 5: Scope.VA, 7: Scope.VAA}
# Plain attributes rather than properties: they are read on every TLBI and DSB.
for _op in TLBIOp:
    _op.broadcast = _op.value[0] == 0b0011           # Inner Shareable: reaches every CPU
    _op.scope = _SCOPE[_op.value[1]]
    _op.last_level = _op.value[1] in (5, 7)          # leaf entries only: walk-cache entries survive
    _op.by_va = _op.scope in (Scope.VA, Scope.VAA)   # Xt carries a VA
    _op.by_asid = _op.scope in (Scope.VA, Scope.ASID)   # Xt carries an ASID
    _op.all_entries = _op.scope is Scope.ALL         # VMALLE1(IS)
    _op.event = f"tlbi.{_op.name}"                   # its counter in Cpu.events
del _op
_BY_CRM_OP2 = {op.value: op for op in TLBIOp}

VA_FIELD_MASK = (1 << 44) - 1


def tlbi_va(xt: int) -> int:
    """VA from a by-VA operand: Xt[43:0] = VA[55:12], sign-extended from VA[55]."""
    va = (xt & VA_FIELD_MASK) << 12
    if va >> 55 & 1:
        va |= 0xFF00_0000_0000_0000
    return va


def tlbi_asid(xt: int, as16: bool = True) -> int:
    return (xt >> 48) & (0xFFFF if as16 else 0xFF)


def tlbi_operand(va: int = 0, asid: int = 0) -> int:
    """Build Xt as OpenBSD's cpufunc helpers do: VA >> 12 in bits[43:0], ASID in [63:48]."""
    return (asid & 0xFFFF) << 48 | (va >> 12) & VA_FIELD_MASK


# DSB option -> (shareability domain, does it wait for every access type?). The LD/ST forms
# wait only for loads / stores and do not complete TLB maintenance.
_DSB_DOMAINS = ("osh", "nsh", "ish", "sy")          # CRm[3:2]
DSB_OPTION_SCOPE = {
    "sy": ("sy", True), "st": ("sy", False), "ld": ("sy", False),
    "ish": ("ish", True), "ishst": ("ish", False), "ishld": ("ish", False),
    "nsh": ("nsh", True), "nshst": ("nsh", False), "nshld": ("nsh", False),
    "osh": ("osh", True), "oshst": ("osh", False), "oshld": ("osh", False),
    "un": ("nsh", True), "unst": ("nsh", False),         # the AArch32 names of NSH, NSHST
}


def dsb_option(kind: str) -> tuple[str, bool]:
    """Decode a DSB option, by name ("ish") or as `#CRm`: (domain, completes maintenance).
    A TLBI IS is completed for other CPUs only by domain ish, osh or sy; nsh completes
    only the local effect."""
    k = kind.strip().lower()
    if k in DSB_OPTION_SCOPE:
        return DSB_OPTION_SCOPE[k]
    if k.startswith("#"):
        try:
            crm = int(k[1:], 0)
        except ValueError:
            crm = -1
        if 0 <= crm <= 15 and crm & 3:
            return _DSB_DOMAINS[crm >> 2], crm & 3 == 3
    raise ValueError(f"unknown DSB option {kind!r}")
