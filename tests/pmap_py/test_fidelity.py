"""pmap.c read line by line: every expected count below is derived by hand in the test
from OpenBSD's sys/arch/arm64/arm64/pmap.c (1.113 of 2025/07/12, 1.58 of 2018/09/12)
and cpufunc_asm.S 1.6, never computed by the code under test.

cpufunc_asm.S: each of cpu_tlb_flush_asid (VAE1IS), cpu_tlb_flush_all_asid (VAALE1IS)
and cpu_tlb_flush_asid_all (ASIDE1IS) is `dsb ishst; tlbi; dsb ish; isb`, so one helper
call = 1 TLBI + 2 DSB + 1 ISB. ttlb_flush(user pmap) = 2 cpu_tlb_flush_asid;
ttlb_flush(pmap_kernel()) = 1 cpu_tlb_flush_all_asid.
"""
from __future__ import annotations

import contextlib
import inspect

import pytest

from emu.descriptors import ATTR_AF, ATTR_GP, ATTR_UXN
from emu.frames import FrameKind
from emu.sysregs import openbsd_tcr
from emu.tlbi import TLBIOp
from emu.trace import Ev
from emu.walker import Access, FaultKind, Translation, translate
from pmap_py import PMAP_WIRED, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, PmapError
from pmap_py import pmap as pmap_module
from pmap_py.asid import FULL_WORD, RandomAsidAllocator
from pmap_py.cpufunc import cpu_tlb_flush_asid
from pmap_py.pmap import PMAP_ZERO_PAGE_VA, POLICIES, VP_IDX3

from .conftest import delta, make, user_frames

VA = 0x2000_0000
RW, RX, RWX = PROT_READ | PROT_WRITE, PROT_READ | PROT_EXEC, PROT_READ | PROT_WRITE | PROT_EXEC
TCR = openbsd_tcr(as16=True).value
KVA = 0xFFFF_FF80_0020_0000

VAE1IS_HELPER = {"tlbi.VAE1IS": 1, "dsb": 2, "isb": 1}      # one cpu_tlb_flush_asid
VAALE1IS_HELPER = {"tlbi.VAALE1IS": 1, "dsb": 2, "isb": 1}  # one cpu_tlb_flush_all_asid


def times(d, k):
    return {key: v * k for key, v in d.items()}


def plus(*ds):
    out = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def active(m, ps, cpu=0):
    """A user pmap switched in (pm_active = 1) on cpus[cpu]."""
    pm = ps.pmap_create(m.cpus[cpu])
    ps.pmap_activate(m.cpus[cpu], pm)
    return pm


def l3_desc(m, ps, pm, va):
    _, vp3 = ps.pmap_vp_lookup(pm, va)
    return m.mem.read64(vp3.pa + VP_IDX3(va) * 8)


# ---------------------------------------------------------------- pmap_enter

def test_enter_unchanged_mapping_returns_early_1_113():
    m, ps = make()
    c0 = m.cpus[0]
    pm = active(m, ps)
    pa, pa2 = user_frames(m, pm, 2)
    ps.pmap_enter(c0, pm, VA, pa, RW)
    writes = c0.events["pte_writes"]
    # 1.113 pmap_enter: `if (pted && PTED_VALID(pted)) { if (same PA && same prot && same
    # cache) { pmap_unlock(pm); return 0; } ...}`: nothing written, no TLBI
    _, d = delta(m, ps.pmap_enter, c0, pm, VA, pa, RW)
    assert d == [{}, {}]
    assert c0.events["pte_writes"] == writes and pm.pm_stats.resident_count == 1
    # another PA: pmap_remove_pted (ttlb_flush: 2 helpers) + the insert's ttlb_flush (2)
    _, d = delta(m, ps.pmap_enter, c0, pm, VA, pa2, RW)
    assert d == [times(VAE1IS_HELPER, 4), {}]
    # another prot on the same PA: the same 4 helpers
    _, d = delta(m, ps.pmap_enter, c0, pm, VA, pa2, PROT_READ)
    assert d == [times(VAE1IS_HELPER, 4), {}]
    assert pm.pm_stats.resident_count == 1


def test_enter_unchanged_mapping_is_redone_in_1_58():
    m, ps = make(legacy=True)
    c0 = m.cpus[0]
    pm = active(m, ps)
    pa = user_frames(m, pm, 1)[0]
    ps.pmap_enter(c0, pm, VA, pa, RW)
    # 1.58 has no early return: pmap_remove_pted -> pmap_pte_remove (ttlb_flush: 2) and
    # pmap_remove_pted's own ttlb_flush (2); then pmap_enter's ttlb_flush (2) = 6 helpers
    _, d = delta(m, ps.pmap_enter, c0, pm, VA, pa, RW)
    assert d == [times(VAE1IS_HELPER, 6), {}]


def test_enter_flush_is_unconditional_in_1_58():
    # pmap_enter(..., flags = 0): pmap_pte_insert is skipped (no R/W/X/WIRED in flags).
    # 1.58 calls ttlb_flush(pm, va) anyway (2 helpers, no pm_active test in 1.58's
    # ttlb_flush); 1.113 calls it inside the `if (flags & ...)` block: nothing.
    for legacy, expected in ((True, times(VAE1IS_HELPER, 2)), (False, {})):
        m, ps = make(legacy=legacy)
        c0 = m.cpus[0]
        pm = active(m, ps)
        pa = user_frames(m, pm, 1)[0]
        _, d = delta(m, ps.pmap_enter, c0, pm, VA, pa, RW, 0)
        assert d == [expected, {}], legacy
        assert l3_desc(m, ps, pm, VA) == 0
        # 1.58 flushes an inactive pmap too (its ttlb_flush has no pm_active test)
        pm2 = ps.pmap_create(c0)
        _, d = delta(m, ps.pmap_enter, c0, pm2, VA, user_frames(m, pm2, 1)[0], RW)
        assert d == [times(VAE1IS_HELPER, 2) if legacy else {}, {}], legacy


def test_first_exec_mapping_syncs_the_icache_through_zero_page_1_113():
    m, ps = make(trace=True)
    c0, c1 = m.cpus
    pm = ps.pmap_create(c0)                     # pm_active == 0: ttlb_flush(pm) is skipped
    pa = user_frames(m, pm, 1)[0]
    cost = m.core.cost
    start, cycles = len(m.trace.records), c1.cycles
    # pmap_enter(RX, flags RX) on cpu1: PG_PMAP_EXE clear -> pmap_icache_sync_page:
    # pmap_kenter_pa(zero_page + 1 * PAGE_SIZE) -> _pmap_kenter_pa -> ttlb_flush(kernel)
    # = 1 VAALE1IS helper; pmap_kremove_pg -> ttlb_flush(kernel) = 1 more
    _, d = delta(m, ps.pmap_enter, c1, pm, VA, pa, RX)
    assert d == [{}, times(VAALE1IS_HELPER, 2)]
    kva = PMAP_ZERO_PAGE_VA + 1 * 0x1000
    ops = [(r[1], r[3]["op"], r[3]["va"]) for r in m.trace.records[start:] if r[2] is Ev.TLBI]
    assert ops == [(1, "VAALE1IS", kva), (1, "VAALE1IS", kva)]
    assert ps.pmap_extract(ps.pmap_kernel(), kva) is None       # the window is unmapped again
    # cycles: pm_mtx + pv_mtx; 2 table frames zeroed + 2 table descriptors; the kenter's
    # and kremove's descriptor writes; 2 x (dsb ishst + tlbi + dsb ish + isb); the icache
    # maintenance; the user PTE write
    helper = cost.dsb_ishst + cost.tlbi_broadcast + cost.dsb_ish(1) + cost.isb
    assert c1.cycles - cycles == (2 * cost.lock_acquire + 2 * cost.frame_zero + 2 * cost.descriptor_write
                                  + 2 * cost.descriptor_write + 2 * helper + cost.icache_sync_page
                                  + cost.descriptor_write)
    assert c1.events["icache_sync_page"] == 1
    # PG_PMAP_EXE is now set: a second exec mapping of the frame syncs nothing
    _, d = delta(m, ps.pmap_enter, c1, pm, VA + 0x1000, pa, RX)
    assert d == [{}, {}]
    # a write-enabled mapping entered for a write clears PG_PMAP_EXE ...
    _, d = delta(m, ps.pmap_enter, c1, pm, VA + 0x2000, pa, RW)
    assert d == [{}, {}]
    # ... so the next exec mapping syncs again: 2 VAALE1IS helpers
    _, d = delta(m, ps.pmap_enter, c0, pm, VA + 0x3000, pa, RX)
    assert d == [times(VAALE1IS_HELPER, 2), {}]
    # an exec mapping entered without exec access (flags = R) does not sync yet
    pa2 = user_frames(m, pm, 1)[0]
    _, d = delta(m, ps.pmap_enter, c0, pm, VA + 0x4000, pa2, RX, PROT_READ)
    assert d == [{}, {}]


def test_first_exec_mapping_in_1_58_is_cycles_only():
    # 1.58 pmap_enter: ttlb_flush (2 helpers, unconditional), then
    # `if (need_sync && (pm == pmap_kernel() || curproc's pmap == pm))
    #  cpu_icache_sync_range(va, PAGE_SIZE)`: no kenter/kremove, no VAALE1IS
    m, ps = make(legacy=True)
    c0 = m.cpus[0]
    pm = active(m, ps)                                   # ci_curpm of cpu0
    pa = user_frames(m, pm, 1)[0]
    _, d = delta(m, ps.pmap_enter, c0, pm, VA, pa, RX)
    assert d == [times(VAE1IS_HELPER, 2), {}] and c0.events["icache_sync_page"] == 1
    other = ps.pmap_create(c0)                           # not curproc's pmap: no sync at all
    pa2 = user_frames(m, other, 1)[0]
    ps.pmap_enter(c0, other, VA, pa2, RX)
    assert c0.events["icache_sync_page"] == 1


# ---------------------------------------------------------------- pmap_fault_fixup

def xlate(m, pm, va, access):
    return translate(m.mem, va, access, 0, pm.pm_pt0pa, 0, TCR)


def test_write_fault_enables_read_write_and_exec():
    m, ps = make()
    c0 = m.cpus[0]
    pm = active(m, ps)
    pa = user_frames(m, pm, 1)[0]
    ps.pmap_enter(c0, pm, VA, pa, RWX, PROT_READ)        # read fault: only R enabled
    assert xlate(m, pm, VA, Access.FETCH).kind is FaultKind.PERMISSION
    # write fault: `pted->pted_pte |= (pted->pted_va & (PROT_READ|PROT_WRITE|PROT_EXEC))`;
    # pted_va has EXEC and PG_PMAP_EXE was cleared by the write -> pmap_icache_sync_page
    # (2 VAALE1IS helpers), then pmap_pte_update + ttlb_flush (2 VAE1IS helpers)
    ok, d = delta(m, ps.pmap_fault_fixup, c0, pm, VA, PROT_WRITE)
    assert ok and d == [plus(times(VAALE1IS_HELPER, 2), times(VAE1IS_HELPER, 2)), {}]
    for acc in (Access.READ, Access.WRITE, Access.FETCH):
        assert isinstance(xlate(m, pm, VA, acc), Translation), acc
    assert not l3_desc(m, ps, pm, VA) & ATTR_UXN


def test_read_and_exec_faults_enable_read_and_exec():
    m, ps = make()
    c0 = m.cpus[0]
    pm = active(m, ps)
    pa, pa2 = user_frames(m, pm, 2)
    ps.pmap_enter(c0, pm, VA, pa, RWX, 0)                 # nothing enabled, descriptor 0
    # read fault: `pted->pted_pte |= (pted->pted_va & (PROT_READ|PROT_EXEC))`: R and X,
    # never W; pted_va has EXEC, PG_PMAP_EXE clear -> icache sync (2 VAALE1IS) + 2 VAE1IS
    ok, d = delta(m, ps.pmap_fault_fixup, c0, pm, VA, PROT_READ)
    assert ok and d == [plus(times(VAALE1IS_HELPER, 2), times(VAE1IS_HELPER, 2)), {}]
    assert isinstance(xlate(m, pm, VA, Access.FETCH), Translation)
    assert xlate(m, pm, VA, Access.WRITE).kind is FaultKind.PERMISSION
    # exec fault on an R-only page: R|X again; PG_PMAP_EXE is set now: 2 VAE1IS only
    ps.pmap_enter(c0, pm, VA + 0x1000, pa, RX, PROT_READ)
    ok, d = delta(m, ps.pmap_fault_fixup, c0, pm, VA + 0x1000, PROT_EXEC)
    assert ok and d == [times(VAE1IS_HELPER, 2), {}]
    assert isinstance(xlate(m, pm, VA + 0x1000, Access.FETCH), Translation)
    # a fault for an access the mapping does not allow is not ref/mod emulation
    ps.pmap_enter(c0, pm, VA + 0x2000, pa2, PROT_READ)
    ok, d = delta(m, ps.pmap_fault_fixup, c0, pm, VA + 0x2000, PROT_WRITE)
    assert not ok and d == [{}, {}]


def test_unmanaged_pages_are_not_fixed_up():
    m, ps = make()
    c0 = m.cpus[0]
    pm = active(m, ps)
    # "If it's unmanaged, it must not fault": PHYS_TO_VM_PAGE(pa) == NULL; the last frame
    # of memory was never handed out by the allocator, so uvm does not manage it
    pa = m.mem.size - 0x1000
    assert m.frames.info(pa).kind is FrameKind.FREE
    ps.pmap_enter(c0, pm, VA, pa, RW, 0)
    ok, d = delta(m, ps.pmap_fault_fixup, c0, pm, VA, PROT_READ)
    assert not ok and d == [{}, {}] and l3_desc(m, ps, pm, VA) == 0


def test_1_58_fixup_refuses_an_empty_descriptor():
    # 1.58 pmap_fault_fixup: `if (*pl3 == 0) goto done;` (1.113 dropped the test)
    for legacy, fixed in ((True, False), (False, True)):
        m, ps = make(legacy=legacy)
        c0 = m.cpus[0]
        pm = active(m, ps)
        pa = user_frames(m, pm, 1)[0]
        ps.pmap_enter(c0, pm, VA, pa, RW, 0)
        assert ps.pmap_fault_fixup(c0, pm, VA, PROT_READ) is fixed, legacy


# ---------------------------------------------------------------- descriptors, GP, tramp

def test_kernel_ptes_carry_gp_and_prot_none_is_an_access_flag_fault():
    m, ps = make()
    c0 = m.cpus[0]
    k = ps.pmap_kernel()
    pa = user_frames(m, k, 1)[0]
    # pmap_pte_update: access_bits = ap_bits_kern[prot] | pm->pm_guarded (ATTR_GP for
    # pmap_kernel and pmap_tramp); `*pl3 = access_bits ? pte : 0`
    ps.pmap_kenter_pa(c0, KVA, pa, RW)
    d = l3_desc(m, ps, k, KVA)
    assert d & ATTR_GP and d & ATTR_AF
    ps.pmap_kenter_pa(c0, KVA + 0x1000, pa, PROT_NONE)
    d = l3_desc(m, ps, k, KVA + 0x1000)
    assert d & 0b11 == 0b11 and d & ATTR_GP and not d & ATTR_AF        # valid, AF = 0
    r = translate(m.mem, KVA + 0x1000, Access.READ, 1, ps.zero_page, ps.kernel_l1, TCR)
    assert r.kind is FaultKind.ACCESS_FLAG
    # a user PROT_NONE pte has no GP: access_bits == 0 -> descriptor 0 -> translation fault
    pm = active(m, ps)
    ps.pmap_enter(c0, pm, VA, user_frames(m, pm, 1)[0], PROT_NONE, PMAP_WIRED)
    assert l3_desc(m, ps, pm, VA) == 0 and xlate(m, pm, VA, Access.READ).kind is FaultKind.TRANSLATION
    assert ps.pmap_tramp.pm_guarded == ATTR_GP and ps.pmap_tramp.pm_active == 1


def test_1_58_prot_none_is_a_valid_descriptor_without_af_and_no_gp():
    # 1.58: ap_bits_user[PROT_NONE] = ATTR_PXN|ATTR_UXN|ATTR_AP(2), and pmap_pte_update
    # always stores `pte` (no `access_bits ? pte : 0`); no pm_guarded in 1.58
    m, ps = make(legacy=True)
    c0 = m.cpus[0]
    pm = active(m, ps)
    ps.pmap_enter(c0, pm, VA, user_frames(m, pm, 1)[0], PROT_NONE, PMAP_WIRED)
    d = l3_desc(m, ps, pm, VA)
    assert d & 0b11 == 0b11 and not d & ATTR_AF and not d & ATTR_GP
    assert xlate(m, pm, VA, Access.READ).kind is FaultKind.ACCESS_FLAG
    ps.pmap_kenter_pa(c0, KVA, user_frames(m, ps.pmap_kernel(), 1)[0], RW)
    assert not l3_desc(m, ps, ps.pmap_kernel(), KVA) & ATTR_GP


def test_kernel_mappings_are_wired():
    m, ps = make()
    c0 = m.cpus[0]
    k = ps.pmap_kernel()
    wired = k.pm_stats.wired_count
    # _pmap_kenter_pa: `flags |= PMAP_WIRED`; pmap_kremove_pg: `if (PTED_WIRED) wired--`
    ps.pmap_kenter_pa(c0, KVA, user_frames(m, k, 1)[0], RW)
    assert k.pm_stats.wired_count == wired + 1
    ps.pmap_kremove(c0, KVA, 0x1000)
    assert k.pm_stats.wired_count == wired


# ---------------------------------------------------------------- ASIDs in 1.58

def test_1_58_allocates_a_random_asid_in_pmap_pinit_without_generations():
    m, ps = make(legacy=True)
    c0 = m.cpus[0]
    assert isinstance(ps.asids, RandomAsidAllocator) and ps.pmap_nasid == 65536
    pms = [ps.pmap_create(c0) for _ in range(300)]
    # pmap_pinit -> pmap_allocate_asid: `asid = arc4random() & (NUM_ASID - 2)` until free
    asids = [p.asid for p in pms]
    assert len(set(asids)) == 300 and all(a and a % 2 == 0 for a in asids)
    assert all(p.pm_asid == p.asid for p in pms)               # no generation bits
    # 1.58 pmap_setttb allocates nothing: TTBR0 <- zero, isb, cpu_setttb (TTBR1, isb,
    # TTBR0, isb), ci_flush_bp (cpu_flush_bp_psci on the A72: cycles only)
    before = pms[7].pm_asid
    _, d = delta(m, ps.pmap_setttb, c0, pms[7])
    assert d == [{"isb": 3, "ttbr_writes": 3}, {}] and pms[7].pm_asid == before
    assert c0.asid == before
    # pmap_free_asid: two ASIDE1IS helpers, then the bits are cleared (no generation test)
    ps.pmap_setttb(c0, ps.pmap_kernel())
    _, d = delta(m, ps.pmap_destroy, c0, pms[7])
    assert d == [times({"tlbi.ASIDE1IS": 1, "dsb": 2, "isb": 1}, 2), {}]
    assert ps.asids.bits(before) == 0
    assert m.events()["tlbi.VMALLE1IS"] == 1 and m.events()["asid_rollovers"] == 0  # bootstrap only


def test_1_58_asid_exhaustion_is_a_clear_error_not_a_hang():
    m, ps = make(legacy=True)
    for w in range(len(ps.pmap_asid)):
        ps.pmap_asid[w] = FULL_WORD
    ps.asids.npairs_used = 65536 // 2 - 1
    frames = m.frames.counts()
    with pytest.raises(PmapError, match="spin forever"):
        ps.pmap_create(m.cpus[0])
    assert m.frames.counts() == frames                           # nothing allocated


# ---------------------------------------------------------------- pmap_purge

@pytest.mark.parametrize("revision", ["1.58", "1.111"])
def test_pmap_purge_does_not_exist_before_1_113(revision):
    m, ps = make(revision=revision)
    pm = active(m, ps)
    for call in (lambda: ps.pmap_purge(m.cpus[0], pm), lambda: ps.pmap_purge_flush(m.cpus[0], pm),
                 lambda: next(ps.pmap_purge_steps(m.cpus[0], pm))):
        with pytest.raises(PmapError, match="does not exist"):
            call()
    assert pm.pm_active == 1 and m.cpus[0].ttbr0 == pm.pm_pt0pa


def test_pmap_purge_steps_one_spin_per_yield():
    m, ps = make()
    c0, c1 = m.cpus
    pm = active(m, ps)
    ps.pmap_activate(c1, pm)                                     # a sibling on cpu1
    steps = ps.pmap_purge_steps(c0, pm)
    before = c0.events.copy()
    assert next(steps) == 1 and next(steps) == 2                 # `while (pm_active != 1)`
    assert c0.events["spin_wait"] - before["spin_wait"] == 2
    assert c0.ttbr0 == pm.pm_pt0pa and c0.events["tlbi.ASIDE1IS"] == before["tlbi.ASIDE1IS"]
    ps.pmap_deactivate(c1, pm)                                   # the sibling's exit1 tail
    with pytest.raises(StopIteration) as done:
        next(steps)
    assert done.value.value == 2
    # after the wait: TTBR0 <- zero page, isb, 2 cpu_tlb_flush_asid_all helpers
    d = {k: v for k, v in (c0.events - before).items() if k in ("tlbi.ASIDE1IS", "dsb", "isb", "ttbr_writes")}
    assert d == {"tlbi.ASIDE1IS": 2, "dsb": 4, "isb": 3, "ttbr_writes": 1}
    assert pm.pm_active == 0 and pm.pm_pt0pa == ps.zero_page
    assert not ps.pmap_purge_ready(pm)


def test_pmap_purge_flush_refuses_while_siblings_are_active():
    m, ps = make()
    c0, c1 = m.cpus
    pm = active(m, ps)
    ps.pmap_activate(c1, pm)
    with pytest.raises(PmapError, match="pm_active = 2"):
        ps.pmap_purge_flush(c0, pm)
    assert pm.pm_active == 2


# ---------------------------------------------------------------- cores: erratum, BP flush

def test_repeat_tlbi_erratum_doubles_every_tlbi():
    # Linux __tlbi() under ARM64_WORKAROUND_REPEAT_TLBI: `tlbi op; dsb ish; tlbi op`.
    # One cpufunc helper becomes dsb ishst; tlbi; dsb ish; tlbi; dsb ish; isb:
    # 2 TLBI + 3 DSB + 1 ISB.
    helper = {"tlbi.VAE1IS": 2, "dsb": 3, "isb": 1}
    n = 3
    for core, per in (("cortex-a76", helper), ("neoverse-n1", helper), ("cortex-a72", VAE1IS_HELPER)):
        m, ps = make(core=core, ncpus=4)
        c0 = m.cpus[0]
        pm = active(m, ps)
        for i, pa in enumerate(user_frames(m, pm, n)):
            ps.pmap_enter(c0, pm, VA + i * 0x1000, pa, RW)
        # pmap_remove: per page pmap_remove_pted -> ttlb_flush = 2 helpers
        _, d = delta(m, ps.pmap_remove, c0, pm, VA, VA + n * 0x1000)
        assert d == [times(per, 2 * n), {}, {}, {}], core
    # cycles of one helper on 4 CPUs (A76): dsb ishst + 2 x (tlbi issue + dsb ish completing
    # a broadcast TLBI: base + 3 x per-cpu) + isb
    m, ps = make(core="cortex-a76", ncpus=4)
    c0, cost = m.cpus[0], m.core.cost
    before = c0.cycles
    cpu_tlb_flush_asid(c0, 5 << 48 | 0x2000)
    assert c0.cycles - before == (cost.dsb_ishst + 2 * cost.tlbi_broadcast
                                  + 2 * (cost.dsb_ish_base + 3 * cost.dsb_ish_per_cpu) + cost.isb)
    # pmap_purge on the A76: TTBR0 park (1 isb) + 2 doubled ASIDE1IS helpers
    pm = active(m, ps)
    _, d = delta(m, ps.pmap_purge, c0, pm)
    assert d[0] == {"tlbi.ASIDE1IS": 4, "dsb": 6, "isb": 3, "ttbr_writes": 1}


def test_context_switch_flushes_the_branch_predictor_on_cores_without_csv2():
    # pmap_setttb ends with ci->ci_flush_bp(): cpu_flush_bp_psci (an SMC) on the A72,
    # cpu_flush_bp_noop on the A53 (known not vulnerable) and on A76/N1 (CSV2)
    for core, calls in (("cortex-a72", 1), ("cortex-a53", 0), ("cortex-a76", 0), ("neoverse-n1", 0)):
        m, ps = make(core=core)
        c0, cost = m.cpus[0], m.core.cost
        pm = active(m, ps)                                       # ASID allocated here
        ps.pmap_setttb(c0, ps.pmap_kernel())
        before, n = c0.cycles, c0.events["flush_bp_psci"]
        ps.pmap_setttb(c0, pm)
        # TTBR0 <- zero, isb; TTBR1 (ASID), isb; TTBR0, isb; ci_flush_bp
        assert c0.cycles - before == 3 * cost.msr_ttbr + 3 * cost.isb + calls * cost.flush_bp_psci, core
        assert c0.events["flush_bp_psci"] - n == calls, core


# ---------------------------------------------------------------- policy data

def test_revisions_are_policy_data():
    src = inspect.getsource(pmap_module)
    assert "revision ==" not in src and 'revision !=' not in src and ".legacy" not in src
    assert set(POLICIES) == {"1.58", "1.111", "1.113"}
    assert POLICIES["1.58"].pte_remove_flushes and not POLICIES["1.113"].pte_remove_flushes
    assert POLICIES["1.113"].has_pmap_purge and not POLICIES["1.111"].has_pmap_purge


# ---------------------------------------------------------------- batched flushes

def _teardown_run(revision, batch, trace=None):
    """4 CPUs with TLB entries of a live pmap (odd ASID at EL0 on cpu0/1, even ASID at EL1
    on cpu2/3) and one TLBI left pending on cpu0; then one pmap_remove of every page."""
    m, ps = make(revision=revision, ncpus=4, seed=3, trace=trace)
    ps.batch_flushes = batch
    cpus = m.cpus
    pm = ps.pmap_create(cpus[0])
    n = 40
    for i, pa in enumerate(user_frames(m, pm, n)):
        ps.pmap_enter(cpus[0], pm, VA + 0x1F_0000 + i * 0x1000, pa, RW, RW | (PMAP_WIRED if i % 7 == 0 else 0))
    for c in cpus:
        ps.pmap_activate(c, pm)
    for c in cpus[:2]:
        ps.pmap_userret(c)
    for i, c in enumerate(cpus):
        for k in range(0, n, 3):
            assert isinstance(c.lookup(VA + 0x1F_0000 + k * 0x1000, Access.READ, 0 if i < 2 else 1), Translation)
    before = cpus[0].events["tlbi.VAE1IS"]
    cpus[0].tlbi(TLBIOp.VAE1IS, ((VA + 0x1F_0000) >> 12) | (pm.asid | 1) << 48)    # pending, no DSB yet
    removed = ps.pmap_remove(cpus[0], pm, VA, VA + 0x40_0000)
    return m, pm, removed, cpus[0].events["tlbi.VAE1IS"] - before


@pytest.mark.parametrize("revision,trace", [("1.113", None), ("1.58", None), ("1.113", True), ("1.58", True)])
def test_batched_teardown_flushes_equal_one_sequence_at_a_time(revision, trace):
    a = _teardown_run(revision, batch=True, trace=trace)
    b = _teardown_run(revision, batch=False, trace=trace)
    (ma, pma, na, tlbis), (mb, pmb, nb, _) = a, b
    assert na == nb == 40
    # hand count: 40 pages x ttlb_flush (2 VAE1IS helpers), twice per page in 1.58, plus
    # the pending TLBI on cpu0
    per_page = 4 if revision == "1.58" else 2
    assert tlbis == 40 * per_page + 1
    for ca, cb in zip(ma.cpus, mb.cpus):
        assert ca.events == cb.events and ca.cycles == cb.cycles and ca.pending == cb.pending == []
    assert ma.stats() == mb.stats()
    assert pma.pm_stats == pmb.pm_stats and pma.pm_stats.resident_count == 0
    if trace:                                       # every record, with its cycle stamp
        assert ma.trace.records == mb.trace.records and len(ma.trace.records) > 40 * per_page * 5
    # every entry of the dead mappings is gone from every CPU: each lookup walks and faults
    for m in (ma, mb):
        for i, c in enumerate(m.cpus):
            for k in range(40):
                r = c.lookup(VA + 0x1F_0000 + k * 0x1000, Access.READ, 0 if i < 2 else 1)
                assert r.kind is FaultKind.TRANSLATION
    assert ma.stats() == mb.stats()


def test_el0_entry_runs_the_cores_bhb_loop():
    # OpenBSD arm64 cpu.c cpu_mitigate_spectre_bhb(): trampoline_vectors_loop_8 (A72),
    # _loop_24 (A76, N1), none (A53). trampoline.S's vector entry from EL0 runs the loop,
    # then moves TTBR1 back to the kernel L1 (one MSR + ISB): cycles only, no extra barrier
    for core, k in (("cortex-a72", 8), ("cortex-a76", 24), ("neoverse-n1", 24), ("cortex-a53", 0)):
        m, ps = make(core=core)
        c0, cost = m.cpus[0], m.core.cost
        ps.pmap_setttb(c0, active(m, ps))
        ps.pmap_userret(c0)
        before = c0.cycles
        _, d = delta(m, ps.pmap_kernel_entry, c0)
        assert d == [{"isb": 1, "ttbr_writes": 1}, {}], core
        assert c0.cycles - before == cost.msr_ttbr + cost.isb + k * cost.bhb_loop_iteration, core
        assert c0.events["bhb_loop"] == (1 if k else 0), core


def test_pmap_protect_exec_only_drops_read_in_1_113_not_in_1_58():
    # pmap_page_ro: `pted_va &= ~PROT_WRITE` always; `if ((prot & PROT_EXEC) == 0)` drop
    # EXEC; 1.113 adds `if ((prot & PROT_READ) == 0)` drop READ, which 1.58 does not have.
    # Each page: pmap_pte_update + ttlb_flush (2 VAE1IS helpers)
    for legacy, readable in ((False, False), (True, True)):
        m, ps = make(legacy=legacy)
        c0 = m.cpus[0]
        pm = active(m, ps)
        ps.pmap_enter(c0, pm, VA, user_frames(m, pm, 1)[0], RWX)
        _, d = delta(m, ps.pmap_protect, c0, pm, VA, VA + 0x1000, PROT_EXEC)
        assert d == [times(VAE1IS_HELPER, 2), {}]
        assert isinstance(xlate(m, pm, VA, Access.FETCH), Translation)
        assert isinstance(xlate(m, pm, VA, Access.READ), Translation) is readable, legacy
        assert xlate(m, pm, VA, Access.WRITE).kind is FaultKind.PERMISSION


def _populate_run(revision, batch):
    """4 CPUs holding leaf and walk-cache entries of a live pmap's first pages, one TLBI
    pending on cpu0; then cpu0 enters 39 more pages of the same L3 table and maps a held
    page again (pmap_remove_pted first), the loop inside flushes_batched or not."""
    m, ps = make(revision=revision, ncpus=4, seed=3)
    cpus = m.cpus
    pm = ps.pmap_create(cpus[0])
    frames = user_frames(m, pm, 48)
    for i, pa in enumerate(frames[:8]):
        ps.pmap_enter(cpus[0], pm, VA + i * 0x1000, pa, RW)
    for c in cpus:
        ps.pmap_activate(c, pm)
    for c in cpus[:2]:
        ps.pmap_userret(c)
    for i, c in enumerate(cpus):
        for k in range(8):
            assert isinstance(c.lookup(VA + k * 0x1000, Access.READ, 0 if i < 2 else 1), Translation)
    before = cpus[0].events["tlbi.VAE1IS"]
    cpus[0].tlbi(TLBIOp.VAE1IS, ((VA + 0x1000) >> 12) | (pm.asid | 1) << 48)      # pending, no DSB yet
    with ps.flushes_batched(cpus[0]) if batch else contextlib.nullcontext():
        for i, pa in enumerate(frames[8:47]):
            ps.pmap_enter(cpus[0], pm, VA + (8 + i) * 0x1000, pa, RW)
        ps.pmap_enter(cpus[0], pm, VA, frames[47], RW)
    return m, cpus[0].events["tlbi.VAE1IS"] - before, frames[47]


@pytest.mark.parametrize("revision,held_max", [("1.58", 8192), ("1.113", 8192), ("1.58", 8)])
def test_batched_enter_flushes_equal_one_sequence_at_a_time(revision, held_max, monkeypatch):
    monkeypatch.setattr(pmap_module, "HELD_FLUSHES_MAX", held_max)     # 8: issued in chunks
    (ma, tlbis, new_pa), (mb, tlbis_b, _) = _populate_run(revision, True), _populate_run(revision, False)
    # hand count: 39 new pages x ttlb_flush (2 VAE1IS helpers); the page entered again:
    # pmap_remove_pted's ttlb_flush (and pmap_pte_remove's own in 1.58) and the enter's;
    # plus the pending TLBI on cpu0
    assert tlbis == tlbis_b == 39 * 2 + (6 if revision == "1.58" else 4) + 1
    for ca, cb in zip(ma.cpus, mb.cpus):
        assert ca.events == cb.events and ca.cycles == cb.cycles and ca.pending == cb.pending == []
    assert ma.stats() == mb.stats()
    assert sum(ma.stats()[f"cpu{i}.walk_cache.flushed_entries"] for i in range(4)) > 0
    for i, c in enumerate(ma.cpus):                  # the old translation of VA is gone everywhere
        r = c.lookup(VA, Access.READ, 0 if i < 2 else 1)
        assert isinstance(r, Translation) and r.pa_of(VA) == new_pa
