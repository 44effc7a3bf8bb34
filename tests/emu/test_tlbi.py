"""TLB maintenance on the CPUs: TLBI operands and scope, DSB completion domains, the batch
of flush sequences, blocks, and the walk cache, against the Arm ARM's rules (DDI 0487, the
TLBI instruction descriptions and "TLB maintenance requirements").

Descriptor-read counts are derived by hand from the tables (3 levels, T0SZ = T1SZ = 25): a
cold walk reads 3 descriptors, one resumed at a cached L2 table 2, at a cached L3 table 1.
"""
from dataclasses import replace

import pytest

from emu.cores import load_preset
from emu.descriptors import OA_MASK, block_desc, level_index, page_desc, table_desc
from emu.frames import FrameKind
from emu.machine import Machine
from emu.sysregs import SysReg, make_ttbr
from emu.tlbi import TLBIOp, dsb_option, tlbi_asid, tlbi_operand, tlbi_va
from emu.walker import Access, Fault

from .tables import Tables

DATA = 0x1000000          # L2 index 8 of the user L1 slot 0
DATA2 = DATA + 0x200000   # the next 2 MB region: its own L3 table
KVA = 0xFFFF_FF80_0040_0000   # kernel half (TTBR1, T1SZ = 25)
BLOCK = 0x4000000         # a 2 MB block mapping (L2 index 32)
ASID = 5
MB = 1 << 20


def make(ncpus=2, core="cortex-a72", **kw):
    kw.setdefault("mem_size", 32 << 20)
    m = Machine(ncpus=ncpus, core=core, **kw)
    m.ktables = Tables(m, owner="kernel")
    m.utables = Tables(m, owner="user")
    return m


def switch_to(cpu, tables, asid=ASID):
    """OpenBSD order: TTBR1 carries the ASID (TCR.A1 = 1), TTBR0 the user table."""
    cpu.msr(SysReg.TTBR1_EL1, make_ttbr(cpu.machine.ktables.l1, asid))
    cpu.msr(SysReg.TTBR0_EL1, make_ttbr(tables.l1))


@pytest.fixture
def m():
    m = make()
    for c in m.cpus:
        switch_to(c, m.utables)
    return m


def read(cpu, va, el=0):
    r = cpu.lookup(va, Access.READ, el)
    assert r.__class__ is not Fault, r
    return r.pa_of(va)


def flush(cpu, op, xt):
    """OpenBSD's cpufunc sequence for one TLBI."""
    cpu.dsb("ishst")
    cpu.tlbi(op, xt)
    cpu.dsb("ish")
    cpu.isb()


# ---------------------------------------------------------------- operands

def test_operand_decoding():
    assert tlbi_va(tlbi_operand(va=KVA, asid=7)) == KVA                       # sign-extended from VA[55]
    assert tlbi_va(0xFF_FFFF_F800_0400 | 0xAB << 56) == 0xFFFF_FF80_0040_0000 # ASID bits are not VA bits
    assert tlbi_asid(0xAB25 << 48, as16=False) == 0x25
    assert tlbi_asid(0xAB25 << 48, as16=True) == 0xAB25
    assert dsb_option("ISH") == ("ish", True) and dsb_option("ishst") == ("ish", False)
    assert dsb_option("#0xb") == ("ish", True) and dsb_option("#7") == ("nsh", True)
    with pytest.raises(ValueError, match="unknown DSB option"):
        dsb_option("ishx")


def test_global_page_goes_with_a_va_tlbi_of_any_asid(m):
    """TLBI VAE1 removes a global entry for the VA whatever ASID the operand names."""
    c0, c1 = m.cpus
    m.utables.map(DATA, ng=False)
    m.utables.map(DATA + 0x1000)
    read(c1, DATA)
    read(c1, DATA + 0x1000)
    assert c1.tlb.probe(DATA, ASID).asid is None
    flush(c0, TLBIOp.VAE1IS, tlbi_operand(va=DATA, asid=0x77))
    assert c1.tlb.probe(DATA, ASID) is None and c1.tlb.probe(DATA, 0x33) is None
    assert c1.tlb.probe(DATA + 0x1000, ASID) is not None       # non-global, other VA


def test_eight_bit_asid_ignores_operand_bits_63_56():
    """TCR.AS = 0: the TLBI's ASID is Xt[55:48]; bits [63:56] are not part of it."""
    core = replace(load_preset("cortex-a72"), asid_bits=8)
    m = make(core=core)
    c0, c1 = m.cpus
    for c in m.cpus:
        switch_to(c, m.utables, asid=0x25)
    assert c1.asid == 0x25 and not c1.regime.tcr.as16
    m.utables.map(DATA)
    m.utables.map(DATA + 0x1000)
    read(c1, DATA)
    read(c1, DATA + 0x1000)
    flush(c0, TLBIOp.VAE1IS, 0xAB25 << 48 | DATA >> 12)
    assert c1.tlb.probe(DATA, 0x25) is None
    assert c1.tlb.probe(DATA + 0x1000, 0x25) is not None
    flush(c0, TLBIOp.ASIDE1IS, 0xCD25 << 48)
    assert c1.tlb.entries() == []


@pytest.mark.parametrize("batched", [False, True], ids=["one", "batch"])
@pytest.mark.parametrize("op,ng", [(TLBIOp.VAE1IS, True), (TLBIOp.VAALE1IS, False), (TLBIOp.VAAE1IS, True)])
def test_kernel_half_va_tlbi(m, op, ng, batched):
    """A TTBR1 VA: the operand carries VA[55:12] (Xt[43:36] = 0xFF) and the TLBI matches the
    entry for the sign-extended VA (one flush sequence, or through Cpu.tlbi_flush_batch)."""
    c0, c1 = m.cpus
    m.ktables.map(KVA, ap=0b00, ng=ng)
    m.ktables.map(KVA + 0x1000, ap=0b00, ng=ng)
    read(c1, KVA, el=1)
    read(c1, KVA + 0x1000, el=1)
    xt = tlbi_operand(va=KVA, asid=ASID)
    assert xt >> 36 & 0xFF == 0xFF
    if batched:
        c0.tlbi_flush_batch([(op, xt)])
    else:
        flush(c0, op, xt)
    assert c1.tlb.probe(KVA, ASID) is None
    assert c1.tlb.probe(KVA + 0x1000, ASID) is not None


# ---------------------------------------------------------------- DSB domains (defect 4)

def test_dsb_nsh_completes_an_is_tlbi_only_locally(m):
    """`TLBI VAE1IS; DSB NSH`: this CPU's entry is gone, the other CPU's entry is still
    usable (the kernel bug shows up); a later DSB ISH of the issuing CPU completes it."""
    c0, c1 = m.cpus
    old = m.utables.map(DATA)
    for c in m.cpus:
        assert read(c, DATA) == old
    new = m.frames.alloc(FrameKind.USER, "user")
    m.mem.write64(m.utables.leaf_slot(DATA), page_desc(new, ap=0b01, uxn=True, pxn=True))
    c0.dsb("ishst")
    c0.tlbi(TLBIOp.VAE1IS, tlbi_operand(va=DATA, asid=ASID))
    before = c0.cycles
    c0.dsb("nsh")
    assert c0.cycles - before == m.core.cost.dsb_local
    assert c0.tlb.probe(DATA, ASID) is None and read(c0, DATA) == new
    assert read(c1, DATA) == old                                 # stale on the other CPU
    assert len(c0.pending) == 1
    before = c0.cycles
    c0.dsb("nsh")                                                # nothing left to do locally
    assert c0.cycles - before == m.core.cost.dsb_idle and c1.tlb.probe(DATA, ASID) is not None
    before = c0.cycles
    c0.dsb("ish")
    assert c0.cycles - before == m.core.cost.dsb_ish(1)
    assert c1.tlb.probe(DATA, ASID) is None and read(c1, DATA) == new
    assert c0.pending == []


def test_dsb_st_and_ld_complete_nothing_sy_and_osh_complete_everything(m):
    c0, c1 = m.cpus
    m.utables.map(DATA)
    for kind in ("sy", "osh", "ish"):
        read(c1, DATA)
        c0.tlbi(TLBIOp.VAE1IS, tlbi_operand(va=DATA, asid=ASID))
        for weak in ("ishst", "ishld", "st", "oshld", "nshst"):
            c0.dsb(weak)
            assert c1.tlb.probe(DATA, ASID) is not None
        c0.dsb(kind)
        assert c1.tlb.probe(DATA, ASID) is None


def test_quantum_end_completes_the_broadcast_part(m):
    """The architecture's "eventually": what DSB NSH left pending reaches the other CPUs
    at the latest when complete_tlbis runs (the run loop calls it at the end of a quantum)."""
    c0, c1 = m.cpus
    m.utables.map(DATA)
    read(c1, DATA)
    read(c0, DATA)
    c0.tlbi(TLBIOp.VAE1IS, tlbi_operand(va=DATA, asid=ASID))
    c0.dsb("nsh")
    flushed = c0.tlb.dtlb.stats.flushed_entries
    c0.complete_tlbis()
    assert c1.tlb.probe(DATA, ASID) is None
    assert c0.tlb.dtlb.stats.flushed_entries == flushed          # not applied twice here
    assert c0.tlb.dtlb.stats.flush_ops == 1


# ---------------------------------------------------------------- blocks (defect 1)

def map_block(tables, va, pa, **kw):
    """A 2 MB block at L2 (the L2 table is allocated through a page walk of a neighbour)."""
    tables.leaf_slot(va + 0x200000)
    l2 = tables.mem.read64(tables.l1 + level_index(va, 1) * 8) & OA_MASK
    tables.mem.write64(l2 + level_index(va, 2) * 8, block_desc(pa, 2, uxn=True, pxn=True, **kw))
    return l2 + level_index(va, 2) * 8


def test_a72_block_touch_all_pages_two_l1_misses_no_unicorn_flush(m):
    """Every page of a 2 MB block, in order, on an A72 (L1D holds 1 MB slices): L1D misses
    at the first page (walk, fills L2 and the first MB) and at the first page of the second
    MB (L2 hit, refills the L1D with the second MB); no entry is lost, so no Unicorn flush."""
    c = m.cpus[0]
    map_block(m.utables, BLOCK, 0x1600000)
    flushes = c.uc_flushes
    for va in range(BLOCK, BLOCK + 2 * MB, 0x1000):
        assert read(c, va) == 0x1600000 + va - BLOCK
    d, l2 = c.tlb.dtlb.stats, c.tlb.l2.stats
    assert (d.misses, d.hits, l2.hits, c.walks) == (2, 510, 1, 1)
    assert c.uc_flushes == flushes


@pytest.mark.parametrize("core", ["cortex-a72", "cortex-a53", "cortex-a76", "neoverse-n1"])
def test_block_remap_tlbi_outside_the_cached_slice(core):
    """Break-before-make of a 2 MB block whose first MB the L1D holds, with the TLBI naming a
    VA in the second MB: afterwards the first MB translates to the new block."""
    m = make(core=core)
    c0, c1 = m.cpus
    for c in m.cpus:
        switch_to(c, m.utables)
    slot = map_block(m.utables, BLOCK, 0x1600000)
    for c in m.cpus:
        assert read(c, BLOCK + 0x3000) == 0x1603000
    m.mem.write64(slot, 0)
    flush(c0, TLBIOp.VAE1IS, tlbi_operand(va=BLOCK + 0x180000, asid=ASID))
    m.mem.write64(slot, block_desc(0x1800000, 2, uxn=True, pxn=True))
    for c in m.cpus:
        assert c.tlb.entries() == []
        assert read(c, BLOCK + 0x3000) == 0x1803000


# ---------------------------------------------------------------- the walk cache

def test_vae1_keeps_the_walk_cache_of_other_regions(m):
    """After a VAE1 of DATA the L3 table of DATA2 (same ASID, next 2 MB) still serves walks
    (1 read); DATA's own walk starts again from the TTBR (its L3- and L2-table entries went: 3
    reads)."""
    c = m.cpus[0]
    for va in (DATA, DATA + 0x1000, DATA2, DATA2 + 0x1000):
        m.utables.map(va)
    read(c, DATA)
    read(c, DATA2)
    c.tlbi(TLBIOp.VAE1, tlbi_operand(va=DATA, asid=ASID))
    c.dsb("nsh")
    r = c.walk_reads
    read(c, DATA2 + 0x1000)
    assert c.walk_reads - r == 1
    r = c.walk_reads
    read(c, DATA + 0x1000)
    assert c.walk_reads - r == 3


def test_vae1is_with_asid_0_for_a_kernel_va_keeps_asid_5s_table_entries(m):
    """The rule of emu.tlb.WalkCache: a table entry is associated with the ASID of its walk,
    and TLBI VAE1 need only remove those of the ASID it names."""
    c0, c1 = m.cpus
    m.ktables.map(KVA, ap=0b00, ng=False)
    m.ktables.map(KVA + 0x1000, ap=0b00, ng=False)
    read(c1, KVA, el=1)                                          # walk with ASID 5
    flush(c0, TLBIOp.VAE1IS, tlbi_operand(va=KVA, asid=0))
    assert c1.tlb.probe(KVA, ASID) is None                       # the global leaf went
    assert {(w.level, w.asid) for w in c1.tlb.walk_cache} == {(3, ASID), (2, ASID)}
    r = c1.walk_reads
    read(c1, KVA + 0x1000, el=1)
    assert c1.walk_reads - r == 1                                # resumed at ASID 5's L3 table
    flush(c0, TLBIOp.VAAE1IS, tlbi_operand(va=KVA))
    assert len(c1.tlb.walk_cache) == 0


def test_vae1is_keeps_other_asids_entries_on_every_cpu_it_reaches(m):
    """TLBI VAE1IS names one ASID: on every CPU it reaches, the entries of the VA for
    another ASID stay (leaf and walk cache). cpu0 holds only ASID 5's, so that nothing the
    first CPU's removal leaves behind can widen the scope on the next CPU."""
    c0, c1 = m.cpus
    m.utables.map(DATA)
    read(c0, DATA)
    switch_to(c1, m.utables, asid=9)
    read(c1, DATA)
    switch_to(c1, m.utables, asid=ASID)
    read(c1, DATA)
    flush(c0, TLBIOp.VAE1IS, tlbi_operand(va=DATA, asid=ASID))
    for c in (c0, c1):
        assert c.tlb.probe(DATA, ASID) is None
    assert c1.tlb.probe(DATA, 9) is not None
    assert {(w.level, w.asid) for w in c1.tlb.walk_cache} == {(3, 9), (2, 9)}


@pytest.mark.parametrize("case", ["same-asid-after-vae1is", "other-asid"])
def test_walk_through_an_unlinked_and_reused_l3_table(m, case):
    """ASID 5 walks DATA through L3 table T. T is unlinked from its L2 slot and reused as a
    data frame full of valid-looking descriptors to another frame; DATA is mapped again
    through a fresh L3 table. A walk of DATA must read the fresh table: after TLBI VAE1IS +
    DSB ISH for ASID 5, or at once for another ASID (ASID 6 never cached T)."""
    c0, c1 = m.cpus
    first = m.utables.map(DATA)
    assert read(c1, DATA) == first
    l2 = m.mem.read64(m.utables.l1) & OA_MASK
    t = m.mem.read64(l2 + level_index(DATA, 2) * 8) & OA_MASK
    decoy = m.frames.alloc(FrameKind.USER, "user")
    m.mem.write64(l2 + level_index(DATA, 2) * 8, 0)              # unlink T
    if case == "same-asid-after-vae1is":
        flush(c0, TLBIOp.VAE1IS, tlbi_operand(va=DATA, asid=ASID))
        asid = ASID
    else:
        other = Tables(m, owner="other")                         # process B: ASID 6, its own tables
        m.utables = other
        switch_to(c1, other, asid=6)
        asid = 6
    for i in range(512):                                         # T reused: a page of bogus descriptors
        m.mem.write64(t + 8 * i, page_desc(decoy, ap=0b01, uxn=True, pxn=True))
    fresh = m.utables.map(DATA)
    assert fresh != decoy and c1.asid == asid
    assert read(c1, DATA) == fresh


# ---------------------------------------------------------------- the batch API (sequences)

def _filled_machine(trace, ncpus=4, pages=96):
    m = make(ncpus=ncpus, trace=trace, seed=3)
    for c in m.cpus:
        switch_to(c, m.utables)
    for i in range(pages):
        m.utables.map(DATA + i * 0x1000, ng=i % 7 != 0)
    map_block(m.utables, BLOCK, 0x1600000)
    for j, c in enumerate(m.cpus):
        for i in range(j, pages, 1 + j):
            read(c, DATA + i * 0x1000)
        read(c, BLOCK + j * 0x40000)
        read(c, BLOCK + MB + j * 0x1000)
    return m


def _flushes(n):
    """Two sequences per page as OpenBSD's ttlb_flush (user and kernel ASID), plus the odd
    other op; some VAs in the block and none in the TLBs."""
    out = []
    for i in range(n):
        va = DATA + (i % 130) * 0x1000 if i % 9 else BLOCK + (i % 5) * 0x70000
        out.append((TLBIOp.VAE1IS, tlbi_operand(va=va, asid=ASID)))
        out.append((TLBIOp.VAE1IS if i % 4 else TLBIOp.VALE1IS, tlbi_operand(va=va, asid=ASID | 0x800)))
    out[5] = (TLBIOp.VAE1, tlbi_operand(va=DATA + 0x5000, asid=ASID))    # a local one
    out[9] = (TLBIOp.VAAE1IS, tlbi_operand(va=DATA + 0x9000))
    return out


def _snapshot(m):
    out = {"stats": m.stats(), "events": [dict(c.events) for c in m.cpus], "cycles": [c.cycles for c in m.cpus],
           "pending": [list(map(tuple, c.pending)) for c in m.cpus]}
    for c in m.cpus:
        out[f"tlb{c.index}"] = [sorted((e.va_base, e.size, e.asid or -1) for e in t)
                                for t in (c.tlb.itlb, c.tlb.dtlb, c.tlb.l2)]
        out[f"wc{c.index}"] = sorted((w.level, w.va_base, w.asid) for w in c.tlb.walk_cache)
    if m.trace is not None:
        out["trace"] = list(m.trace.records)
    return out


@pytest.mark.parametrize("trace", [False, True])
@pytest.mark.parametrize("n,earlier", [(5, False), (40, True), (1500, False), (1500, True)])
def test_batch_equals_one_sequence_at_a_time(trace, n, earlier):
    """Same events, cycles, statistics, TLB contents and trace records as issuing each
    sequence by itself, with TLBIs pending beforehand (a local one, an IS one half-completed
    by DSB NSH) or not; 1500 pairs take the one-pass sweep path."""
    ms = [_filled_machine(trace), _filled_machine(trace)]
    if earlier:
        for mm in ms:
            c = mm.cpus[1]
            c.tlbi(TLBIOp.VALE1, tlbi_operand(va=DATA + 0x3000, asid=ASID))
            c.tlbi(TLBIOp.ASIDE1IS, tlbi_operand(asid=ASID | 0x800))
            c.dsb("nsh")
            c.tlbi(TLBIOp.VAAE1, tlbi_operand(va=DATA + 0x4000))
    one, batch = ms
    assert _snapshot(one) == _snapshot(batch)
    fl = _flushes(n)
    for op, xt in fl:
        flush(one.cpus[1], op, xt)
    uc = [c.uc_flushes for c in batch.cpus]
    batch.cpus[1].tlbi_flush_batch(fl)
    a, b = _snapshot(one), _snapshot(batch)
    assert a == b
    assert sum(a["stats"][f"cpu{i}.l2_shared.flushed_entries"] for i in range(4)) > 0
    # every CPU lost entries; called from Python (no CPU in guest code), each forgets them in
    # Unicorn when it next runs: one flush per CPU for the whole batch
    assert [c.uc_flushes - u for c, u in zip(batch.cpus, uc)] == [0, 0, 0, 0]
    assert [c.tlb.lost for c in batch.cpus] == [True, True, True, True]


def test_batch_keeps_a_guest_consistent():
    """After a batch, Unicorn forgot the flushed translations: a guest load sees the new page."""
    from emu.cpu import StopKind
    from guest.asm import assemble
    m = make(ncpus=2)
    prog = assemble("_start:\n ldr x1, [x0]\n svc #0\n", 0x400000)
    m.utables.map_code(0x400000, prog.code)
    old = m.utables.map(DATA)
    m.mem.write64(old, 111)
    c0, c1 = m.cpus
    for c in m.cpus:
        switch_to(c, m.utables)
    c1.set_el(0)
    c1.set_reg(0, DATA)
    assert c1.run(10, pc=0x400000).kind is StopKind.SVC and c1.reg(1) == 111
    new = m.utables.map(DATA)
    m.mem.write64(new, 222)
    c0.tlbi_flush_batch([(TLBIOp.VAE1IS, tlbi_operand(va=DATA, asid=ASID))])
    c1.set_reg(0, DATA)
    assert c1.run(10, pc=0x400000).kind is StopKind.SVC and c1.reg(1) == 222


def test_vale1_keeps_4k_neighbours_when_a_2mb_entry_is_held():
    """Cortex-A76 (the L1D holds 2 MB entries): five pages of one 2 MB region and a 2 MB
    block elsewhere in every structure; VALE1 of the first page removes that page only, from
    the L1D and the L2 (2 entries), and the neighbours still hit the L1D."""
    m = make(ncpus=1, core="cortex-a76")
    c = m.cpus[0]
    switch_to(c, m.utables)
    for i in range(5):
        m.utables.map(DATA + i * 0x1000)
    map_block(m.utables, BLOCK, 0x1600000)
    for va in [DATA + i * 0x1000 for i in range(5)] + [BLOCK]:
        read(c, va)
    assert c.tlb.dtlb.shifts == (12, 21)
    c.tlbi(TLBIOp.VALE1, tlbi_operand(va=DATA, asid=ASID))
    c.dsb("nsh")
    d, l2 = c.tlb.dtlb.stats, c.tlb.l2.stats
    assert (d.flushed_entries, l2.flushed_entries) == (1, 1)
    hits = d.hits
    for i in range(1, 5):
        read(c, DATA + i * 0x1000)
    assert d.hits - hits == 4


def test_guest_tlbi_takes_effect_within_the_quantum():
    """EL1 guest code reads DATA, rewrites DATA's PTE through an alias of its L3 table,
    then DSB ISHST; TLBI VAE1IS; DSB ISH; ISB and reads DATA again in the same quantum: the
    second load sees the new frame (Unicorn's TLB was emptied while the guest ran)."""
    from emu.cpu import StopKind
    from guest.asm import assemble
    m = make(ncpus=2)
    old, new = m.utables.map(DATA), m.frames.alloc(FrameKind.USER, "user")
    m.mem.write64(old, 111)
    m.mem.write64(new, 222)
    pte = m.utables.leaf_slot(DATA)
    alias = 0x2000000
    m.utables.map(alias, pa=pte & ~0xFFF, ap=0b00)              # EL1 RW view of the L3 table
    src = f"""
_start:
    ldr x0, ={DATA:#x}
    ldr x1, [x0]
    ldr x2, ={alias + (pte & 0xFFF):#x}
    ldr x3, ={page_desc(new, ap=0b01, uxn=True, pxn=True):#x}
    str x3, [x2]
    dsb ishst
    ldr x5, ={tlbi_operand(va=DATA, asid=ASID):#x}
    tlbi vae1is, x5
    dsb ish
    isb
    ldr x4, [x0]
    svc #0
"""
    prog = assemble(src, 0x600000)
    m.utables.map_code(0x600000, prog.code, el=1)
    c0 = m.cpus[0]
    for c in m.cpus:
        switch_to(c, m.utables)
    c0.set_el(1)
    stop = c0.run(100, pc=0x600000)
    assert stop.kind is StopKind.SVC, stop
    assert (c0.reg(1), c0.reg(4)) == (111, 222)
