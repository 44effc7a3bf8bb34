"""Per-operation counts of TLBI / DSB / ISB / TTBR writes against
docs/openbsd-exit-path.md §TLB helpers, §Exit-path entry points and §Counts. Every count is taken on the calling CPU; the
other CPU must issue nothing."""
from __future__ import annotations

import pytest

from emu.trace import Ev
from pmap_py import PROT_READ, PROT_WRITE, PmapError

from .conftest import delta, make, user_frames

VA = 0x2000_0000
N = 5

ONE_FLUSH = {"tlbi.VAE1IS": 2, "dsb": 4, "isb": 2}          # ttlb_flush of a user pmap


def times(d, k):
    return {key: v * k for key, v in d.items()}


def active_pmap(m, ps, n=N, va=VA):
    """A pmap with n pages mapped, activated and switched in on cpu0."""
    c0 = m.cpus[0]
    pm = ps.pmap_create(c0)
    ps.pmap_activate(c0, pm)
    for i, pa in enumerate(user_frames(m, pm, n)):
        ps.pmap_enter(c0, pm, va + i * 0x1000, pa, PROT_READ | PROT_WRITE)
    return pm


def test_remove_active_2n_vae1is():
    m, ps = make(trace=True)
    pm = active_pmap(m, ps)
    start = len(m.trace.records)
    n, d = delta(m, ps.pmap_remove, m.cpus[0], pm, VA, VA + N * 0x1000)
    assert n == N
    assert d == [times(ONE_FLUSH, N), {}]
    # operands: the even ASID then the odd one, for each page in order
    ops = [(r[3]["va"], r[3]["asid"]) for r in m.trace.records[start:] if r[2] is Ev.TLBI]
    assert ops == [(VA + i * 0x1000, a) for i in range(N) for a in (pm.asid, pm.asid | 1)]
    assert pm.pm_stats.resident_count == 0


def test_remove_legacy_4n_vae1is():
    m, ps = make(legacy=True)
    pm = active_pmap(m, ps)
    _, d = delta(m, ps.pmap_remove, m.cpus[0], pm, VA, VA + N * 0x1000)
    assert d == [times(ONE_FLUSH, 2 * N), {}]


def test_remove_inactive_zero_tlbi():
    m, ps = make()
    c0 = m.cpus[0]
    pm = active_pmap(m, ps)
    ps.pmap_deactivate(c0, pm)
    assert pm.pm_active == 0
    writes = c0.events["ptes_cleared"]
    _, d = delta(m, ps.pmap_remove, c0, pm, VA, VA + N * 0x1000)
    assert d == [{}, {}]
    assert c0.events["ptes_cleared"] - writes == N          # the descriptors were still cleared


def test_remove_legacy_inactive_still_flushes():
    m, ps = make(legacy=True)
    c0 = m.cpus[0]
    pm = active_pmap(m, ps)
    ps.pmap_deactivate(c0, pm)                              # 1.58: no hardware access at all
    _, d = delta(m, ps.pmap_remove, c0, pm, VA, VA + N * 0x1000)
    assert d[0]["tlbi.VAE1IS"] == 4 * N


def test_remove_unmapped_range_is_a_noop():
    m, ps = make()
    c0 = m.cpus[0]
    pm = active_pmap(m, ps)
    cleared = c0.events["ptes_cleared"]
    n, d = delta(m, ps.pmap_remove, c0, pm, 0x4000_0000, 0x4010_0000)
    assert n == 0 and d == [{}, {}] and c0.events["ptes_cleared"] == cleared
    # a range that straddles mapped and unmapped pages removes only the mapped ones
    n, d = delta(m, ps.pmap_remove, c0, pm, VA - 0x3000, VA + 0x2000)
    assert n == 2 and d[0]["tlbi.VAE1IS"] == 4


def test_enter_counts():
    m, ps = make()
    c0 = m.cpus[0]
    pm = ps.pmap_create(c0)
    pa1, pa2 = user_frames(m, pm, 2)
    # inactive pmap: no flush at all
    _, d = delta(m, ps.pmap_enter, c0, pm, VA, pa1, PROT_READ)
    assert d == [{}, {}]
    ps.pmap_activate(c0, pm)
    _, d = delta(m, ps.pmap_enter, c0, pm, VA + 0x1000, pa1, PROT_READ)
    assert d == [ONE_FLUSH, {}]
    # replacing a valid mapping: pmap_remove_pted's flush, then the insert's
    _, d = delta(m, ps.pmap_enter, c0, pm, VA + 0x1000, pa2, PROT_READ | PROT_WRITE)
    assert d == [times(ONE_FLUSH, 2), {}]
    # no access type in flags: pted entered, hardware descriptor left invalid, no flush
    _, d = delta(m, ps.pmap_enter, c0, pm, VA + 0x2000, pa2, PROT_READ, 0)
    assert d == [{}, {}]
    assert ps.pmap_extract(pm, VA + 0x2000) == pa2


def test_protect_counts():
    m, ps = make()
    pm = active_pmap(m, ps)
    _, d = delta(m, ps.pmap_protect, m.cpus[0], pm, VA, VA + N * 0x1000, PROT_READ)
    assert d == [times(ONE_FLUSH, N), {}]


def test_switch_counts():
    m, ps = make()
    c0, c1 = m.cpus
    pm = ps.pmap_create(c0)
    # cpu_fork: the child's pmap is activated by the parent, not switched in
    _, d = delta(m, ps.pmap_activate, c0, pm, curproc=False)
    assert d == [{}, {}] and pm.pm_active == 1
    # first switch-in: ASID allocated (no flush), TTBR0 <- zero, ISB, TTBR1, ISB, TTBR0, ISB
    _, d = delta(m, ps.pmap_activate, c0, pm)
    assert d == [{"isb": 3, "ttbr_writes": 3}, {}]
    assert c0.ttbr0 == pm.pm_pt0pa and c0.ttbr1 >> 48 == pm.asid and c0.asid == pm.asid
    # already ci_curpm: nothing
    _, d = delta(m, ps.pmap_activate, c0, pm)
    assert d == [{}, {}] and pm.pm_active == 3
    # deactivate: TTBR0 <- zero page, ISB; TTBR1 keeps the ASID
    _, d = delta(m, ps.pmap_deactivate, c0, pm)
    assert d == [{"isb": 1, "ttbr_writes": 1}, {}]
    assert c0.ttbr0 == ps.zero_page and c0.ttbr1 >> 48 == pm.asid
    ps.pmap_deactivate(c0, pm)
    ps.pmap_deactivate(c0, pm)
    _, d = delta(m, ps.pmap_deactivate, c0, pm)            # pm_active already 0
    assert d == [{}, {}] and pm.pm_active == 0
    # userret / kernel entry flip TTBR1's ASID bit 0 and base (one TTBR write + ISB each)
    ps.pmap_setttb(c1, pm)
    _, d = delta(m, ps.pmap_userret, c1)
    assert d == [{}, {"isb": 1, "ttbr_writes": 1}] and c1.asid == pm.asid | 1 and c1.el == 0
    assert c1.ttbr1 & 0xFFFF_FFFF_F000 == ps.tramp_l1
    _, d = delta(m, ps.pmap_kernel_entry, c1)
    assert d == [{}, {"isb": 1, "ttbr_writes": 1}] and c1.asid == pm.asid and c1.el == 1
    assert c1.ttbr1 & 0xFFFF_FFFF_F000 == ps.kernel_l1


def test_purge_counts():
    m, ps = make(trace=True)
    c0 = m.cpus[0]
    pm = active_pmap(m, ps)
    start = len(m.trace.records)
    spins, d = delta(m, ps.pmap_purge, c0, pm)
    assert spins == 0
    assert d == [{"tlbi.ASIDE1IS": 2, "dsb": 4, "isb": 3, "ttbr_writes": 1}, {}]
    ops = [r[3]["asid"] for r in m.trace.records[start:] if r[2] is Ev.TLBI]
    assert ops == [pm.asid, pm.asid | 1]
    assert pm.pm_pt0pa == ps.zero_page and pm.pm_active == 0 and c0.ttbr0 == ps.zero_page
    # then the whole teardown flushes nothing, and the last deactivate returns early
    _, d = delta(m, ps.pmap_remove, c0, pm, VA, VA + N * 0x1000)
    assert d == [{}, {}]
    _, d = delta(m, ps.pmap_deactivate, c0, pm)
    assert d == [{}, {}]
    # a reschedule of the purged pmap loads the zero page as TTBR0
    ps.pmap_setttb(c0, pm)
    assert c0.ttbr0 == ps.zero_page


def test_purge_waits_for_siblings():
    m, ps = make()
    c0, c1 = m.cpus
    pm = ps.pmap_create(c0)
    ps.pmap_activate(c0, pm)                              # main thread on cpu0
    ps.pmap_activate(c1, pm)                              # sibling on cpu1
    with pytest.raises(PmapError, match="spin forever"):
        ps.pmap_purge(c0, pm)                             # nothing could bring pm_active to 1
    assert pm.pm_active == 2 and c0.ttbr0 == pm.pm_pt0pa  # untouched
    with pytest.raises(PmapError, match="spin forever"):
        ps.pmap_purge(c0, pm, wait=lambda: False)
    calls = []

    def sibling_exits():
        calls.append(1)
        if len(calls) == 3:
            ps.pmap_deactivate(c1, pm)

    cycles, spun = c0.cycles, c0.events["spin_wait"]
    spins, d = delta(m, ps.pmap_purge, c0, pm, wait=sibling_exits)
    assert spins == 3 and c0.events["spin_wait"] - spun == 3
    assert d[0] == {"tlbi.ASIDE1IS": 2, "dsb": 4, "isb": 3, "ttbr_writes": 1}
    assert d[1] == {"isb": 1, "ttbr_writes": 1}            # the sibling's own deactivate
    assert c0.cycles - cycles >= 3 * m.core.cost.spin_wait_iteration


def test_destroy_counts():
    m, ps = make()
    c0, c1 = m.cpus
    pm = active_pmap(m, ps)
    ps.pmap_purge(c0, pm)
    ps.pmap_setttb(c0, ps.pmap_kernel())                  # the exiting CPU switches to idle
    ps.pmap_remove(c0, pm, VA, VA + N * 0x1000)
    freed = c1.events["pt_pages_freed"]
    _, d = delta(m, ps.pmap_destroy, c1, pm)              # the reaper, on cpu1
    assert d == [{}, {"tlbi.ASIDE1IS": 2, "dsb": 4, "isb": 2}]
    assert c1.events["pt_pages_freed"] - freed == 3       # L3, L2, L1


def test_deactivate_revision_1_111_flushes_on_last():
    m, ps = make(revision="1.111")
    c0, c1 = m.cpus
    pm = ps.pmap_create(c0)
    ps.pmap_activate(c0, pm)
    ps.pmap_activate(c1, pm)
    _, d = delta(m, ps.pmap_deactivate, c1, pm)
    assert d == [{}, {"isb": 1, "ttbr_writes": 1}]
    _, d = delta(m, ps.pmap_deactivate, c0, pm)
    assert d == [{"tlbi.ASIDE1IS": 2, "dsb": 4, "isb": 3, "ttbr_writes": 1}, {}]


def test_legacy_deactivate_touches_no_hardware():
    m, ps = make(legacy=True)
    c0 = m.cpus[0]
    pm = active_pmap(m, ps)
    _, d = delta(m, ps.pmap_deactivate, c0, pm)
    assert d == [{}, {}] and c0.ttbr0 == pm.pm_pt0pa and pm.pm_active == 0


def test_kernel_mappings_flush_with_one_vaale1is():
    m, ps = make(trace=True)
    c0 = m.cpus[0]
    kva = 0xFFFF_FF80_0020_0000
    pa = user_frames(m, ps.pmap_kernel(), 1)[0]
    _, d = delta(m, ps.pmap_kenter_pa, c0, kva, pa, PROT_READ | PROT_WRITE)
    assert d == [{"tlbi.VAALE1IS": 1, "dsb": 2, "isb": 1}, {}]
    assert ps.pmap_extract(ps.pmap_kernel(), kva + 8) == pa + 8
    _, d = delta(m, ps.pmap_kremove, c0, kva, 0x1000)
    assert d == [{"tlbi.VAALE1IS": 1, "dsb": 2, "isb": 1}, {}]
    assert ps.pmap_extract(ps.pmap_kernel(), kva) is None


def test_costs_are_charged():
    m, ps = make()
    c0 = m.cpus[0]
    cost = m.core.cost
    pm = ps.pmap_create(c0)
    before = c0.cycles
    ps.pmap_enter(c0, pm, VA, user_frames(m, pm, 1)[0], PROT_READ)   # inactive: no flush
    # pm_mtx + the page's pv_mtx (pmap_enter_pv) + 2 table frames (zeroed) + 2 table
    # descriptors + 1 PTE
    assert c0.cycles - before == 2 * cost.lock_acquire + 2 * cost.frame_zero + 3 * cost.descriptor_write
