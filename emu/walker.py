"""VMSAv8-64 stage-1 table walker, EL1&0 regime, 4 KB granule (docs/hardware.md §Walker).

`walk` follows the descriptors for one VA and returns either a Translation (the
leaf, with effective permissions for both ELs after the hierarchical table bits)
or a Fault (translation / access flag / address size / external abort on walk).
`check_access` applies the permission check for one access kind and EL, so that a
TLB can cache a translation whose permissions forbid the access (the architecture
allows that). `translate` does both: the pure function the differential tests use.

Every descriptor read is reported as (pa, value, level) for the cost model and trace.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

from .descriptors import (AP_TABLE0, AP_TABLE1, ATTR_AF, ATTR_nG, ATTR_PXN, ATTR_UXN, PXN_TABLE,
                          UXN_TABLE)
from .physmem import PhysMem
from .sysregs import PA_BITS, SCTLR_M, SCTLR_WXN, TCR, start_level

MASK64 = (1 << 64) - 1


class Access(IntEnum):
    READ = 0
    WRITE = 1
    FETCH = 2


class FaultKind(Enum):
    ADDRESS_SIZE = "address-size"
    TRANSLATION = "translation"
    ACCESS_FLAG = "access-flag"
    PERMISSION = "permission"
    EXTERNAL = "external-abort-on-walk"


# DFSC/IFSC = base + level (docs/hardware.md §Faults)
FSC_BASE = {
    FaultKind.ADDRESS_SIZE: 0x00,
    FaultKind.TRANSLATION: 0x04,
    FaultKind.ACCESS_FLAG: 0x08,
    FaultKind.PERMISSION: 0x0C,
    FaultKind.EXTERNAL: 0x14,
}

# Effective permissions as a 6-bit mask. The low three bits for EL1 and the next three
# for EL0 use Unicorn's UC_PROT_READ/WRITE/EXEC values (1/2/4), so the rights to hand
# Unicorn at an EL are (perms >> el_shift(el)) & 7.
PERM_R, PERM_W, PERM_X = 1, 2, 4
EL1_SHIFT, EL0_SHIFT = 0, 3


def el_shift(el: int) -> int:
    return EL0_SHIFT if el == 0 else EL1_SHIFT


def perm_bit(access: Access, el: int) -> int:
    """The bit of a perms mask that allows `access` at `el`."""
    return 1 << (access + (EL0_SHIFT if el == 0 else EL1_SHIFT))


def perms_str(perms: int) -> str:
    def three(p):
        return ("r" if p & PERM_R else "-") + ("w" if p & PERM_W else "-") + ("x" if p & PERM_X else "-")
    return f"el1:{three(perms & 7)} el0:{three(perms >> 3 & 7)}"


@dataclass(slots=True)
class Fault:
    kind: FaultKind
    level: int
    va: int
    access: Access = Access.READ
    el: int = 1
    reads: list = field(default_factory=list)   # [(pa, value, level)]

    @property
    def fsc(self) -> int:
        """DFSC (data abort) or IFSC (instruction abort) code."""
        return FSC_BASE[self.kind] + self.level

    def __str__(self) -> str:
        return (f"{self.kind.value} fault, level {self.level} (FSC {self.fsc:#04x}) "
                f"on {self.access.name.lower()} of {self.va:#x} at EL{self.el}")


@dataclass(slots=True)
class Translation:
    va: int               # the VA asked for
    va_base: int          # start of the page/block
    pa_base: int
    level: int            # level of the leaf: 3 page, 2 or 1 block
    size: int             # 4 KB, 2 MB or 1 GB
    perms: int            # effective EL1/EL0 R/W/X mask (see PERM_*)
    ng: bool
    asid: int | None      # ASID that tags the entry (None for global entries)
    desc: int             # the leaf descriptor
    desc_pa: int          # where it was read
    reads: list           # [(pa, value, level)] every descriptor read of this walk
    tables: list          # [(level, next_table_pa, accumulated table attrs)] for the walk cache
    refs: int = 0         # how many TLB structures hold this entry (TLB bookkeeping)
    speculative: bool = False
    fill_cycle: int = 0
    stale: bool = False   # set by the checker: its frame changed owner; a TLB hit reports it

    # derived fields: properties, so that the hot path builds fewer attributes
    @property
    def pa(self) -> int:
        """The PA of `va`, the VA this walk was for. A TLB entry serves every VA of its
        page or block: for the VA of a lookup, use pa_of(va)."""
        return self.pa_base | (self.va & (self.size - 1))

    def pa_of(self, va: int) -> int:
        """The PA this entry gives `va` (a VA inside its page or block)."""
        return self.pa_base | (va & (self.size - 1))

    @property
    def attrindx(self) -> int:
        return (self.desc >> 2) & 7

    @property
    def sh(self) -> int:
        return (self.desc >> 8) & 3

    def allows(self, access: Access, el: int) -> bool:
        return bool(self.perms & perm_bit(access, el))


class Regime:
    """The EL1&0 translation regime decoded from TTBR0/TTBR1/TCR/SCTLR.

    Built once per register write so that a walk does no decoding.
    """
    __slots__ = ("ttbr0", "ttbr1", "tcr_value", "tcr", "sctlr", "pa_bits", "asid", "wxn",
                 "ia", "start", "base", "epd", "top_bit", "hpd", "base_fault", "hole_mask", "hole_val",
                 "first_mask", "wc_levels")

    def __init__(self, ttbr0: int, ttbr1: int, tcr: int | TCR, sctlr: int = SCTLR_M,
                 parange_bits: int = 44, hpds: bool = False):
        t = tcr if isinstance(tcr, TCR) else TCR.decode(tcr)
        self.ttbr0, self.ttbr1, self.tcr, self.tcr_value, self.sctlr = ttbr0, ttbr1, t, t.value, sctlr
        self.pa_bits = min(PA_BITS.get(t.ips, 52), parange_bits)
        raw_asid = (ttbr1 if t.a1 else ttbr0) >> 48
        self.asid = raw_asid & (0xFFFF if t.as16 else 0xFF)
        self.wxn = bool(sctlr & SCTLR_WXN)
        self.ia, self.start, self.base, self.epd, self.top_bit, self.hpd = [], [], [], [], [], []
        self.base_fault = []
        self.hole_mask, self.hole_val, self.first_mask = [], [], []
        self.wc_levels = []           # levels of the tables below the root: what a walk cache can hold
        for sel, (ttbr, txsz, epd, tbi, hpd) in enumerate(((ttbr0, t.t0sz, t.epd0, t.tbi0, t.hpd0),
                                                           (ttbr1, t.t1sz, t.epd1, t.tbi1, t.hpd1))):
            # TxSZ outside the 4 KB granule's range is treated as the nearest legal value (as QEMU does).
            txsz = min(max(txsz, 16), 39)
            ia = 64 - txsz
            lvl = start_level(txsz)
            table_bytes = 8 << (ia - (12 + 9 * (3 - lvl)))
            baddr = ttbr & ((1 << 48) - 1) & ~(table_bytes - 1)
            self.ia.append(ia)
            self.start.append(lvl)
            self.base.append(baddr)
            self.epd.append(bool(epd))
            self.top_bit.append(55 if tbi else 63)
            self.hpd.append(bool(hpd) and hpds)
            self.base_fault.append(baddr >> self.pa_bits != 0)
            # VA bits [top:ia] must all equal VA[55]; the first level indexes ia - shift bits
            hole = ((1 << (64 if not tbi else 56)) - 1) & ~((1 << ia) - 1)
            self.hole_mask.append(hole)
            self.hole_val.append(hole if sel else 0)
            self.first_mask.append((1 << (ia - (39 - 9 * lvl))) - 1)
            self.wc_levels.append(tuple(range(3, lvl, -1)))

    def select(self, va: int) -> int:
        """0 for TTBR0's range, 1 for TTBR1's (VA[55])."""
        return (va >> 55) & 1

    def in_range(self, va: int) -> bool:
        """False for a VA in the hole between the two ranges."""
        sel = (va >> 55) & 1
        ia = self.ia[sel]
        top = self.top_bit[sel]
        upper = (va >> ia) & ((1 << (top + 1 - ia)) - 1)
        return upper == (((1 << (top + 1 - ia)) - 1) if sel else 0)

    def __repr__(self) -> str:
        return f"Regime(ttbr0={self.ttbr0:#x}, ttbr1={self.ttbr1:#x}, tcr={self.tcr_value:#x}, asid={self.asid})"


_LEAF_PERM_BITS = (3 << 6) | ATTR_PXN | ATTR_UXN
_WXN_KEY = 1 << 63                        # NSTable's bit: never part of tattrs here
_perm_memo: dict[int, int] = {}


def _leaf_perms_cached(desc: int, tattrs: int, wxn: bool) -> int:
    """_leaf_perms memoized on the few bits it reads (the walk's hot path)."""
    key = (desc & _LEAF_PERM_BITS) | tattrs | (_WXN_KEY if wxn else 0)
    p = _perm_memo.get(key)
    if p is None:
        p = _perm_memo[key] = _leaf_perms(desc, tattrs, wxn)
    return p


def _leaf_perms(desc: int, tattrs: int, wxn: bool) -> int:
    """Effective permissions of a leaf after table attributes (QEMU get_S1prot, Arm ARM D5.4)."""
    ap = (desc >> 6) & 3
    if tattrs & AP_TABLE0:
        ap &= ~1                          # APTable[0]: no EL0 access below
    if tattrs & AP_TABLE1:
        ap |= 2                           # APTable[1]: read-only below
    # AP[2:1]: 00 EL1 RW; 01 EL1 RW, EL0 RW; 10 EL1 RO; 11 EL1 RO, EL0 RO
    el1 = PERM_R | (0 if ap & 2 else PERM_W)
    el0 = (PERM_R | (0 if ap & 2 else PERM_W)) if ap & 1 else 0
    uxn = desc & ATTR_UXN or tattrs & UXN_TABLE
    pxn = desc & ATTR_PXN or tattrs & PXN_TABLE
    # EL0-writable memory is never executable at EL1; WXN makes writable memory XN.
    if not (pxn or el0 & PERM_W or (wxn and el1 & PERM_W)):
        el1 |= PERM_X
    # EL0 execute does not depend on AP (v8.0: AP=x0 with UXN=0 is execute-only at EL0).
    if not (uxn or (wxn and el0 & PERM_W)):
        el0 |= PERM_X
    return el1 | el0 << 3


TAG_MASK = 0xFF << 56


def untagged(regime: Regime, va: int) -> int:
    """va without its TBI tag (bits 63:56 = copies of bit 55) when TCR.TBIx applies to its
    half: tags are not part of the translated address, so not of TLB entries either."""
    sel = (va >> 55) & 1
    if regime.top_bit[sel] != 55:
        return va
    return va | TAG_MASK if sel else va & ~TAG_MASK


def walk(mem: PhysMem, regime: Regime, va: int, start: tuple | None = None) -> Translation | Fault:
    """Walk the tables for `va`. No permission check (see check_access).

    `start` = (level, table_pa, accumulated table attrs) resumes a walk from a
    walk-cache entry instead of the TTBR.
    """
    va &= MASK64
    sel = (va >> 55) & 1
    if va & regime.hole_mask[sel] != regime.hole_val[sel]:
        return Fault(FaultKind.TRANSLATION, 0, va)           # the hole between the ranges
    reads = []
    tables = []
    if start is None:
        if regime.epd[sel]:
            return Fault(FaultKind.TRANSLATION, 0, va, reads=reads)
        if regime.base_fault[sel]:
            return Fault(FaultKind.ADDRESS_SIZE, 0, va, reads=reads)
        level = regime.start[sel]
        table = regime.base[sel]
        tattrs = 0
    else:
        level, table, tattrs = start
    pa_bits = regime.pa_bits
    q = mem.q
    nwords = len(q)
    index_mask = regime.first_mask[sel] if start is None else 0x1FF
    while True:
        shift = 39 - 9 * level
        index = (va >> shift) & index_mask
        index_mask = 0x1FF
        dpa = table + (index << 3)
        if (dpa >> 3) >= nwords:
            return Fault(FaultKind.EXTERNAL, level, va, reads=reads)
        desc = q[dpa >> 3]
        reads.append((dpa, desc, level))
        if not desc & 1 or (level == 3 and not desc & 2) or (level == 0 and not desc & 2):
            return Fault(FaultKind.TRANSLATION, level, va, reads=reads)
        oa = desc & 0xFFFF_FFFF_F000
        if oa >> pa_bits:
            return Fault(FaultKind.ADDRESS_SIZE, level, va, reads=reads)
        if level < 3 and desc & 2:
            if not regime.hpd[sel]:
                tattrs |= desc & (PXN_TABLE | UXN_TABLE | AP_TABLE0 | AP_TABLE1)
            level += 1
            table = oa
            tables.append((level, oa, tattrs))
            continue
        break
    if not desc & ATTR_AF:
        return Fault(FaultKind.ACCESS_FLAG, level, va, reads=reads)
    size = 1 << (12 + 9 * (3 - level))
    va_base = va & ~(size - 1) & MASK64
    pa_base = oa & ~(size - 1)
    ng = bool(desc & ATTR_nG)
    # positional: this constructor is on the TLB-miss hot path
    return Translation(va, va_base, pa_base, level, size, _leaf_perms_cached(desc, tattrs, regime.wxn), ng,
                       regime.asid if ng else None, desc, dpa, reads, tables)


def walk_l3(mem: PhysMem, regime: Regime, va: int, table: int, tattrs: int) -> Translation | Fault:
    """`walk` resumed at a cached L3 table: the common case of a TLB miss, kept lean.

    Same result as walk(mem, regime, va, (3, table, tattrs)) for a VA in range."""
    va &= MASK64
    dpa = table + ((va >> 9) & 0xFF8)
    q = mem.q
    if dpa >> 3 >= len(q):
        return Fault(FaultKind.EXTERNAL, 3, va, reads=[])
    desc = q[dpa >> 3]
    reads = [(dpa, desc, 3)]
    if desc & 3 != 3:
        return Fault(FaultKind.TRANSLATION, 3, va, reads=reads)
    oa = desc & 0xFFFF_FFFF_F000
    if oa >> regime.pa_bits:
        return Fault(FaultKind.ADDRESS_SIZE, 3, va, reads=reads)
    if not desc & ATTR_AF:
        return Fault(FaultKind.ACCESS_FLAG, 3, va, reads=reads)
    ng = bool(desc & ATTR_nG)
    key = (desc & _LEAF_PERM_BITS) | tattrs | (_WXN_KEY if regime.wxn else 0)
    perms = _perm_memo.get(key)
    if perms is None:
        perms = _leaf_perms_cached(desc, tattrs, regime.wxn)
    return Translation(va, va & ~0xFFF, oa, 3, 4096, perms, ng, regime.asid if ng else None, desc, dpa, reads, [])


def check_access(tr: Translation, access: Access, el: int) -> Fault | None:
    """Permission check of one access against a (possibly cached) translation."""
    if tr.perms & perm_bit(access, el):
        return None
    return Fault(FaultKind.PERMISSION, tr.level, tr.va, access, el, list(tr.reads))


def translate(mem: PhysMem, va: int, access: Access, el: int, ttbr0: int, ttbr1: int, tcr: int | TCR,
              sctlr: int = SCTLR_M, parange_bits: int = 44) -> Translation | Fault:
    """Translate one VA for one access at EL0 or EL1: the walker API of docs/hardware.md §Walker."""
    regime = Regime(ttbr0, ttbr1, tcr, sctlr, parange_bits)
    r = walk(mem, regime, va)
    if isinstance(r, Fault):
        r.access, r.el = Access(access), el
        return r
    f = check_access(r, Access(access), el)
    return f if f is not None else r
