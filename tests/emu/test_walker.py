"""Hand-written tests of emu.walker (VMSAv8-64 stage 1, 4 KB granule), no Unicorn involved.

The random differential test against QEMU is tests/emu/test_walker_qemu.py; these pin down the
cases the OS model relies on with exact, hand-computed values.
"""
from __future__ import annotations

import random

import pytest

from emu.descriptors import (AP_RO_ALL, AP_RO_EL1, AP_RW_ALL, AP_RW_EL1, ATTR_AF, ATTR_nG, ATTR_PXN,
                             ATTR_UXN, PXN_TABLE, UXN_TABLE, AP_TABLE0, AP_TABLE1, block_desc,
                             page_desc, table_desc)
from emu.physmem import PhysMem, PhysMemError
from emu.sysregs import SCTLR_M, SCTLR_WXN, TCR, make_ttbr, openbsd_tcr
from emu.walker import (Access, Fault, FaultKind, Regime, Translation, check_access, perms_str,
                        translate, walk)

R, W, X = Access.READ, Access.WRITE, Access.FETCH
MB, GB = 1 << 20, 1 << 30


@pytest.fixture
def mem():
    return PhysMem(4 * MB)


def outcome(res):
    """('ok', pa) or (fault kind, level, fsc)."""
    if isinstance(res, Fault):
        return (res.kind, res.level, res.fsc)
    assert isinstance(res, Translation)
    return ("ok", res.pa)


# ---------------------------------------------------------------------------------------------
# (a) OpenBSD layout

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
ATTR_IDX_WB, SH_INNER = 0, 3


def openbsd_user_pte(pa: int, prot: int) -> int:
    """A user leaf as OpenBSD's pmap_pte_update() builds it (pmap.c, ap_bits_user[]):
    ATTR_nG always, AF set, AP 01 if writable else 11, UXN unless executable, PXN always,
    write-back inner-shareable memory, L3_P; PROT_NONE -> 0 (invalid)."""
    if not prot & (PROT_READ | PROT_WRITE | PROT_EXEC):
        return 0
    ap = (0b01 if prot & PROT_WRITE else 0b11) << 6
    bits = ATTR_nG | ATTR_AF | ap | ATTR_PXN | ATTR_IDX_WB << 2 | SH_INNER << 8
    if not prot & PROT_EXEC:
        bits |= ATTR_UXN
    return (pa & 0xFFFF_FFFF_F000) | bits | 0b11


L1, L2, L3 = 0x10000, 0x11000, 0x12000           # user tables (TTBR0)
KL1 = 0x20000                                   # kernel L1 (TTBR1); only carries the ASID here
ZERO_L1 = 0x30000                               # the kernel's all-invalid "zero page" L1
USER_BASE = 1 << 30 | 258 << 21                   # L1 idx 1, L2 idx 258, L3 idx 0


def build_openbsd(mem):
    mem.write64(L1 + 8 * 1, table_desc(L2))
    mem.write64(L2 + 8 * 258, table_desc(L3))
    pages = {  # L3 index -> (prot, frame)
        0: (PROT_READ, 0x100000),
        1: (PROT_READ | PROT_WRITE, 0x101000),
        2: (PROT_READ | PROT_EXEC, 0x102000),
        3: (PROT_READ | PROT_WRITE | PROT_EXEC, 0x103000),
        4: (0, 0x104000),
    }
    for idx, (prot, pa) in pages.items():
        mem.write64(L3 + 8 * idx, openbsd_user_pte(pa, prot))
    return pages


# expected rights (EL1 rwx, EL0 rwx) for each protection, per the AP/UXN/PXN rules
OPENBSD_RIGHTS = {
    PROT_READ: ("r--", "r--"),
    PROT_READ | PROT_WRITE: ("rw-", "rw-"),                # EL0-writable: never EL1-executable
    PROT_READ | PROT_EXEC: ("r--", "r-x"),                 # PXN: user code never runs at EL1
    PROT_READ | PROT_WRITE | PROT_EXEC: ("rw-", "rwx"),
}


@pytest.mark.parametrize("as16", [False, True])
def test_openbsd_user_layout(mem, as16):
    pages = build_openbsd(mem)
    asid = 0x1235                                      # odd = user ASID of the pair
    ttbr0 = L1
    ttbr1 = make_ttbr(KL1, asid)                         # TCR.A1 = 1: the ASID lives in TTBR1
    tcr = openbsd_tcr(as16=as16)
    assert tcr.t0sz == 25 and tcr.a1
    for idx, (prot, pa) in pages.items():
        va = USER_BASE + idx * 0x1000 + 0x7A8
        results = {(acc, el): translate(mem, va, acc, el, ttbr0, ttbr1, tcr.value)
                   for acc in (R, W, X) for el in (0, 1)}
        if prot == 0:
            for res in results.values():
                assert outcome(res) == (FaultKind.TRANSLATION, 3, 0x07)
            continue
        el1, el0 = OPENBSD_RIGHTS[prot]
        for (acc, el), res in results.items():
            allowed = (el1 if el == 1 else el0)[acc] != "-"
            if not allowed:
                assert outcome(res) == (FaultKind.PERMISSION, 3, 0x0F), (idx, acc, el)
                continue
            assert isinstance(res, Translation), (idx, acc, el, res)
            assert res.pa == pa + 0x7A8
            assert (res.level, res.size, res.va_base, res.pa_base) == (3, 4096, va & ~0xFFF, pa)
            assert perms_str(res.perms) == f"el1:{el1} el0:{el0}"
            assert res.ng is True
            assert res.asid == (asid if as16 else asid & 0xFF)
            assert (res.attrindx, res.sh) == (ATTR_IDX_WB, SH_INNER)
            assert res.reads == [(L1 + 8, mem.read64(L1 + 8), 1),
                                 (L2 + 8 * 258, mem.read64(L2 + 8 * 258), 2),
                                 (L3 + 8 * idx, mem.read64(L3 + 8 * idx), 3)]


def test_openbsd_va_limits(mem):
    """T0SZ=25: VA[63:39] must be all zero for TTBR0; the first table is indexed by VA[38:30]."""
    build_openbsd(mem)
    tcr = openbsd_tcr().value
    ok = translate(mem, USER_BASE, R, 0, L1, make_ttbr(KL1, 3), tcr)
    assert isinstance(ok, Translation) and ok.pa == 0x100000
    # bit 39 set: in the hole -> translation fault level 0, no descriptor read
    hole = translate(mem, USER_BASE | 1 << 39, R, 0, L1, make_ttbr(KL1, 3), tcr)
    assert outcome(hole) == (FaultKind.TRANSLATION, 0, 0x04) and hole.reads == []
    assert Regime(L1, KL1, tcr).start == [1, 1]


# ---------------------------------------------------------------------------------------------
# (b) the kernel zero page

def test_kernel_zero_page_faults_every_user_va(mem):
    rng = random.Random(7)
    tcr = openbsd_tcr().value
    ttbr1 = make_ttbr(KL1, 0)
    vas = [0, 0x1000, (1 << 39) - 0x8000, (1 << 39) - 1] + [rng.randrange(1 << 39) for _ in range(300)]
    for va in vas:
        for acc in (R, W, X):
            for el in (0, 1):
                f = translate(mem, va, acc, el, ZERO_L1, ttbr1, tcr)
                assert isinstance(f, Fault)
                assert (f.kind, f.level, f.fsc) == (FaultKind.TRANSLATION, 1, 0x05)
                assert f.reads == [(ZERO_L1 + 8 * (va >> 30 & 0x1FF), 0, 1)]
                assert (f.va, f.access, f.el) == (va, acc, el)


# ---------------------------------------------------------------------------------------------
# (c) blocks

def test_2mb_and_1gb_blocks(mem):
    # 3 levels (T0SZ=25): L1[0] -> L2; L2[3] = 2 MB block at 0x1_2340_0000 (beyond memory: fine,
    # a leaf's OA is not accessed); L1[2] = 1 GB block at 0x8000_0000
    mem.write64(L1, table_desc(L2))
    mem.write64(L2 + 8 * 3, block_desc(0x1_2340_0000, 2, ap=AP_RW_EL1, uxn=True, ng=False))
    mem.write64(L1 + 8 * 2, block_desc(0x8000_0000, 1, ap=AP_RO_ALL, pxn=True))
    tcr = TCR(t0sz=25, t1sz=25, a1=False, ips=2).value           # 40-bit PA
    ttbr0 = make_ttbr(L1, 0x42)
    va = 3 * (2 * MB) + 0x1_2345
    t = translate(mem, va, W, 1, ttbr0, 0, tcr)
    assert isinstance(t, Translation)
    assert (t.pa, t.level, t.size, t.va_base, t.pa_base) == (0x1_2340_0000 + 0x1_2345, 2, 2 * MB,
                                                             3 * 2 * MB, 0x1_2340_0000)
    assert perms_str(t.perms) == "el1:rwx el0:---" and t.ng is False and t.asid is None
    assert outcome(translate(mem, va, R, 0, ttbr0, 0, tcr)) == (FaultKind.PERMISSION, 2, 0x0E)
    # v8.0: EL0 execute ignores AP (AP=00 + UXN=1 here, so: no)
    assert outcome(translate(mem, va, X, 0, ttbr0, 0, tcr)) == (FaultKind.PERMISSION, 2, 0x0E)

    va = 2 * GB + 0x3456_789A
    t = translate(mem, va, R, 0, ttbr0, 0, tcr)
    assert (t.pa, t.level, t.size, t.pa_base) == (0x8000_0000 + 0x3456_789A, 1, GB, 0x8000_0000)
    assert perms_str(t.perms) == "el1:r-- el0:r-x" and t.asid == 0x42
    assert t.reads == [(L1 + 16, mem.read64(L1 + 16), 1)] and t.tables == []
    assert outcome(translate(mem, va, W, 1, ttbr0, 0, tcr)) == (FaultKind.PERMISSION, 1, 0x0D)
    assert outcome(translate(mem, va, X, 1, ttbr0, 0, tcr)) == (FaultKind.PERMISSION, 1, 0x0D)


def test_1gb_block_through_l0_and_ttbr1(mem):
    """48-bit VA (T1SZ=16): the upper range walks from L0; a 1 GB block at L1."""
    mem.write64(L1 + 8 * 511, table_desc(L2))                   # L0[511] (L1 frame used as L0)
    mem.write64(L2 + 8 * 510, block_desc(0x4000_0000, 1, ap=AP_RO_EL1))
    tcr = TCR(t0sz=16, t1sz=16, a1=True, as16=True, ips=5).value
    va = 0xFFFF_FFFF_8000_0000 + 0x123
    t = translate(mem, va, R, 1, 0, make_ttbr(L1, 0xBEEF), tcr)
    assert isinstance(t, Translation)
    assert (t.pa, t.level, t.size, t.asid) == (0x4000_0123, 1, GB, 0xBEEF)
    assert t.va_base == 0xFFFF_FFFF_8000_0000
    assert [lv for _, _, lv in t.reads] == [0, 1] and t.tables == [(1, L2, 0)]


def test_block_descriptor_at_level0_is_a_translation_fault(mem):
    mem.write64(L1, block_desc(0, 1))                         # bits[1:0] = 01 at L0
    tcr = TCR(t0sz=16, ips=5).value
    f = translate(mem, 0x1234, R, 1, L1, 0, tcr)
    assert outcome(f) == (FaultKind.TRANSLATION, 0, 0x04)


# ---------------------------------------------------------------------------------------------
# (d) bad input

def test_table_outside_physical_memory_is_an_external_abort(mem):
    mem.write64(L1, table_desc(0x4000_0000))                  # 1 GB: no RAM there (mem = 4 MB)
    tcr = TCR(t0sz=25, ips=2).value                           # 40-bit PA: address is legal
    f = translate(mem, 0x5000, R, 1, L1, 0, tcr)
    assert isinstance(f, Fault)
    assert (f.kind, f.level, f.fsc) == (FaultKind.EXTERNAL, 2, 0x16)
    assert f.reads == [(L1, mem.read64(L1), 1)]               # the failed read is not in reads
    # a TTBR base outside memory: external abort at the start level
    f = translate(mem, 0x5000, R, 1, 0x7000_0000, 0, tcr)
    assert outcome(f) == (FaultKind.EXTERNAL, 1, 0x15)


def test_addresses_beyond_the_pa_size_are_address_size_faults(mem):
    tcr32 = TCR(t0sz=25, ips=0).value                         # 32-bit PA
    mem.write64(L1, table_desc(0x1_0000_0000))
    assert outcome(translate(mem, 0x5000, R, 1, L1, 0, tcr32)) == (FaultKind.ADDRESS_SIZE, 1, 0x01)
    # with a 36-bit PA the same table address is legal (and outside memory)
    tcr36 = TCR(t0sz=25, ips=1).value
    assert outcome(translate(mem, 0x5000, R, 1, L1, 0, tcr36)) == (FaultKind.EXTERNAL, 2, 0x16)
    # leaf OA beyond the PA size: at the leaf's level
    mem.write64(L1 + 8, table_desc(L2))
    mem.write64(L2, block_desc(0x2_0000_0000, 2))
    assert outcome(translate(mem, GB, R, 1, L1, 0, tcr32)) == (FaultKind.ADDRESS_SIZE, 2, 0x02)
    # IPS is capped by PARange (44 bits on the A72)
    mem.write64(L2, block_desc(1 << 44, 2))
    tcr48 = TCR(t0sz=25, ips=5).value
    assert outcome(translate(mem, GB, R, 1, L1, 0, tcr48)) == (FaultKind.ADDRESS_SIZE, 2, 0x02)
    assert isinstance(translate(mem, GB, R, 1, L1, 0, tcr48, parange_bits=48), Translation)
    # TTBR base beyond the PA size: level 0, before any read
    f = translate(mem, 0x5000, R, 1, 1 << 40, 0, tcr32)
    assert outcome(f) == (FaultKind.ADDRESS_SIZE, 0, 0x00) and f.reads == []


def test_physmem_rejects_bad_accesses(mem):
    with pytest.raises(PhysMemError, match=r"misaligned 8-byte physical access at 0x1004"):
        mem.read64(0x1004)
    with pytest.raises(PhysMemError, match=r"outside memory of 0x400000 bytes"):
        mem.read64(4 * MB)
    with pytest.raises(PhysMemError, match=r"outside memory"):
        mem.read64(-8)
    with pytest.raises(PhysMemError, match=r"misaligned"):
        mem.write64(0x13, 0)
    assert mem.read64(4 * MB - 8) == 0


# ---------------------------------------------------------------------------------------------
# (e) fault status codes

def test_fsc_codes():
    expect = {FaultKind.ADDRESS_SIZE: 0x00, FaultKind.TRANSLATION: 0x04,
              FaultKind.ACCESS_FLAG: 0x08, FaultKind.PERMISSION: 0x0C, FaultKind.EXTERNAL: 0x14}
    for kind, base in expect.items():
        for lv in range(4):
            assert Fault(kind, lv, 0).fsc == base + lv


def test_fsc_codes_from_real_walks(mem):
    """Translation L1-L3, access flag L1-L3 and permission L1-L3 from one table tree."""
    tcr = TCR(t0sz=25, ips=2).value
    mem.write64(L1, table_desc(L2))                           # VA 0..1G
    mem.write64(L2, table_desc(L3))                           # VA 0..2M
    mem.write64(L3, page_desc(0x5000, ap=AP_RO_ALL))          # VA 0x0000
    mem.write64(L3 + 8, page_desc(0x6000, af=False))          # VA 0x1000
    mem.write64(L2 + 8, block_desc(0x20_0000, 2, ap=AP_RO_ALL))          # VA 2M
    mem.write64(L2 + 16, block_desc(0x40_0000, 2, af=False))             # VA 4M
    mem.write64(L1 + 8, block_desc(GB, 1, ap=AP_RO_ALL))                 # VA 1G
    mem.write64(L1 + 16, block_desc(2 * GB, 1, af=False))                # VA 2G
    cases = {
        (0x2000, W): 0x07, (6 * MB, W): 0x06, (3 * GB, W): 0x05, (1 << 39, W): 0x04,
        (0x1000, R): 0x0B, (4 * MB, R): 0x0A, (2 * GB, R): 0x09,
        (0x0000, W): 0x0F, (2 * MB, W): 0x0E, (GB, W): 0x0D,
    }
    for (va, acc), fsc in cases.items():
        f = translate(mem, va, acc, 1, L1, 0, tcr)
        assert isinstance(f, Fault) and f.fsc == fsc, (hex(va), f)


# ---------------------------------------------------------------------------------------------
# (f) reads and tables

def test_reads_and_tables_of_a_four_level_walk(mem):
    L0 = 0x40000
    mem.write64(L0 + 8 * 1, table_desc(L1, uxn_table=True))
    mem.write64(L1 + 8 * 2, table_desc(L2, ap_table=0b01))
    mem.write64(L2 + 8 * 3, table_desc(L3, pxn_table=True, ap_table=0b10))
    mem.write64(L3 + 8 * 4, page_desc(0x9000, ap=AP_RW_ALL))
    va = (1 << 39) | (2 << 30) | (3 << 21) | (4 << 12) | 0xABC
    tcr = TCR(t0sz=16, ips=5).value
    t = translate(mem, va, R, 1, L0, 0, tcr)
    assert isinstance(t, Translation) and t.pa == 0x9ABC
    assert t.reads == [(L0 + 8, mem.read64(L0 + 8), 0), (L1 + 16, mem.read64(L1 + 16), 1),
                       (L2 + 24, mem.read64(L2 + 24), 2), (L3 + 32, mem.read64(L3 + 32), 3)]
    assert t.desc == mem.read64(L3 + 32) and t.desc_pa == L3 + 32
    assert t.tables == [(1, L1, UXN_TABLE), (2, L2, UXN_TABLE | AP_TABLE0),
                        (3, L3, UXN_TABLE | AP_TABLE0 | AP_TABLE1 | PXN_TABLE)]
    # AP=01 restricted by APTable 01 (no EL0) and 10 (read-only), UXN/PXN from the tables
    assert perms_str(t.perms) == "el1:r-- el0:---"
    # resuming from a walk-cache entry gives the same leaf with one read
    regime = Regime(L0, 0, tcr)
    r = walk(mem, regime, va, start=t.tables[-1])
    assert (r.pa, r.perms, r.reads) == (t.pa, t.perms, t.reads[-1:])
    assert check_access(r, Access.WRITE, 1).fsc == 0x0F and check_access(r, R, 1) is None


def test_fault_reads_include_the_faulting_descriptor(mem):
    mem.write64(L1, table_desc(L2))
    mem.write64(L2, 0xDEAD_0000 & ~1)                         # invalid, with junk
    f = translate(mem, 0x1234, R, 0, L1, 0, TCR(t0sz=25).value)
    assert f.reads == [(L1, mem.read64(L1), 1), (L2, 0xDEAD_0000, 2)]
    assert (f.kind, f.level) == (FaultKind.TRANSLATION, 2)


# ---------------------------------------------------------------------------------------------
# ASIDs, WXN, execute rules

@pytest.mark.parametrize("a1,as16,expect", [(False, False, 0x34), (False, True, 0x1234),
                                           (True, False, 0x78), (True, True, 0x5678)])
def test_asid_source_and_width(mem, a1, as16, expect):
    mem.write64(L1, table_desc(L2))
    mem.write64(L2, table_desc(L3))
    mem.write64(L3, page_desc(0x5000, ng=True))
    mem.write64(L3 + 8, page_desc(0x6000, ng=False))
    tcr = TCR(t0sz=25, a1=a1, as16=as16).value
    ttbr0, ttbr1 = make_ttbr(L1, 0x1234), make_ttbr(KL1, 0x5678)
    assert translate(mem, 0x0, R, 0, ttbr0, ttbr1, tcr).asid == expect
    assert Regime(ttbr0, ttbr1, tcr).asid == expect
    assert translate(mem, 0x1000, R, 0, ttbr0, ttbr1, tcr).asid is None      # global


def test_wxn_and_execute_rules(mem):
    mem.write64(L1, table_desc(L2))
    mem.write64(L2, table_desc(L3))
    mem.write64(L3 + 0, page_desc(0x5000, ap=AP_RW_EL1))                 # EL1 rw
    mem.write64(L3 + 8, page_desc(0x6000, ap=AP_RO_EL1))                 # EL1 ro, EL0 none
    tcr = TCR(t0sz=25).value
    t = translate(mem, 0x0, R, 1, L1, 0, tcr)
    assert perms_str(t.perms) == "el1:rwx el0:--x"       # v8.0: EL0 execute ignores AP[1]
    t = translate(mem, 0x0, R, 1, L1, 0, tcr, sctlr=SCTLR_M | SCTLR_WXN)
    assert perms_str(t.perms) == "el1:rw- el0:--x"       # WXN: EL1-writable => EL1 XN
    t = translate(mem, 0x1000, R, 1, L1, 0, tcr, sctlr=SCTLR_M | SCTLR_WXN)
    assert perms_str(t.perms) == "el1:r-x el0:--x"


def test_walk_l3_fast_path_equals_walk():
    """The CPU's walk-cache fast path (walk_l3) must give exactly what walk() gives."""
    import random

    from emu.walker import walk_l3
    rng = random.Random(7)
    mem = PhysMem(1 << 20)
    table = 0x3000
    for i in range(512):
        mem.write64(table + 8 * i, rng.choice([0, rng.getrandbits(64), rng.getrandbits(64) & ~(0xFFFF << 48) | 3,
                                               rng.getrandbits(64) | 0x403]))
    for as16, a1, wxn in ((False, True, False), (True, False, True)):
        tcr = TCR(t0sz=25, t1sz=25, a1=a1, as16=as16, ips=1)
        regime = Regime(0x1000 | 0x1234 << 48, 0x2000 | 0x5678 << 48, tcr, SCTLR_M | (SCTLR_WXN if wxn else 0),
                        parange_bits=36)
        for i in range(512):
            va = 0x4000_0000 + i * 0x1000 + rng.randrange(4096)
            tattrs = rng.choice([0, PXN_TABLE, UXN_TABLE | AP_TABLE0, AP_TABLE1])
            a = walk(mem, regime, va, (3, table, tattrs))
            b = walk_l3(mem, regime, va, table, tattrs)
            assert type(a) is type(b)
            if isinstance(a, Fault):
                assert (a.kind, a.level, a.va, a.reads) == (b.kind, b.level, b.va, b.reads)
            else:
                assert a == b
