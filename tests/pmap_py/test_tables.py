"""The real page tables: descriptors the walker can translate, frames owned and freed
correctly, destroy ordering, and bad input refused without touching any table."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from emu.descriptors import (AP_RO_ALL, AP_RW_ALL, ATTR_AF, ATTR_nG, ATTR_PXN, ATTR_UXN, SH_INNER,
                             desc_ap)
from emu.frames import FrameKind
from emu.sysregs import openbsd_tcr
from emu.trace import Ev
from emu.walker import Access, Fault, FaultKind, Translation, translate
from pmap_py import (PMAP_WIRED, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, VM_MAXUSER_ADDRESS,
                     PmapError)
from pmap_py.pmap import VP_IDX1, VP_IDX2

from emu.trace import Trace

from .conftest import make, user_frames

TCR = openbsd_tcr(as16=True).value
RW, RO, RX = PROT_READ | PROT_WRITE, PROT_READ, PROT_READ | PROT_EXEC


def xlate(m, pm, va, access=Access.READ, el=0):
    return translate(m.mem, va, access, el, pm.pm_pt0pa, 0, TCR)


def test_enter_builds_walkable_tables():
    m, ps = make()
    c0 = m.cpus[0]
    pm = ps.pmap_create(c0)
    assert m.frames.info(pm.pm_pt0pa).kind is FrameKind.PAGE_TABLE
    assert m.frames.info(pm.pm_pt0pa).level == 1 and m.frames.info(pm.pm_pt0pa).owner is pm
    pas = user_frames(m, pm, 4)
    vas = [0x1000, 0x7F_FFFF_0000, 0x40_0000_0000, VM_MAXUSER_ADDRESS - 0x1000]
    for va, pa in zip(vas, pas):
        ps.pmap_enter(c0, pm, va, pa, RW)
    for va, pa in zip(vas, pas):
        r = xlate(m, pm, va + 0x18, Access.WRITE)
        assert isinstance(r, Translation) and r.pa == pa + 0x18 and r.level == 3
        assert r.ng and r.attrindx == 0 and r.sh == SH_INNER
        d = r.desc
        assert d & ATTR_AF and d & ATTR_nG and d & ATTR_PXN and d & ATTR_UXN
        assert desc_ap(d) == AP_RW_ALL and d & 0xFFFF_FFFF_F000 == pa
    # every table frame is a PAGE_TABLE of pm with its level; 3 distinct L2s, 3 L3s
    levels = sorted(m.frames.info(p).level for p in m.frames.owned_by(pm)
                    if m.frames.info(p).kind is FrameKind.PAGE_TABLE)
    assert levels == [1, 2, 2, 2, 3, 3, 3]          # the last two VAs share an L3
    assert pm.pm_stats.resident_count == 4
    assert ps.pmap_extract(pm, vas[1] + 0x123) == pas[1] + 0x123
    assert ps.pmap_extract(pm, 0x5000) is None


@pytest.mark.parametrize("prot,ap,uxn,el0", [
    (RO, AP_RO_ALL, True, {Access.READ}),
    (RW, AP_RW_ALL, True, {Access.READ, Access.WRITE}),
    (RX, AP_RO_ALL, False, {Access.READ, Access.FETCH}),
    (PROT_EXEC, 0b10, False, {Access.FETCH}),
])
def test_permissions(prot, ap, uxn, el0):
    m, ps = make()
    c0 = m.cpus[0]
    pm = ps.pmap_create(c0)
    pa = user_frames(m, pm, 1)[0]
    ps.pmap_enter(c0, pm, 0x10000, pa, prot)
    r = xlate(m, pm, 0x10000, Access.READ, 1)                 # EL1 may read every user page
    assert desc_ap(r.desc) == ap and bool(r.desc & ATTR_UXN) == uxn and r.desc & ATTR_PXN
    for acc in Access:
        assert isinstance(xlate(m, pm, 0x10000, acc, 0), Translation) == (acc in el0), acc
        # user pages are never executable at EL1 (PXN)
    assert isinstance(xlate(m, pm, 0x10000, Access.FETCH, 1), Fault)


def test_lazy_enter_and_fault_fixup():
    m, ps = make()
    c0 = m.cpus[0]
    pm = ps.pmap_create(c0)
    pa = user_frames(m, pm, 1)[0]
    ps.pmap_enter(c0, pm, 0x10000, pa, RW, PROT_READ)         # read fault on a RW page
    assert isinstance(xlate(m, pm, 0x10000, Access.READ), Translation)
    assert xlate(m, pm, 0x10000, Access.WRITE).kind is FaultKind.PERMISSION
    assert ps.pmap_fault_fixup(c0, pm, 0x10000, PROT_WRITE)
    assert isinstance(xlate(m, pm, 0x10000, Access.WRITE), Translation)
    assert not ps.pmap_fault_fixup(c0, pm, 0x10000, PROT_EXEC)  # never allowed
    ps.pmap_enter(c0, pm, 0x20000, pa, RW, 0)                   # not entered in hardware
    assert xlate(m, pm, 0x20000).kind is FaultKind.TRANSLATION
    assert ps.pmap_fault_fixup(c0, pm, 0x20000, PROT_READ)
    assert isinstance(xlate(m, pm, 0x20000), Translation)


def test_protect_and_remove_on_tables():
    m, ps = make()
    c0 = m.cpus[0]
    pm = ps.pmap_create(c0)
    pas = user_frames(m, pm, 3)
    for i, pa in enumerate(pas):
        ps.pmap_enter(c0, pm, 0x10000 + i * 0x1000, pa, RW | PROT_EXEC, RW | PMAP_WIRED)
    assert pm.pm_stats.wired_count == 3
    ps.pmap_protect(c0, pm, 0x10000, 0x12000, PROT_READ)
    assert xlate(m, pm, 0x10000, Access.WRITE).kind is FaultKind.PERMISSION
    assert isinstance(xlate(m, pm, 0x12000, Access.WRITE), Translation)
    ps.pmap_protect(c0, pm, 0x12000, 0x13000, PROT_NONE)       # = pmap_remove
    assert xlate(m, pm, 0x12000).kind is FaultKind.TRANSLATION
    ps.pmap_remove(c0, pm, 0x10000, 0x12000)
    assert xlate(m, pm, 0x10000).kind is FaultKind.TRANSLATION
    assert pm.pm_stats.resident_count == 0 and pm.pm_stats.wired_count == 0
    # page-table pages are never freed by pmap_remove
    assert len([p for p in m.frames.owned_by(pm) if m.frames.info(p).kind is FrameKind.PAGE_TABLE]) == 3
    l3 = pm.pm_vp.vp[VP_IDX1(0x10000)].vp[VP_IDX2(0x10000)]
    assert not l3.vp and not np.any(m.mem.u64[l3.pa >> 3:(l3.pa >> 3) + 512])


def test_destroy_frees_every_table_frame():
    m, ps = make()
    c0 = m.cpus[0]
    before = m.frames.counts()
    pm = ps.pmap_create(c0)
    pas = user_frames(m, pm, 6)
    for i, pa in enumerate(pas):
        ps.pmap_enter(c0, pm, i * 0x4000_0000 + 0x20_0000 * i, pa, RW)   # one L2+L3 each
    ps.pmap_activate(c0, pm)
    ps.pmap_deactivate(c0, pm)
    ps.pmap_setttb(c0, ps.pmap_kernel())
    for pa in pas:                                       # uvm frees the pages
        m.frames.free(pa)
    assert ps.pmap_destroy(c0, pm)                       # mappings left: freed with the vps
    assert m.frames.owned_by(pm) == [] and m.frames.counts() == before
    assert pm.pm_vp is None and pm not in ps.live


def test_destroy_order_tables_then_asid_flush_then_bits():
    trace = Trace()
    m, ps = make(trace=trace)
    c0, c1 = m.cpus
    pm = ps.pmap_create(c0)
    for i, pa in enumerate(user_frames(m, pm, 4)):
        ps.pmap_enter(c0, pm, 0x40_0000 * i, pa, RW)     # 1 L2, 4 L3
    ps.pmap_activate(c1, pm)
    ps.pmap_purge(c1, pm)
    ps.pmap_setttb(c1, ps.pmap_kernel())
    asid = pm.asid
    frees = []                                           # (trace position, level) per freed table
    m.frames.listeners.append(
        lambda pa, old, new: frees.append((len(trace.records), old.level))
        if old.owner is pm and new.kind is FrameKind.FREE and old.kind is FrameKind.PAGE_TABLE else None)
    at_flush = []
    orig_add = trace.add

    def add(cycle, cpu, ev, **f):
        if ev is Ev.TLBI and f.get("op") == "ASIDE1IS":
            tables = [p for p in m.frames.owned_by(pm) if m.frames.info(p).kind is FrameKind.PAGE_TABLE]
            at_flush.append((f["asid"], len(tables), ps.asids.bits(asid)))
        orig_add(cycle, cpu, ev, **f)
    trace.add = add
    start = len(trace.records)
    ps.pmap_destroy(c0, pm)
    flushes = [i for i, r in enumerate(trace.records) if i >= start and r[2] is Ev.TLBI]
    assert len(flushes) == 2
    # all 6 tables freed before the first ASIDE1IS; children before parents
    assert [lvl for _, lvl in frees] == [3, 3, 3, 3, 2, 1]
    assert all(pos < flushes[0] for pos, _ in frees)
    # both ASIDs flushed with no table left and the ASID still reserved; bits cleared after
    assert at_flush == [(asid, 0, 3), (asid | 1, 0, 3)]
    assert ps.asids.bits(asid) == 0


# ---------------------------------------------------------------- bad input

def snapshot(m, pm):
    frames = m.frames.owned_by(pm)
    return frames, [bytes(m.mem.read(p, 4096)) for p in frames], pm.pm_stats.resident_count


@pytest.mark.parametrize("va,pa_off,prot,flags,msg", [
    (0x10001, 0, RW, None, "not page aligned"),
    (0x10000, 0x800, RW, None, "not page aligned"),
    (VM_MAXUSER_ADDRESS, 0, RW, None, "outside user space"),
    (1 << 39, 0, RW, None, "outside user space"),
    (-0x1000, 0, RW, None, "outside user space"),
    (0xFFFF_FF80_0000_0000, 0, RW, None, "outside user space"),
    (0x10000, None, RW, None, "outside physical memory"),
    (0x10000, 0, 8, None, "bad prot"),
    (0x10000, 0, PROT_READ, PROT_WRITE, "exceeds prot"),
])
def test_enter_bad_input(va, pa_off, prot, flags, msg):
    m, ps = make()
    c0 = m.cpus[0]
    pm = ps.pmap_create(c0)
    pa = user_frames(m, pm, 1)[0]
    ps.pmap_enter(c0, pm, 0x20000, pa, RW)
    snap = snapshot(m, pm)
    bad_pa = m.mem.size if pa_off is None else pa + pa_off
    with pytest.raises(PmapError, match=msg):
        ps.pmap_enter(c0, pm, va, bad_pa, prot, flags)
    assert snapshot(m, pm) == snap
    assert issubclass(PmapError, ValueError)


def test_last_user_page_is_mappable():
    m, ps = make()
    c0 = m.cpus[0]
    pm = ps.pmap_create(c0)
    pa = user_frames(m, pm, 1)[0]
    ps.pmap_enter(c0, pm, VM_MAXUSER_ADDRESS - 0x1000, pa, RW)
    assert ps.pmap_remove(c0, pm, VM_MAXUSER_ADDRESS - 0x1000, VM_MAXUSER_ADDRESS) == 1


def test_remove_bad_input():
    m, ps = make()
    c0 = m.cpus[0]
    pm = ps.pmap_create(c0)
    for args, msg in (((0x1001, 0x3000), "not page aligned"), ((0x1000, 0x2800), "not page aligned"),
                      ((0x3000, 0x1000), "below start"), ((0, VM_MAXUSER_ADDRESS + 0x1000), "outside")):
        with pytest.raises(PmapError, match=msg):
            ps.pmap_remove(c0, pm, *args)
    assert ps.pmap_remove(c0, pm, 0, VM_MAXUSER_ADDRESS) == 0     # whole, empty space: no-op


def test_destroy_refusals():
    m, ps = make()
    c0, c1 = m.cpus
    pm = ps.pmap_create(c0)
    ps.pmap_enter(c0, pm, 0x10000, user_frames(m, pm, 1)[0], RW)
    ps.pmap_activate(c1, pm)
    frames = m.frames.owned_by(pm)
    with pytest.raises(PmapError, match="still active"):
        ps.pmap_destroy(c0, pm)
    ps.pmap_deactivate(c1, pm)                           # TTBR0 parked, but still ci_curpm
    with pytest.raises(PmapError, match="ci_curpm of cpu1"):
        ps.pmap_destroy(c0, pm)
    with pytest.raises(PmapError, match="ci_curpm"):
        ps.pmap_free_asid(c1, pm)
    assert pm.pm_refs == 1 and m.frames.owned_by(pm) == frames and ps.asids.bits(pm.asid) == 3
    ps.pmap_setttb(c1, ps.pmap_kernel())
    ps.pmap_reference(pm)
    assert not ps.pmap_destroy(c0, pm)                   # refs 2 -> 1: nothing freed
    assert m.frames.owned_by(pm) == frames
    assert ps.pmap_destroy(c0, pm)
    for op, args in ((ps.pmap_destroy, (c0, pm)), (ps.pmap_enter, (c0, pm, 0, 0x1000, RW)),
                     (ps.pmap_remove, (c0, pm, 0, 0x1000)), (ps.pmap_setttb, (c0, pm)),
                     (ps.pmap_activate, (c0, pm))):
        with pytest.raises(PmapError, match="already destroyed"):
            op(*args)
    with pytest.raises(PmapError, match="cannot be destroyed"):
        ps.pmap_destroy(c0, ps.pmap_kernel())
    with pytest.raises(PmapError, match="unknown pmap revision"):
        make(revision="2.0")


def test_out_of_table_frames():
    from emu.frames import OutOfFrames
    from pmap_py import ENOMEM, PMAP_CANFAIL
    m, ps = make()
    c0 = m.cpus[0]
    pm = ps.pmap_create(c0)
    pa = user_frames(m, pm, 1)[0]
    hog = []
    while True:
        try:
            hog.append(m.frames.alloc(FrameKind.KERNEL))
        except OutOfFrames:
            break
    assert ps.pmap_enter(c0, pm, 0x10000, pa, RW, RW | PMAP_CANFAIL) == ENOMEM
    with pytest.raises(OutOfFrames):
        ps.pmap_enter(c0, pm, 0x10000, pa, RW)           # without PMAP_CANFAIL: panic
    assert pm.pm_stats.resident_count == 0 and ps.pmap_extract(pm, 0x10000) is None
    for f in hog[:2]:
        m.frames.free(f)
    assert ps.pmap_enter(c0, pm, 0x10000, pa, RW, RW | PMAP_CANFAIL) == 0
    assert ps.pmap_extract(pm, 0x10000) == pa


@settings(max_examples=40, deadline=None)
@given(pages=st.sets(st.integers(0, 3 * 512 + 40), min_size=1, max_size=60),
       lo=st.integers(0, 3 * 512 + 50), span=st.integers(0, 2 * 512))
def test_range_equals_the_page_by_page_lookup(pages, lo, span):
    """pmap_remove's walk over [sva, eva) skips absent tables wholesale; it must find the
    same pteds, in the same order, as OpenBSD's `for (va = sva; va < eva; va += PAGE_SIZE)
    pmap_vp_lookup(...)` loop."""
    m, ps = make()
    c0 = m.cpus[0]
    pm = ps.pmap_create(c0)
    base = 0x3FE0_0000                                   # straddles a 1 GB (L1) boundary
    frames = user_frames(m, pm, len(pages))
    for p, pa in zip(sorted(pages), frames):
        ps.pmap_enter(c0, pm, base + p * 0x1000, pa, RW, 0)
    sva, eva = base + lo * 0x1000, base + (lo + span) * 0x1000
    naive = [ps.pmap_vp_lookup(pm, va)[0] for va in range(sva, eva, 0x1000)]
    assert [pted for _, _, pted in ps._range(pm, sva, eva, "test")] == [p for p in naive if p is not None]
    assert ps.pmap_remove(c0, pm, sva, eva) == sum(p is not None for p in naive)
    assert pm.pm_stats.resident_count == len(pages) - sum(p is not None for p in naive)
