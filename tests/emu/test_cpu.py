"""The MMU in the loop: real guest code on Unicorn, every translation served by the model.

Expected counts are computed by hand from the table layout (3-level tables, T0SZ=25):
a cold walk reads 3 descriptors; with the L2 table in the walk cache it reads 2; with the
L3 table cached it reads 1.
"""
import pytest

from emu.cpu import StopKind
from emu.machine import BudgetExceeded, Machine
from emu.sysregs import SysReg, make_ttbr
from emu.tlbi import TLBIOp, tlbi_operand
from emu.walker import Access, Fault, FaultKind
from guest.asm import assemble

from .tables import Tables

CODE = 0x400000          # L2 index 2
KCODE = 0x600000         # EL1 code, L2 index 3
DATA = 0x1000000         # L2 index 8
ASID = 5


def machine(ncpus=2, **kw):
    kw.setdefault("mem_size", 16 << 20)
    m = Machine(ncpus=ncpus, **kw)
    m.ktables = Tables(m, owner="kernel")          # TTBR1's (empty) L1 table
    return m


def switch_to(cpu, tables, asid=ASID):
    """OpenBSD order: TTBR1 carries the ASID (TCR.A1=1), TTBR0 the user table."""
    cpu.msr(SysReg.TTBR1_EL1, make_ttbr(cpu.machine.ktables.l1, asid))
    cpu.msr(SysReg.TTBR0_EL1, make_ttbr(tables.l1))


def load(m, t, src, va=CODE, el=0, **defs):
    prog = assemble(src, va)
    t.map_code(va, prog.code, el=el)
    return prog


TOUCH = """
_start:
    ldr x0, =0x1000000
    mov x1, #{n}
loop:  str x1, [x0]
    add x0, x0, #0x1000
    subs x1, x1, #1
    b.ne loop
    mov x8, #1
    svc #0
"""


def touch_src(n):
    return TOUCH.replace("{n}", str(n))


def test_touch_n_pages_exact_misses_and_walks():
    n = 16
    m = machine(1)
    t = Tables(m)
    load(m, t, touch_src(n))
    for i in range(n):
        t.map(DATA + i * 0x1000)
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    stop = cpu.run(10_000, pc=CODE)
    assert stop.kind is StopKind.SVC and stop.svc == 0 and cpu.reg(8) == 1
    assert stop.executed == 2 + 4 * n + 2
    assert cpu.walks == 1 + n                            # one code page + n data pages
    assert cpu.tlb.dtlb.stats.inserts == n
    assert cpu.tlb.itlb.stats.inserts == 1
    # code: cold (3 reads); first data page: L2 table cached (2); the rest: L3 table cached (1)
    assert cpu.walk_reads == 3 + 2 + (n - 1)
    # second run: everything hits the model TLB (L1D holds 32 entries on the A72)
    walks = cpu.walks
    stop = cpu.run(10_000, pc=CODE)
    assert stop.kind is StopKind.SVC
    assert cpu.walks == walks


def test_capacity_evictions_reach_unicorn():
    """More pages than L1D+L2 can hold: every pass walks again, never served stale by Unicorn."""
    m = machine(1)
    l2 = m.core.l2.entries
    n = l2 + 64
    t = Tables(m)
    load(m, t, touch_src(n))
    for i in range(n):
        t.map(DATA + i * 0x1000)
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    cpu.run(100_000, pc=CODE)
    w1 = cpu.walks
    stop = cpu.run(100_000, pc=CODE)
    assert stop.kind is StopKind.SVC
    # 256 sets of 4 ways; pages are consecutive so 64 sets hold 5 pages and thrash (LRU over a
    # cyclic sweep misses every time), the other 192 sets hold 4 and hit: 5 * 64 walks
    assert m.core.l2.ways == 4 and m.core.l2.entries // 4 == 256
    assert cpu.walks - w1 == 5 * 64
    assert cpu.tlb.l2.stats.evictions > 0


def _two_cpus_sharing(src_el1, n=4):
    m = machine(2)
    t = Tables(m)
    load(m, t, touch_src(n))
    kprog = load(m, t, src_el1, va=KCODE, el=1)
    for i in range(n):
        t.map(DATA + i * 0x1000)
    for cpu in m.cpus:
        switch_to(cpu, t)
    return m, t, kprog


def test_guest_tlbi_aside1is_reaches_other_cpu_and_keeps_globals():
    src = f"""
_start:
    dsb ishst
    mov x0, #{ASID}
    lsl x0, x0, #48
    tlbi aside1is, x0
    dsb ish
    isb
    mov x8, #1
    svc #0
"""
    m, t, _ = _two_cpus_sharing(src)
    gva = DATA + 0x100000
    t.map(gva, ng=False)                           # a global entry
    c0, c1 = m.cpus
    c1.set_el(0)
    assert c1.run(10_000, pc=CODE).kind is StopKind.SVC
    assert c1.lookup(gva, Access.READ, 0).__class__ is not Fault
    assert c1.tlb.probe(DATA, ASID) is not None
    assert c1.tlb.probe(gva, ASID) is not None and c1.tlb.probe(gva, ASID).asid is None
    before = c1.walks
    c0.set_el(1)
    stop = c0.run(100, pc=KCODE)
    assert stop.kind is StopKind.SVC
    assert c0.events["tlbi.ASIDE1IS"] == 1 and c0.events["dsb"] == 2 and c0.events["isb"] == 1
    for i in range(4):
        assert c1.tlb.probe(DATA + i * 0x1000, ASID) is None
    assert c1.tlb.probe(gva, ASID) is not None              # global survives ASIDE1
    c1.set_el(0)
    assert c1.run(10_000, pc=CODE).kind is StopKind.SVC
    assert c1.walks == before + 1 + 4                       # code page + 4 data pages again


def test_tlbi_waits_for_dsb():
    m, t, _ = _two_cpus_sharing("_start: svc #0")
    c0, c1 = m.cpus
    c1.set_el(0)
    c1.run(10_000, pc=CODE)
    c0.tlbi(TLBIOp.ASIDE1IS, tlbi_operand(asid=ASID))
    assert c1.tlb.probe(DATA, ASID) is not None           # issued, not complete
    c0.dsb("ishst")                                       # a store barrier does not complete it
    assert c1.tlb.probe(DATA, ASID) is not None
    c0.dsb("ish")
    assert c1.tlb.probe(DATA, ASID) is None


def test_local_tlbi_stays_local():
    m, t, _ = _two_cpus_sharing("_start: svc #0")
    c0, c1 = m.cpus
    for c in (c0, c1):
        c.set_el(0)
        c.run(10_000, pc=CODE)
    c0.tlbi(TLBIOp.ASIDE1, tlbi_operand(asid=ASID))
    c0.dsb("nsh")
    assert c0.tlb.probe(DATA, ASID) is None
    assert c1.tlb.probe(DATA, ASID) is not None


def _walk_cache_has(cpu, va, asid=ASID):
    return any(e.va_base <= va < e.va_base + (1 << (12 + 9 * (4 - e.level))) and e.level == 3 and e.asid == asid
               for e in cpu.tlb.walk_cache)


@pytest.mark.parametrize("op,keeps_walk_cache", [("vale1", True), ("vae1", False)])
def test_last_level_tlbi_keeps_walk_cache(op, keeps_walk_cache):
    src = f"""
_start:
    ldr x0, ={(ASID << 48) | (DATA >> 12):#x}
    tlbi {op}, x0
    dsb nsh
    isb
    svc #0
"""
    m, t, _ = _two_cpus_sharing(src)
    c0 = m.cpus[0]
    c0.set_el(0)
    c0.run(10_000, pc=CODE)
    assert _walk_cache_has(c0, DATA)
    c0.set_el(1)
    assert c0.run(100, pc=KCODE).kind is StopKind.SVC
    assert c0.tlb.probe(DATA, ASID) is None
    assert c0.tlb.probe(DATA + 0x1000, ASID) is not None
    assert _walk_cache_has(c0, DATA) is keeps_walk_cache
    reads = c0.walk_reads
    assert c0.lookup(DATA, Access.READ, 0).__class__ is not Fault
    # VALE1 kept the L3-table entry (1 read); VAE1 dropped every cached table used for DATA (3)
    assert c0.walk_reads - reads == (1 if keeps_walk_cache else 3)


def test_vaae1_matches_every_asid():
    m, t, _ = _two_cpus_sharing("_start: svc #0")
    c0 = m.cpus[0]
    c0.set_el(0)
    c0.run(10_000, pc=CODE)
    switch_to(c0, t, asid=9)
    c0.run(10_000, pc=CODE)
    assert c0.tlb.probe(DATA, ASID) and c0.tlb.probe(DATA, 9)
    c0.tlbi(TLBIOp.VAAE1IS, tlbi_operand(va=DATA))
    c0.dsb("ish")
    assert c0.tlb.probe(DATA, ASID) is None and c0.tlb.probe(DATA, 9) is None
    assert c0.tlb.probe(DATA + 0x1000, ASID) is not None


def test_vmalle1_drops_everything():
    m, t, _ = _two_cpus_sharing("_start: svc #0")
    t.map(DATA + 0x200000, ng=False)
    c0, c1 = m.cpus
    c1.set_el(0)
    c1.run(10_000, pc=CODE)
    c1.lookup(DATA + 0x200000, Access.READ, 0)
    c0.tlbi(TLBIOp.VMALLE1IS)
    c0.dsb("ish")
    assert c1.tlb.entries() == [] and len(c1.tlb.walk_cache) == 0


def test_ttbr_write_switches_asid_without_invalidating():
    m, t, _ = _two_cpus_sharing("""
_start:
    mov x0, #7
    lsl x0, x0, #48
    msr ttbr1_el1, x0
    isb
    svc #0
""")
    c0 = m.cpus[0]
    c0.set_el(0)
    c0.run(10_000, pc=CODE)
    held = len(c0.tlb.entries())
    c0.set_el(1)
    c0.run(100, pc=KCODE)
    assert c0.asid == 7 and c0.events["ttbr_writes"] == 3     # 2 by switch_to, 1 by the guest
    assert c0.ttbr1 >> 48 == 7
    assert len(c0.tlb.entries()) >= held                       # nothing invalidated
    assert c0.tlb.probe(DATA, ASID) is not None
    assert c0.tlb.probe(DATA, 7) is None                        # old entries no longer match
    walks = c0.walks
    c0.set_el(0)
    c0.run(10_000, pc=CODE)
    assert c0.walks == walks + 1 + 4


def test_write_by_one_cpu_read_by_other():
    m = machine(2)
    t = Tables(m)
    load(m, t, """
_start:
    ldr x0, =0x1000000
    ldr x1, =0x1122334455667788
    str x1, [x0, #8]
    svc #0
""")
    load(m, t, """
_start:
    ldr x0, =0x1000000
    ldr x2, [x0, #8]
    svc #1
""", va=CODE + 0x1000)
    t.map(DATA)
    for c in m.cpus:
        switch_to(c, t)
        c.set_el(0)
    c0, c1 = m.cpus
    assert c1.run(100, pc=CODE + 0x1000).svc == 1 and c1.reg(2) == 0    # cpu1 caches the page
    assert c0.run(100, pc=CODE).svc == 0                                  # cpu0 writes it
    assert c1.run(100, pc=CODE + 0x1000).svc == 1
    assert c1.reg(2) == 0x1122334455667788


def test_code_written_by_other_cpu_is_not_stale():
    m = machine(2)
    t = Tables(m)
    prog = assemble("_start:\n mov x0, #1\n svc #0\n", CODE)
    code_pa = t.map_code(CODE, prog.code)
    alias = 0x2000000
    t.map(alias, pa=code_pa)                        # a writable alias of the code frame
    writer = assemble("""
_start:
    ldr x0, =0x2000000
    ldr w1, =0xd2800540     // mov x0, #42
    str w1, [x0]
    svc #0
""", KCODE)
    t.map_code(KCODE, writer.code)
    for c in m.cpus:
        switch_to(c, t)
        c.set_el(0)
    c0, c1 = m.cpus
    c1.run(100, pc=CODE)
    assert c1.reg(0) == 1
    assert c0.run(100, pc=KCODE).kind is StopKind.SVC
    c1.run(100, pc=CODE)
    assert c1.reg(0) == 42


def test_speculation_fills_untouched_page_but_not_through_zero_page():
    m = machine(1, speculate="aggressive", seed=3)
    t = Tables(m)
    load(m, t, touch_src(1))
    far = DATA + 0x40000                            # never touched by the guest
    t.map(DATA)
    t.map(far)
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.speculate(200)
    assert cpu.tlb.probe(far, ASID) is not None and cpu.tlb.probe(far, ASID).speculative
    # TTBR0 on an all-invalid L1 table (OpenBSD's zero page): nothing can be filled
    m2 = machine(1, speculate="aggressive", seed=3)
    t2 = Tables(m2)
    t2.map(DATA)
    zero = Tables(m2, owner="kernel")               # an empty L1 table
    c = m2.cpus[0]
    switch_to(c, zero)
    assert c.speculate(500) == 0
    assert c.tlb.entries() == []
    # EPD0 set: no walks through TTBR0 at all
    switch_to(c, t2)
    c.msr(SysReg.TCR_EL1, c.tcr | 1 << 7)
    assert c.speculate(500) == 0


def test_undefined_instruction_stops_cleanly():
    m = machine(1)
    t = Tables(m)
    load(m, t, "_start:\n nop\n udf #3\n")
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    stop = cpu.run(100, pc=CODE)
    assert stop.kind is StopKind.UNDEF and stop.pc == CODE + 4 and stop.executed == 1


def test_jump_into_unmapped_memory_is_an_instruction_abort():
    m = machine(1)
    t = Tables(m)
    load(m, t, "_start:\n ldr x0, =0x7000000\n br x0\n")
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    stop = cpu.run(100, pc=CODE)
    assert stop.kind is StopKind.FAULT
    assert stop.fault.kind is FaultKind.TRANSLATION and stop.fault.access is Access.FETCH
    assert stop.fault.level == 2 and stop.pc == 0x7000000


def test_data_abort_then_fixup_and_resume():
    m = machine(1)
    t = Tables(m)
    load(m, t, touch_src(2))
    t.map(DATA)
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    stop = cpu.run(1000, pc=CODE)
    assert stop.kind is StopKind.FAULT and stop.fault.va == DATA + 0x1000
    assert stop.fault.kind is FaultKind.TRANSLATION and stop.fault.level == 3
    assert stop.fault.access is Access.WRITE
    t.map(DATA + 0x1000)                            # the "kernel" maps the page; no TLBI needed
    stop = cpu.run(1000, pc=stop.pc)
    assert stop.kind is StopKind.SVC


def test_permission_fault_on_read_only_page():
    m = machine(1)
    t = Tables(m)
    load(m, t, touch_src(1))
    t.map(DATA, ap=0b11)
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    stop = cpu.run(1000, pc=CODE)
    assert stop.kind is StopKind.FAULT and stop.fault.kind is FaultKind.PERMISSION
    assert stop.fault.fsc == 0x0F


def test_endless_loop_hits_the_budget():
    m = machine(1)
    t = Tables(m)
    load(m, t, "_start:\n b _start\n")
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    cpu.pc = CODE
    with pytest.raises(BudgetExceeded, match="budget 5000"):
        m.run(quantum=1000, budget=5000)
    assert cpu.insns == 5000


def test_instrumented_mode_counts_every_hit():
    n = 8
    m = machine(1, instrument=True)
    t = Tables(m)
    load(m, t, touch_src(n))
    for i in range(n):
        t.map(DATA + i * 0x1000)
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    stop = cpu.run(10_000, pc=CODE)
    insns = 2 + 4 * n + 2
    assert stop.kind is StopKind.SVC and stop.executed == insns and cpu.insns == insns
    # every instruction looks up the ITLB once: 1 miss (walk), the rest hit
    assert cpu.tlb.itlb.stats.hits + cpu.tlb.itlb.stats.misses == insns
    assert cpu.tlb.itlb.stats.misses == 1
    # one store per iteration: n DTLB misses (each a walk), no more DTLB lookups than stores
    assert cpu.tlb.dtlb.stats.misses == n and cpu.walks == n + 1
    # a second run: all hits, counted
    h = cpu.tlb.dtlb.stats.hits
    cpu.run(10_000, pc=CODE)
    assert cpu.tlb.dtlb.stats.hits - h == n and cpu.walks == n + 1


def test_deterministic_for_a_seed():
    def one(seed):
        m = machine(2, speculate="default", seed=seed)
        t = Tables(m)
        load(m, t, touch_src(32))
        for i in range(32):
            t.map(DATA + i * 0x1000)
        for c in m.cpus:
            switch_to(c, t)
            c.set_el(0)
            c.pc = CODE
        m.run(quantum=17)
        return m.stats()
    assert one(1) == one(1)


def test_instruction_counter_is_found():
    """Exact instruction counts on early stops rely on reading Unicorn's own counter."""
    from emu.cpu import counter_offset
    assert counter_offset() is not None


def test_machine_run_with_a_demand_paging_kernel():
    """Two CPUs run the same loop over lazily mapped pages; the Python 'kernel' maps each
    faulting page and resumes the guest at the faulting instruction, then retires the CPU
    at its exit SVC. Each page is mapped once, at the first fault on it; instruction counts
    do not include the faulting attempts; the run is deterministic."""
    n = 24

    def one():
        m = machine(2)
        t = Tables(m)
        load(m, t, touch_src(n))
        faults, exits = [], []

        def on_stop(cpu, stop):
            if stop.kind is StopKind.FAULT and stop.fault.kind is FaultKind.TRANSLATION:
                va = stop.fault.va & ~0xFFF
                assert DATA <= va < DATA + n * 0x1000
                if t.m.mem.read64(t.leaf_slot(va)) & 1 == 0:
                    t.map(va)
                faults.append((cpu.index, va))
                cpu.pc = stop.pc
                return True
            exits.append((cpu.index, stop.kind, stop.svc))
            return False

        for c in m.cpus:
            switch_to(c, t)
            c.set_el(0)
            c.pc = CODE
        m.run(quantum=7, on_stop=on_stop)
        return faults, exits, m.stats()

    faults, exits, stats = one()
    assert sorted(exits) == [(0, StopKind.SVC, 0), (1, StopKind.SVC, 0)]
    assert len({va for _, va in faults}) == n
    assert all(sum(1 for c, v in faults if c == i and v == va) <= 1 for i in (0, 1) for _, va in faults)
    assert all(stats[f"cpu{i}.insts"] == 2 + 4 * n + 2 for i in (0, 1))
    assert one() == (faults, exits, stats)


def test_host_write_into_code_frame_is_seen():
    """A kernel-side (host) store into a code frame: every CPU runs the new code."""
    m = machine(2)
    t = Tables(m)
    prog = assemble("_start:\n mov x0, #1\n svc #0\n", CODE)
    code_pa = t.map_code(CODE, prog.code)
    for c in m.cpus:
        switch_to(c, t)
        c.set_el(0)
        c.run(100, pc=CODE)
        assert c.reg(0) == 1
    m.mem.write(code_pa, (0xD2800540).to_bytes(4, "little"))      # mov x0, #42
    for c in m.cpus:
        c.run(100, pc=CODE)
        assert c.reg(0) == 42


def test_translation_to_missing_memory_is_a_bus_error():
    """A valid descriptor whose output address has no RAM behind it (but is inside the
    PA size): the walk succeeds, the access is an external abort, never a crash."""
    m = machine(1)
    t = Tables(m)
    load(m, t, touch_src(1))
    t.map(DATA, pa=m.mem.size + 0x10000)
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    stop = cpu.run(100, pc=CODE)
    assert stop.kind is StopKind.BUS_ERROR and stop.pc == CODE + 8
    assert stop.detail == f"write of unmapped PA {m.mem.size + 0x10000:#x}"


def test_el0_cannot_touch_kernel_pages_el1_can_touch_user_pages():
    m = machine(1)
    t = Tables(m)
    load(m, t, touch_src(1))
    t.map(DATA, ap=0b00)                              # EL1 RW, EL0 none
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    stop = cpu.run(100, pc=CODE)
    assert stop.kind is StopKind.FAULT and stop.fault.kind is FaultKind.PERMISSION and stop.fault.el == 0
    t.map(DATA)                                       # EL0 RW; no TLBI: the old entry is still cached
    assert cpu.run(100, pc=stop.pc).kind is StopKind.FAULT
    cpu.tlbi(TLBIOp.VAE1, tlbi_operand(va=DATA, asid=ASID))
    cpu.dsb("nsh")
    assert cpu.run(100, pc=stop.pc).kind is StopKind.SVC
    r = cpu.lookup(DATA, Access.WRITE, 1)             # v8.0, no PAN: EL1 may write a user page
    assert r.__class__ is not Fault


def test_a_tlb_hit_gives_the_pa_of_the_va_asked():
    """One entry serves every VA of its page: the PA of a lookup is the entry's PA for
    the VA asked (entry.pa_of(va)), also when the entry came from another VA's walk."""
    m = machine(1)
    t = Tables(m)
    pa = t.map(DATA)
    cpu = m.cpus[0]
    switch_to(cpu, t)
    first = cpu.lookup(DATA + 0x10, Access.READ, 0)
    assert first.pa_of(DATA + 0x10) == first.pa == pa + 0x10
    misses = cpu.tlb.dtlb.stats.misses
    for off in (0x0, 0x7F8, 0xFFF):
        e = cpu.lookup(DATA + off, Access.READ, 0)
        assert e is first and e.pa_of(DATA + off) == pa + off
    assert cpu.tlb.dtlb.stats.misses == misses            # L1 hits
