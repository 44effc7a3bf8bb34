"""The hazard checker on hand-built exits (as emu/demo.py does): a process on real pmap_py
tables, guest threads on Unicorn CPUs, then a teardown in a chosen order from Python.

Every expectation is derived by hand from the scenario (which CPU holds which entry,
with which ASID, which TTBR is live when a frame is freed), following OpenBSD's pmap.c
1.113 (pmap_purge, pmap_deactivate, pmap_destroy -> pmap_free_asid) and the Arm ARM's
TLBI scopes (D8, "TLB maintenance instructions": ASIDE1IS removes every entry of the ASID
including walk-cache entries, VALE1IS only last-level entries of the VA).
"""
from __future__ import annotations

import pytest

from emu.checker import Checker, ViolationKind
from emu.cpu import StopKind
from emu.descriptors import table_desc
from emu.frames import FrameKind
from emu.machine import Machine
from emu.sysregs import SysReg
from emu.tlbi import TLBIOp, tlbi_operand
from emu.walker import Access, Translation
from guest.asm import assemble
from pmap_py import PROT_EXEC, PROT_READ, PROT_WRITE, pmap_bootstrap
from pmap_py.asid import ASID_USER
from pmap_py.cpufunc import MASK64, cpu_tlb_flush_asid_all

CODE_VA = 0x40_0000
HEAP_VA = 0x1000_0000            # 8 heap pages, all in one L3 table (one 2 MB region)
NHEAP = 8
KVA = 0xFFFF_FFC0_0010_0000      # a kernel VA (TTBR1 range) mapped with pmap_kenter_pa

STALE_USE = ViolationKind.STALE_TLB_USE
WALK_FREED = ViolationKind.WALK_FREED_TABLE
REUSE = ViolationKind.ASID_REUSE_STALE
STALE_ENTRY = ViolationKind.STALE_TLB_ENTRY
LIVELOCK = ViolationKind.LIVELOCK


def program(pages: list[int]) -> str:
    """Step i loads heap page pages[i], then stops at an SVC (a step boundary)."""
    lines = [f"movz x0, #{HEAP_VA >> 16:#x}, lsl #16"]
    for p in pages:
        lines += [f"add x2, x0, #{p}, lsl #12", "ldr x1, [x2]", "svc #0"]
    lines.append("b .")
    return "\n".join("    " + s for s in lines) + "\n"


class Thread:
    """A user thread of a process, pinned to one CPU; step() runs it to its next SVC."""

    def __init__(self, world, proc, cpu):
        self.world, self.proc, self.cpu = world, proc, cpu
        self.pc = CODE_VA

    def step(self):
        stop = self.cpu.run(1000, pc=self.pc)
        assert stop.kind is StopKind.SVC, stop
        self.pc = stop.pc
        return stop

    def enter(self):
        self.world.ps.pmap_activate(self.cpu, self.proc.pm)     # cpu_fork + cpu_switchto
        self.world.ps.pmap_userret(self.cpu)


class Proc:
    def __init__(self, world, pages: list[int], asid_hint: int | None = None):
        ps, m, c0 = world.ps, world.m, world.m.cpus[0]
        self.world = world
        self.pm = ps.pmap_create(c0)
        if asid_hint is not None:
            # generation 0 is always stale: pmap_setttb allocates, and pmap_find_asid tries
            # the pmap's previous low 16 bits first
            self.pm.pm_asid = asid_hint
        self.code = assemble(program(pages), CODE_VA).code
        self.code_pa = m.frames.alloc(FrameKind.USER, owner=self.pm)
        m.load_code(self.code_pa, self.code)
        ps.pmap_enter(c0, self.pm, CODE_VA, self.code_pa, PROT_READ | PROT_EXEC)
        self.heap = []
        for i in range(NHEAP):
            pa = m.frames.alloc(FrameKind.USER, owner=self.pm)
            ps.pmap_enter(c0, self.pm, HEAP_VA + i * 0x1000, pa, PROT_READ | PROT_WRITE)
            self.heap.append(pa)
        self.frames = [self.code_pa] + self.heap

    def thread(self, cpu_index: int) -> Thread:
        t = Thread(self.world, self, self.world.m.cpus[cpu_index])
        t.enter()
        return t

    def teardown(self, cpu):
        """uvmspace_purge / uvm_map_teardown: pmap_remove every mapping, then
        uvm_unmap_detach frees the pages."""
        ps = self.world.ps
        ps.pmap_remove(cpu, self.pm, CODE_VA, CODE_VA + 0x1000)
        ps.pmap_remove(cpu, self.pm, HEAP_VA, HEAP_VA + NHEAP * 0x1000)
        for pa in self.frames:
            self.world.m.frames.free(pa)


class World:
    def __init__(self, ncpus=2, revision="1.113", trace=False):
        self.m = Machine(ncpus, 16 << 20, core="cortex-a72", seed=0, speculate="off", trace=trace)
        self.ck = Checker(self.m, reproducer="pytest tests/emu/test_checker.py")
        self.ps = pmap_bootstrap(self.m, revision=revision)

    def kinds(self):
        return [v.kind for v in self.ck.violations]

    def exit_sibling(self, t: Thread):
        """exit1 of a non-main thread: kernel entry, cpu_exit -> pmap_deactivate, sched_exit
        -> idle (pmap_setttb of the kernel pmap: ASID 0, TTBR0 = zero page)."""
        ps = self.ps
        ps.pmap_kernel_entry(t.cpu)
        ps.pmap_deactivate(t.cpu, t.proc.pm)
        ps.pmap_setttb(t.cpu, ps.pmap_kernel())

    def idle(self, cpu):
        self.ps.pmap_setttb(cpu, self.ps.pmap_kernel())


@pytest.fixture
def world():
    return World()


def purge_exit(w: World, main: Thread, reaper_cpu):
    """Path C (pmap.c 1.113): pmap_purge, teardown without flushes, pmap_deactivate returns
    early, switch to idle; the reaper's pmap_destroy frees the tables and the ASID."""
    ps, pm = w.ps, main.proc.pm
    ps.pmap_kernel_entry(main.cpu)
    ps.pmap_purge(main.cpu, pm)
    main.proc.teardown(main.cpu)
    ps.pmap_deactivate(main.cpu, pm)
    w.idle(main.cpu)
    assert ps.pmap_destroy(reaper_cpu, pm)


# ---------------------------------------------------------------------- safe orders

def test_purge_path_two_threads_is_clean(world):
    w = world
    p = Proc(w, [0, 1, 2])
    main, sib = p.thread(0), p.thread(1)
    for t in (main, sib, main, sib):
        t.step()
    # both CPUs hold user entries of ASID|1 for the code page and heap pages 0 and 1
    odd = p.pm.asid | ASID_USER
    for cpu in w.m.cpus:
        held = {e.va_base for e in cpu.tlb.entries() if e.asid == odd}
        assert held == {CODE_VA, HEAP_VA, HEAP_VA + 0x1000}
    w.exit_sibling(sib)              # pm_active 2 -> 1
    purge_exit(w, main, w.m.cpus[1])
    assert w.ck.violations == []
    assert not any(e.asid in (p.pm.asid, odd) for c in w.m.cpus for e in c.tlb.entries())


def test_legacy_reaper_path_is_clean():
    w = World(revision="1.58")
    p = Proc(w, [0, 1])
    main, sib = p.thread(0), p.thread(1)
    main.step(), sib.step()
    w.exit_sibling(sib)              # 1.58: pmap_deactivate touches no hardware; idle's setttb does
    w.exit_sibling(main)
    p.teardown(w.m.cpus[1])          # the reaper: 4 VAE1IS per page, then the pages are freed
    assert w.ps.pmap_destroy(w.m.cpus[1], p.pm)
    assert w.ck.violations == []


def test_reaper_path_1111_is_clean():
    w = World(revision="1.111")
    p = Proc(w, [0, 1])
    main, sib = p.thread(0), p.thread(1)
    main.step(), sib.step()
    w.exit_sibling(sib)
    w.exit_sibling(main)             # the last pmap_deactivate flushes both ASIDs
    p.teardown(w.m.cpus[1])          # flushes skipped: pm_active == 0
    assert w.ps.pmap_destroy(w.m.cpus[1], p.pm)
    assert w.ck.violations == []


# ---------------------------------------------------------------------- stale-tlb-entry / stale-tlb-use

def flush_before_sibling_deactivate(w: World):
    """Mutation of the purge path: the purge's TTBR0 switch and 2 ASIDE1IS happen while the
    sibling on cpu1 is still in userland (no wait for pm_active == 1)."""
    p = Proc(w, [0, 0, 0])
    main, sib = p.thread(0), p.thread(1)
    sib.step()                                   # cpu1: code page + heap page 0 in its TLB
    ps = w.ps
    ps.pmap_kernel_entry(main.cpu)
    pm = p.pm
    main.cpu.msr(SysReg.TTBR0_EL1, ps.zero_page)     # pmap_purge without its spin
    main.cpu.isb()
    cpu_tlb_flush_asid_all(main.cpu, (pm.pm_asid << 48) & MASK64)
    cpu_tlb_flush_asid_all(main.cpu, ((pm.pm_asid | ASID_USER) << 48) & MASK64)
    pm.pm_pt0pa, pm.pm_active = ps.zero_page, 0
    assert not w.m.cpus[1].tlb.entries()         # the flush did reach cpu1 ...
    sib.step()                                   # ... but its TTBR0 is live: it refills page 0 (and code)
    return p, main, sib


def test_flush_before_sibling_deactivate_is_flagged(world):
    w = world
    p, main, sib = flush_before_sibling_deactivate(w)
    odd = p.pm.asid | ASID_USER
    p.teardown(main.cpu)                         # pages freed while cpu1 still runs on the tables
    # By hand: cpu1 holds two entries of ASID|1, both usable (ASID|1 current on cpu1, TTBR0 =
    # the process's L1, EPD0 = 0): the code page and heap page 0. Freeing each frame is a
    # user-range stale-tlb-entry on cpu1.
    v = w.ck.violations
    assert [x.kind for x in v] == [STALE_ENTRY, STALE_ENTRY]
    assert {(x.cpu, x.va, x.pa, x.asid, x.range) for x in v} == {
        (1, CODE_VA, p.code_pa, odd, "user"), (1, HEAP_VA, p.heap[0], odd, "user")}
    heap = next(x for x in v if x.va == HEAP_VA)
    assert heap.fill_cycle is not None and heap.speculative is False
    assert "TTBR0" in heap.story and "freed" in heap.story
    # the sibling runs on: its code was freed, so it is fetched again, through the stale ITLB
    # entry; then its load of heap page 0 hits the stale DTLB entry
    sib.step()
    uses = [x for x in w.ck.violations if x.kind is STALE_USE]
    assert [(x.cpu, x.va, x.pa, x.range) for x in uses] == [(1, CODE_VA, p.code_pa, "user"),
                                                            (1, HEAP_VA, p.heap[0], "user")]
    assert all("use after free" in x.story for x in uses)


def test_with_a_trace_the_story_names_the_flush_that_came_too_early():
    """cpu0's two ASIDE1IS were issued before cpu1 refilled heap page 0: the story says so."""
    w = World(trace=True)
    p, main, sib = flush_before_sibling_deactivate(w)
    odd = p.pm.asid | ASID_USER
    p.teardown(main.cpu)
    heap = next(x for x in w.ck.violations if x.va == HEAP_VA)
    recs = w.m.trace.records
    issued = [(i, c) for i, (c, cpu, kind, f) in enumerate(recs)
              if kind.value == "tlbi" and f["op"] == "ASIDE1IS" and f["asid"] == odd]
    refill = [i for i, (c, cpu, kind, f) in enumerate(recs) if kind.value == "fill" and cpu == 1
              and f["va"] == HEAP_VA]
    assert len(issued) == 1 and len(refill) == 2 and refill[0] < issued[0][0] < refill[1]
    issued = [issued[0][1]]
    assert (f"The last ASIDE1IS {odd:#x} was ASIDE1IS {odd:#x} by cpu0 at cycle {issued[0]}, before this fill "
            f"(too early") in heap.story


def test_a_stale_entry_cached_by_unicorn_is_still_seen(world):
    """Only the heap page is freed (the code stays): Unicorn's own TLB still caches the
    translation of heap page 0, so the checker must flush it for the load to reach the model."""
    w = world
    p, main, sib = flush_before_sibling_deactivate(w)
    w.ps.pmap_remove(main.cpu, p.pm, HEAP_VA, HEAP_VA + NHEAP * 0x1000)
    w.m.frames.free(p.heap[0])
    assert [(x.kind, x.va) for x in w.ck.violations] == [(STALE_ENTRY, HEAP_VA)]
    sib.step()
    assert [(x.kind, x.va, x.pa) for x in w.ck.violations[1:]] == [(STALE_USE, HEAP_VA, p.heap[0])]


def test_stale_entry_of_a_descheduled_asid_is_not_usable_until_it_is_current_again(world):
    """Same refill, but the sibling is switched out (ASID 0 on cpu1) before the pages are
    freed: its entries cannot be used at the free, so only when ASID|1 is current again."""
    w = world
    p, main, sib = flush_before_sibling_deactivate(w)
    w.idle(sib.cpu)                              # preempted: cpu1 runs the kernel pmap (ASID 0)
    p.teardown(main.cpu)
    assert w.ck.violations == []
    w.ps.pmap_setttb(sib.cpu, p.pm)              # switched back in: TTBR0 = pm_pt0pa = zero page
    w.ps.pmap_userret(sib.cpu)                   # ASID|1 current again on cpu1
    assert {(x.kind, x.va) for x in w.ck.violations} == {(STALE_ENTRY, CODE_VA), (STALE_ENTRY, HEAP_VA)}
    sib.step()                                   # the fetch and the load of page 0 hit them
    assert [(x.kind, x.va, x.pa) for x in w.ck.violations[2:]] == [(STALE_USE, CODE_VA, p.code_pa),
                                                                   (STALE_USE, HEAP_VA, p.heap[0])]


# ---------------------------------------------------------------------- asid-reuse-stale

def reaper_exit_1113(w: World, p: Proc, main: Thread, reaper, free_asid_flush: bool):
    """Path B on 1.113 (no uvm_purge): the last pmap_deactivate only parks TTBR0, the
    reaper's teardown skips every flush (pm_active == 0), and pmap_destroy's
    pmap_free_asid is the only flush of the ASID pair; without it (an old pmap_free_asid:
    "XXX TLB Flush?") the bits are released with the entries still cached."""
    w.exit_sibling(main)
    p.teardown(reaper)
    if free_asid_flush:
        assert w.ps.pmap_destroy(reaper, p.pm)
    else:
        p.pm.pm_refs -= 1
        w.ps.pmap_release(reaper, p.pm)
        assert w.ps.asids.release(p.pm)
        p.pm.pm_destroyed = True


@pytest.mark.parametrize("flush", [True, False])
def test_asid_released_without_flush_then_reused(world, flush):
    w = world
    p = Proc(w, [0, 1])
    main = p.thread(0)
    main.step()
    main.step()
    asid = p.pm.asid
    reaper_exit_1113(w, p, main, w.m.cpus[1], flush)
    assert w.ck.violations == []                 # nothing usable yet: cpu0 runs ASID 0
    q = Proc(w, [0, 1], asid_hint=asid)          # a new process whose frames reuse p's
    t = q.thread(0)
    assert q.pm.asid == asid                     # ASID pair handed over
    if flush:
        t.step(), t.step()
        assert w.ck.violations == []
        return
    # By hand: cpu0 still holds p's three user entries of ASID|1 (code, heap 0, heap 1) and
    # three walk-cache entries (the L2 table, from the code walk; the L3 tables of the code
    # and the heap regions); pmap_userret makes ASID|1 current with q's tables in TTBR0:
    # asid-reuse-stale (user range, 6 entries), and the three stale leaves are usable again.
    kinds = w.kinds()
    assert kinds[0] is REUSE
    reuse = w.ck.violations[0]
    assert (reuse.cpu, reuse.asid, reuse.range, reuse.count) == (0, asid | ASID_USER, "user", 6)
    assert "3 TLB entries and 3 walk-cache entries" in reuse.story
    assert str(p.pm) in reuse.story and str(q.pm) in reuse.story
    assert sorted(x.va for x in w.ck.violations if x.kind is STALE_ENTRY) == [
        CODE_VA, HEAP_VA, HEAP_VA + 0x1000]
    # q's first instruction fetch and load hit p's entries: p's code frame is free or q's now
    n = len(w.ck.violations)
    t.cpu.run(1000, pc=CODE_VA)
    uses = [x for x in w.ck.violations[n:] if x.kind is STALE_USE]
    assert uses and uses[0].va == CODE_VA and uses[0].pa == p.code_pa


def kernel_fills_after_purge(w: World):
    """The exiting main thread touches a kernel VA after pmap_purge: the fill is tagged with
    the dying even ASID (TCR.A1: the ASID comes from TTBR1; the kernel PTE is nG)."""
    ps = w.ps
    c0 = w.m.cpus[0]
    kframe = w.m.frames.alloc(FrameKind.KERNEL, owner=ps.pmap_kernel())
    ps.pmap_kenter_pa(c0, KVA, kframe, PROT_READ | PROT_WRITE)
    p = Proc(w, [0])
    main = p.thread(0)
    main.step()
    ps.pmap_kernel_entry(c0)
    ps.pmap_purge(c0, p.pm)
    e = c0.lookup(KVA, Access.READ, 1)               # the kernel reads its own memory
    assert isinstance(e, Translation) and e.asid == p.pm.asid and e.ng
    p.teardown(c0)
    ps.pmap_deactivate(c0, p.pm)
    return p, main, kframe


def test_even_asid_kernel_entries_after_purge_are_not_violations(world):
    w = world
    p, main, _ = kernel_fills_after_purge(w)
    asid = p.pm.asid
    c0 = w.m.cpus[0]
    assert [e.va_base for e in c0.tlb.entries() if e.asid == asid] == [KVA]
    w.idle(c0)
    assert w.ps.pmap_destroy(w.m.cpus[1], p.pm)      # pmap_free_asid's ASIDE1IS removes it
    assert not [e for e in c0.tlb.entries() if e.asid == asid]
    q = Proc(w, [0], asid_hint=asid)
    q.thread(0).step()
    assert w.ck.violations == []


def test_drop_the_even_aside1is_of_pmap_free_asid(world):
    """Mutation: pmap_free_asid flushes only ASID|1. The kernel-range entry of the even ASID
    survives, and handing the pair to a new process is reported in the kernel range."""
    w = world
    p, main, _ = kernel_fills_after_purge(w)
    asid = p.pm.asid
    c0, c1 = w.m.cpus
    w.idle(c0)
    ps = w.ps
    p.pm.pm_refs -= 1
    ps.pmap_release(c1, p.pm)
    cpu_tlb_flush_asid_all(c1, ((p.pm.pm_asid | ASID_USER) << 48) & MASK64)   # the odd one only
    ps.asids.release(p.pm)
    p.pm.pm_destroyed = True
    q = Proc(w, [0], asid_hint=asid)
    q.thread(0)                                       # pmap_setttb: ASID current with q's TTBR0
    # By hand: the kernel walk of KVA from TTBR1 (start level 1) cached the kernel's L2 and L3
    # tables in cpu0's walk cache with the even ASID, and filled one leaf: 3 entries.
    v = w.ck.violations
    assert [(x.kind, x.cpu, x.va, x.asid, x.range, x.count) for x in v] == [
        (REUSE, 0, KVA, asid, "kernel", 3)]
    assert "1 TLB entry and 2 walk-cache entries" in v[0].story
    assert "kernel-range" in v[0].story and "pmap_purge" in v[0].story


def test_kernel_frame_freed_without_vaale1is_is_a_kernel_range_entry(world):
    w = world
    p, main, kframe = kernel_fills_after_purge(w)
    c0 = w.m.cpus[0]
    ps = w.ps
    # proper order: pmap_kremove (VAALE1IS) before the frame goes back: nothing to report
    ps.pmap_kremove(c0, KVA, 0x1000)
    w.m.frames.free(kframe)
    assert w.ck.violations == []
    # mutated order: the next kernel page is freed with its PTE cleared but no TLBI
    k2 = w.m.frames.alloc(FrameKind.KERNEL, owner=ps.pmap_kernel())
    ps.pmap_kenter_pa(c0, KVA + 0x1000, k2, PROT_READ | PROT_WRITE)
    assert isinstance(c0.lookup(KVA + 0x1000, Access.READ, 1), Translation)
    pted, vp3 = ps.pmap_vp_lookup(ps.pmap_kernel(), KVA + 0x1000)
    w.m.mem.write64(vp3.pa + ((KVA + 0x1000) >> 12 & 0x1FF) * 8, 0)
    w.m.frames.free(k2)
    v = w.ck.violations
    assert [(x.kind, x.cpu, x.va, x.pa, x.asid, x.range) for x in v] == [
        (STALE_ENTRY, 0, KVA + 0x1000, k2, p.pm.asid, "kernel")]
    assert "kernel-range" in v[0].story


# ---------------------------------------------------------------------- walk-freed-table

@pytest.mark.parametrize("op", [TLBIOp.VAE1IS, TLBIOp.VALE1IS])
def test_l3_table_freed_with_walk_cache_pointing_at_it(world, op):
    """An empty L3 table is unlinked and freed (as FreeBSD's pmap_unuse_pt does, with a
    non-last-level VAE1IS). With a last-level VALE1IS instead, cpu1's walk cache keeps the
    L3 table; the frame becomes another process's data; cpu1's next walk in that 2 MB
    region starts from the walk cache and reads it as descriptors."""
    w = world
    ps = w.ps
    p = Proc(w, [0, 1])
    t = p.thread(1)
    t.step()                                          # cpu1: walk cache holds p's L2 and L3 tables
    c0 = w.m.cpus[0]
    pm = p.pm
    vp2 = pm.pm_vp.vp[HEAP_VA >> 30 & 0x1FF]
    idx2 = HEAP_VA >> 21 & 0x1FF
    vp3 = vp2.vp.pop(idx2)
    l3 = vp3.pa
    w.m.mem.write64(vp2.pa + idx2 * 8, 0)            # unlink the L3 table
    for a in (pm.asid, pm.asid | ASID_USER):
        c0.dsb("ishst")
        c0.tlbi(op, tlbi_operand(HEAP_VA, a))
        c0.dsb("ish")
    c0.isb()
    q = ps.pmap_create(c0)
    w.m.frames.free(l3)
    reused = w.m.frames.alloc(FrameKind.USER, owner=q)   # most recently freed first
    assert reused == l3
    w.m.mem.write64(l3 + (HEAP_VA + 0x1000 >> 12 & 0x1FF) * 8, table_desc(0x1234000))   # q's data
    stop = t.cpu.run(1000, pc=t.pc)                   # step 2: load heap page 1 (not in the TLB)
    if op is TLBIOp.VAE1IS:
        # the walk restarts at TTBR0 and finds the L2 descriptor cleared: a translation fault
        assert stop.kind is StopKind.FAULT and stop.fault.level == 2
        assert w.ck.violations == []
        return
    v = [x for x in w.ck.violations if x.kind is WALK_FREED]
    assert [(x.cpu, x.va, x.pa, x.range) for x in v] == [
        (1, HEAP_VA + 0x1000, l3 + (HEAP_VA + 0x1000 >> 12 & 0x1FF) * 8, "user")]
    assert "walk-cache" in v[0].story and f"user of {q}" in v[0].story


def test_tables_freed_while_ttbr0_still_points_at_them(world):
    """pmap_vp_destroy while a CPU's TTBR0 still holds the L1 (no deactivate): its next walk
    from the root reads a freed frame."""
    w = world
    p = Proc(w, [0, 1])
    t = p.thread(1)
    t.step()
    l1 = p.pm.pm_vp.pa
    c1 = t.cpu
    # drop cpu1's walk cache and TLB (an ASIDE1IS) but leave TTBR0 live, then free the tables
    cpu_tlb_flush_asid_all(w.m.cpus[0], ((p.pm.pm_asid | ASID_USER) << 48) & MASK64)
    w.ps.pmap_vp_destroy(w.m.cpus[0], p.pm)
    assert w.ck.violations == []
    c1.run(1000, pc=t.pc)                             # the load of page 1 walks from TTBR0
    v = [x for x in w.ck.violations if x.kind is WALK_FREED]
    assert v and v[0].cpu == 1 and v[0].pa & ~0xFFF == l1
    assert "TTBR0" in v[0].story


# ---------------------------------------------------------------------- livelock

def test_thread_faulting_forever_on_the_zero_page_is_a_livelock(world):
    """purge-early (Kettenis' PoC run for a non-last thread): pm_pt0pa becomes the zero page
    while the sibling can still return to userland; rescheduled, its TTBR0 is the empty
    table, every load faults at level 1, and the fault handler (uvm_fault -> pmap_enter
    finds the mapping already there) returns to the same instruction."""
    w = world
    ps = w.ps
    p = Proc(w, [0, 1])
    main, sib = p.thread(0), p.thread(1)
    sib.step()
    pm = p.pm
    c0 = main.cpu
    ps.pmap_kernel_entry(c0)                          # the main thread's early pmap_exit:
    c0.msr(SysReg.TTBR0_EL1, ps.zero_page)            # pmap_purge's steps without its wait
    c0.isb()
    cpu_tlb_flush_asid_all(c0, (pm.pm_asid << 48) & MASK64)
    cpu_tlb_flush_asid_all(c0, ((pm.pm_asid | ASID_USER) << 48) & MASK64)
    pm.pm_pt0pa = ps.zero_page
    ps.pmap_setttb(sib.cpu, pm)                       # the sibling is switched back in
    ps.pmap_userret(sib.cpu)
    # its TLB and walk cache were flushed, so the fetch of its next instruction (step 2's
    # add, after movz and step 1's add, ldr, svc) walks from the zero page
    next_pc = CODE_VA + 4 * 4
    faults = 0
    for _ in range(100):
        stop = sib.cpu.run(1000, pc=sib.pc)
        assert stop.kind is StopKind.FAULT and stop.pc == next_pc
        assert stop.fault.fsc == 0x05                 # translation fault, level 1
        faults += 1
        w.ck.note_fault(sib.cpu, "p1.t2", stop.pc, stop.fault.va, stop.fault.fsc, retired=sib.cpu.insns)
        sib.pc = stop.pc
        if w.ck.violations:
            break
    assert faults == 64                               # the default threshold
    v = w.ck.violations
    assert [(x.kind, x.cpu, x.va & ~0xFFF, x.count) for x in v] == [(LIVELOCK, 1, CODE_VA, 64)]
    assert "zero page" in v[0].story and "p1.t2" in v[0].story


def test_demand_paging_faults_are_not_a_livelock(world):
    """A fault the handler really fixes is taken once per page; a loop over new pages
    faults at the same PC with different VAs: no livelock."""
    ck = world.ck
    c = world.m.cpus[0]
    for i in range(200):
        ck.note_fault(c, "t", 0x400010, HEAP_VA + i * 0x1000, 0x07, retired=i)
    for i in range(200):
        ck.note_fault(c, "t2", 0x400010, HEAP_VA, 0x07, retired=i)      # progress in between
    assert ck.violations == []


# ---------------------------------------------------------------------- the checker's own contract

def test_a_machine_without_checker_has_none():
    m = Machine(1, 4 << 20)
    assert m.checker is None


def test_violation_records_have_the_result_schema_fields(world):
    w = world
    p, main, sib = flush_before_sibling_deactivate(w)
    p.teardown(main.cpu)
    d = w.ck.to_dicts()[0]
    for k in ("kind", "cpu", "cycle", "va", "asid", "pa", "detail", "range", "reproducer"):
        assert k in d
    assert d["kind"] == "stale-tlb-entry" and d["reproducer"] == "pytest tests/emu/test_checker.py"
    assert "stale-tlb-entry (user range): cpu1" in str(w.ck.violations[0])


def test_context_provider_names_the_thread(world):
    w = world
    w.ck.context_fn = lambda ci: {0: "p1.t1 (main) in exit1: uvm_purge", 1: "p1.t2 in userland"}[ci]
    p, main, sib = flush_before_sibling_deactivate(w)
    p.teardown(main.cpu)
    assert all(v.thread == "p1.t2 in userland" and "p1.t2 in userland" in v.story for v in w.ck.violations)


def test_fill_records_are_pruned(world):
    """Entries evicted from every TLB are dropped from the reverse map at the next sweep."""
    w = world
    ck = w.ck
    ck._sweep_at = 10
    p = Proc(w, [0, 1, 2, 3, 4, 5, 6, 7])
    t = p.thread(0)
    for _ in range(8):
        t.step()
    cpu = t.cpu
    cpu_tlb_flush_asid_all(cpu, ((p.pm.pm_asid | ASID_USER) << 48) & MASK64)
    ck._sweep()
    assert ck._by_id == {} and ck._by_frame == {}
