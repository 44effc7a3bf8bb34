"""VMSAv8-64 stage-1 descriptor bit layouts, 4 KB granule (docs/hardware.md §Descriptors).

Small pure functions: the walker decodes with the same constants the OS layer
encodes with, so that both read like the Arm ARM tables.
"""
from __future__ import annotations

# bits[1:0]
DESC_VALID = 1 << 0
DESC_TABLE = 1 << 1           # table at L0-L2, page at L3; clear = block at L1/L2
TYPE_BLOCK = 0b01
TYPE_TABLE = 0b11
TYPE_PAGE = 0b11

# leaf attributes
ATTRINDX_SHIFT = 2
ATTRINDX_MASK = 0b111 << ATTRINDX_SHIFT
ATTR_NS = 1 << 5
AP_SHIFT = 6
AP_MASK = 0b11 << AP_SHIFT
SH_SHIFT = 8
SH_MASK = 0b11 << SH_SHIFT
ATTR_AF = 1 << 10
ATTR_nG = 1 << 11
ATTR_GP = 1 << 50
ATTR_DBM = 1 << 51
ATTR_CONTIG = 1 << 52
ATTR_PXN = 1 << 53
ATTR_UXN = 1 << 54

# table attributes (hierarchical, accumulate by OR down the walk)
PXN_TABLE = 1 << 59
UXN_TABLE = 1 << 60
AP_TABLE0 = 1 << 61           # EL0 access forbidden below
AP_TABLE1 = 1 << 62           # writes forbidden below
NS_TABLE = 1 << 63
TABLE_ATTRS = PXN_TABLE | UXN_TABLE | AP_TABLE0 | AP_TABLE1

OA_MASK = ((1 << 48) - 1) & ~0xFFF   # bits[47:12]
HIGH_OA_MASK = 0xF << 48              # bits[51:48]: RES0 with a 48-bit OA, address-size checked

# AP[2:1] values (docs/hardware.md §Descriptors)
AP_RW_EL1 = 0b00              # EL1 RW, EL0 none
AP_RW_ALL = 0b01              # EL1 RW, EL0 RW
AP_RO_EL1 = 0b10              # EL1 RO, EL0 none
AP_RO_ALL = 0b11              # EL1 RO, EL0 RO

SH_NONE, SH_OUTER, SH_INNER = 0b00, 0b10, 0b11

LEVEL_SHIFT = {0: 39, 1: 30, 2: 21, 3: 12}     # VA bit where a level's index starts
BLOCK_SIZE = {1: 1 << 30, 2: 1 << 21, 3: 1 << 12}
ENTRIES = 512


def level_index(va: int, level: int) -> int:
    """Index of va's descriptor in a level-`level` table."""
    return (va >> LEVEL_SHIFT[level]) & 0x1FF


def table_desc(next_pa: int, pxn_table: bool = False, uxn_table: bool = False,
               ap_table: int = 0) -> int:
    """Table descriptor (L0-L2) pointing at the next-level table."""
    d = (next_pa & OA_MASK) | TYPE_TABLE | ((ap_table & 3) << 61)
    if pxn_table:
        d |= PXN_TABLE
    if uxn_table:
        d |= UXN_TABLE
    return d


def leaf_desc(pa: int, level: int, ap: int = AP_RW_ALL, uxn: bool = False, pxn: bool = False,
              ng: bool = True, af: bool = True, sh: int = SH_INNER, attrindx: int = 0) -> int:
    """Block (L1/L2) or page (L3) descriptor."""
    d = (pa & OA_MASK & ~(BLOCK_SIZE[level] - 1)) | (TYPE_PAGE if level == 3 else TYPE_BLOCK)
    d |= (ap & 3) << AP_SHIFT | (sh & 3) << SH_SHIFT | (attrindx & 7) << ATTRINDX_SHIFT
    if af:
        d |= ATTR_AF
    if ng:
        d |= ATTR_nG
    if uxn:
        d |= ATTR_UXN
    if pxn:
        d |= ATTR_PXN
    return d


def page_desc(pa: int, **kw) -> int:
    return leaf_desc(pa, 3, **kw)


def block_desc(pa: int, level: int, **kw) -> int:
    if level not in (1, 2):
        raise ValueError(f"no block descriptors at level {level} with a 4 KB granule")
    return leaf_desc(pa, level, **kw)


def desc_is_valid(d: int) -> bool:
    return bool(d & DESC_VALID)


def desc_is_table(d: int, level: int) -> bool:
    return level < 3 and d & 3 == TYPE_TABLE


def desc_oa(d: int) -> int:
    return d & OA_MASK


def desc_ap(d: int) -> int:
    return (d >> AP_SHIFT) & 3


def desc_attrindx(d: int) -> int:
    return (d >> ATTRINDX_SHIFT) & 7


def desc_sh(d: int) -> int:
    return (d >> SH_SHIFT) & 3


def describe(d: int, level: int) -> str:
    """One-line human reading of a descriptor, for traces and error messages."""
    if not d & DESC_VALID:
        return "invalid"
    if level < 3 and d & 3 == TYPE_TABLE:
        bits = [n for n, b in (("PXNTable", PXN_TABLE), ("UXNTable", UXN_TABLE),
                               ("APTable0", AP_TABLE0), ("APTable1", AP_TABLE1)) if d & b]
        return f"table -> {d & OA_MASK:#x}" + (" " + ",".join(bits) if bits else "")
    if level == 0 or (level == 3 and not d & DESC_TABLE):
        return "reserved"
    kind = "page" if level == 3 else f"L{level} block"
    flags = [n for n, b in (("AF", ATTR_AF), ("nG", ATTR_nG), ("UXN", ATTR_UXN), ("PXN", ATTR_PXN)) if d & b]
    return f"{kind} {d & OA_MASK:#x} AP={desc_ap(d):02b} " + ",".join(flags)
