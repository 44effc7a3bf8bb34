"""The CPU's architectural semantics on Unicorn, one test per defect of the hardware review
(issue 7): what EL0 may execute, the EL after a guest ERET, barriers recognised by what is
executed, the run sentinel, TBI, fault counting and budgets, literal loads, AT, trace events.

Expected values come from the Arm ARM (DDI 0487): C6.2 for encodings and UNDEFINED cases,
D5.2 (VA ranges, TBI), D13.2.102 (PAR_EL1), D8 (TLB maintenance, completion by DSB).
"""
import pytest
from unicorn import arm64_const as A

from emu.cpu import StopKind
from emu.descriptors import AP_RO_ALL, AP_RO_EL1, AP_RW_EL1, table_desc
from emu.frames import FrameKind
from emu.machine import BudgetExceeded
from emu.sysregs import SysReg, make_ttbr
from emu.tlbi import TLBIOp, tlbi_operand
from emu.trace import Ev, Trace
from emu.walker import Access, Fault, FaultKind
from guest.asm import assemble

from .tables import Tables
from .test_cpu import ASID, CODE, DATA, KCODE, machine, switch_to

MODES = pytest.mark.parametrize("instrument", [False, True], ids=["fast", "instrumented"])


@pytest.fixture
def one():
    """A one-CPU machine with user tables (T0SZ=25) and the CPU on them at EL0."""
    m = machine(1)
    t = Tables(m)
    switch_to(m.cpus[0], t)
    return m, t, m.cpus[0]


def load(t, src, va=CODE, el=0, at=None):
    """Assemble src for va (or for `at`, for position-independent code loaded at va)."""
    prog = assemble(src, va if at is None else at)
    return t.map_code(va, prog.code, el=el)


# ---------------------------------------------------------------- defect 2: EL0 and EL1-only instructions
@pytest.mark.parametrize("insn", ["tlbi vmalle1", "tlbi vae1is, x0", "tlbi aside1, x0", "at s1e1r, x0",
                                  "msr ttbr0_el1, x0", "msr ttbr1_el1, x0", "msr tcr_el1, x0",
                                  "msr sctlr_el1, x0", "msr mair_el1, x0"])
def test_el1_only_instructions_are_undefined_at_el0(one, insn):
    m, t, cpu = one
    m.trace = Trace()
    load(t, f"_start:\n {insn}\n mov x8, #1\n svc #0\n")
    cpu.set_el(0)
    cpu.set_reg(0, 0x1234_5000_0000)
    regs = {r: cpu.mrs(r) for r in (SysReg.TTBR0_EL1, SysReg.TTBR1_EL1, SysReg.TCR_EL1, SysReg.SCTLR_EL1,
                                   SysReg.MAIR_EL1)}
    flushes, events = cpu.uc_flushes, dict(cpu.events)
    stop = cpu.run(100, pc=CODE)
    # UNDEFINED at EL0 (Arm ARM C5.2/C6.2.* "when EL0: UNDEFINED"): stops at the instruction
    assert stop.kind is StopKind.UNDEF and stop.pc == CODE and stop.executed == 0
    assert cpu.events == {**events, "undef": 1}
    assert cpu.pending == [] and cpu.uc_flushes == flushes
    assert {r: cpu.mrs(r) for r in regs} == regs
    assert [r[3]["pc"] for r in m.trace.of_kind(Ev.UNDEF)] == [CODE]


# ---------------------------------------------------------------- defect 3: EL follows PSTATE (guest ERET)
ERET_TO_USER = f"""
_start:
    ldr x9, ={CODE:#x}
    msr elr_el1, x9
    msr spsr_el1, xzr          // M = EL0t
    eret
"""


@MODES
def test_guest_eret_to_el0_gets_el0_permissions(instrument):
    m = machine(1, instrument=instrument)
    t = Tables(m)
    load(t, ERET_TO_USER, va=KCODE, el=1)
    load(t, f"_start:\n ldr x0, ={DATA:#x}\n ldr x1, [x0]\n svc #0\n")
    t.map(DATA, ap=AP_RW_EL1)                  # EL1 only
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(1)
    stop = cpu.run(100, pc=KCODE)
    assert cpu.el == 0
    assert stop.kind is StopKind.FAULT and stop.fault.kind is FaultKind.PERMISSION
    assert stop.fault.el == 0 and stop.fault.access is Access.READ and stop.pc == CODE + 4
    assert cpu.events["eret"] == 1


# ---------------------------------------------------------------- defect 5: barriers by what is executed
def test_barrier_is_recognised_by_the_word_executed_not_by_the_va():
    m = machine(1)
    a, b = Tables(m, owner="a"), Tables(m, owner="b")
    load(a, "_start:\n nop\n dsb ish\n svc #0\n")
    load(b, "_start:\n nop\n add x0, x0, #1\n svc #0\n")   # an add at the VA of a's dsb
    cpu = m.cpus[0]
    switch_to(cpu, a, asid=1)
    cpu.set_el(0)
    assert cpu.run(100, pc=CODE).kind is StopKind.SVC
    assert cpu.events["dsb"] == 1
    switch_to(cpu, b, asid=2)
    cpu.tlbi(TLBIOp.VAE1IS, tlbi_operand(va=DATA, asid=2))
    assert cpu.run(100, pc=CODE).kind is StopKind.SVC
    assert cpu.events["dsb"] == 1                           # b ran no DSB


def test_barrier_reached_through_an_alias_va_is_seen():
    m = machine(1, trace=True)
    t = Tables(m)
    pa = load(t, "_start:\n nop\n dsb ish\n svc #0\n")
    alias = CODE + 0x10000
    t.map(alias, pa=pa, ap=AP_RO_ALL, uxn=False, pxn=True)
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    cpu.tlbi(TLBIOp.VAE1, tlbi_operand(va=DATA, asid=ASID))
    assert cpu.run(100, pc=alias).kind is StopKind.SVC
    assert cpu.events["dsb"] == 1
    dsb = m.trace.of_kind(Ev.DSB)
    assert [r[3]["completes"] for r in dsb] == [1]          # the DSB, not the quantum end, completed it


# ---------------------------------------------------------------- defect 6: no VA stolen by the run sentinel
TOP_USER_PAGE = 0x0000_FFFF_FFFF_F000


def test_branch_into_the_hole_is_a_level0_translation_fault(one):
    m, t, cpu = one
    load(t, f"_start:\n ldr x0, ={TOP_USER_PAGE:#x}\n br x0\n")
    cpu.set_el(0)
    stop = cpu.run(100, pc=CODE)
    # T0SZ=25: VA bits [63:39] must be 0 for TTBR0 (Arm ARM D5.2.4): a level-0 translation fault
    assert stop.kind is StopKind.FAULT and stop.pc == TOP_USER_PAGE
    assert (stop.fault.kind, stop.fault.level, stop.fault.access) == (FaultKind.TRANSLATION, 0, Access.FETCH)
    assert stop.fault.fsc == 0x04


def test_load_from_the_hole_is_a_level0_translation_fault(one):
    m, t, cpu = one
    load(t, f"_start:\n ldr x0, ={TOP_USER_PAGE + 8:#x}\n ldr x1, [x0]\n svc #0\n")
    cpu.set_el(0)
    stop = cpu.run(100, pc=CODE)
    assert stop.kind is StopKind.FAULT and stop.pc == CODE + 4
    assert (stop.fault.kind, stop.fault.level, stop.fault.access) == (FaultKind.TRANSLATION, 0, Access.READ)


def test_top_user_page_is_usable_with_t0sz_16():
    """T0SZ=16: a 4-level walk, VA[47:0] all user space, the last page included."""
    m = machine(1)
    t = Tables(m)                                # its L1 table hangs under L0[511]
    l0 = m.frames.alloc(FrameKind.PAGE_TABLE, "test", 0)
    m.mem.write64(l0 + 511 * 8, table_desc(t.l1))
    load(t, "_start:\n mov x0, #7\n ldr x1, lit\n svc #0\nlit: .quad 0x77\n", va=TOP_USER_PAGE, at=CODE)
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.msr(SysReg.TTBR0_EL1, make_ttbr(l0))
    cpu.msr(SysReg.TCR_EL1, (cpu.tcr & ~0x3F) | 16)
    cpu.set_el(0)
    stop = cpu.run(100, pc=TOP_USER_PAGE)
    assert stop.kind is StopKind.SVC and cpu.reg(0) == 7 and cpu.reg(1) == 0x77
    assert stop.pc == TOP_USER_PAGE + 12 and stop.executed == 3
    # one cold 4-level walk for the fetch; the literal load misses the DTLB and hits L2
    assert cpu.walks == 1 and cpu.walk_reads == 4


# ---------------------------------------------------------------- defect 7: TBI
TCR_TBI0 = 1 << 37


@MODES
def test_tbi_tag_is_not_part_of_tlb_entries(instrument):
    m = machine(1, instrument=instrument)
    t = Tables(m)
    load(t, "_start:\n ldr x1, [x0]\n svc #0\n")
    old = t.map(DATA)
    new = m.frames.alloc(FrameKind.USER, "test")
    m.mem.write64(old, 0x01D)
    m.mem.write64(new, 0x2E)
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.msr(SysReg.TCR_EL1, cpu.tcr | TCR_TBI0)
    cpu.set_el(0)
    tagged = 0x05 << 56 | DATA
    cpu.set_reg(0, tagged)
    assert cpu.run(100, pc=CODE).kind is StopKind.SVC and cpu.reg(1) == 0x01D
    assert cpu.tlb.dtlb.probe(DATA, ASID) is not None
    assert all(e.va_base >> 56 == 0 for e in cpu.tlb.entries())
    r = cpu.lookup(0x7F << 56 | DATA, Access.READ, 0)                 # any tag, same entry
    assert r.__class__ is not Fault and r.va_base == DATA
    t.map(DATA, pa=new)
    cpu.tlbi(TLBIOp.VAE1, tlbi_operand(va=DATA, asid=ASID))          # the untagged VA
    cpu.dsb("nsh")
    assert cpu.tlb.probe(DATA, ASID) is None
    cpu.set_reg(0, tagged)
    assert cpu.run(100, pc=CODE).kind is StopKind.SVC and cpu.reg(1) == 0x2E


# ---------------------------------------------------------------- defect 8: instruction abort counts
@MODES
def test_instruction_abort_counts_the_branch(instrument):
    m = machine(1, instrument=instrument)
    t = Tables(m)
    load(t, "_start:\n ldr x0, =0x7000000\n br x0\n")
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    stop = cpu.run(100, pc=CODE)
    assert stop.kind is StopKind.FAULT and stop.fault.access is Access.FETCH
    assert stop.executed == 2 and cpu.insns == 2                      # ldr and br retired


@MODES
def test_data_abort_does_not_count_the_faulting_load(instrument):
    m = machine(1, instrument=instrument)
    t = Tables(m)
    load(t, "_start:\n ldr x0, =0x7000000\n nop\n ldr x1, [x0]\n")
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    stop = cpu.run(100, pc=CODE)
    assert stop.kind is StopKind.FAULT and stop.fault.access is Access.READ
    assert stop.executed == 2 and stop.pc == CODE + 8


# ---------------------------------------------------------------- defect 10: every run ends
def test_fault_resumed_without_a_fix_hits_the_budget(one):
    m, t, cpu = one
    load(t, f"_start:\n ldr x0, ={DATA:#x}\n ldr x1, [x0]\n svc #0\n")
    cpu.set_el(0)
    cpu.pc = CODE
    stops = []

    def on_stop(c, stop):                     # "handles" the fault without mapping the page
        stops.append(stop.kind)
        c.pc = stop.pc
        return True

    with pytest.raises(BudgetExceeded, match="budget 500"):
        m.run(quantum=100, budget=500, on_stop=on_stop)
    # 1 instruction retires, then every run faults at once: 499 stops fill the budget
    assert cpu.insns == 1 and stops == [StopKind.FAULT] * 499
    assert cpu.faults == 499


def test_a_faulting_cpu_is_charged_and_does_not_starve_the_others():
    m = machine(2)
    t = Tables(m)
    load(t, f"_start:\n ldr x0, ={DATA:#x}\n ldr x1, [x0]\n svc #0\n")
    load(t, "_start:\n mov x1, #300\nloop: subs x1, x1, #1\n b.ne loop\n svc #0\n", va=CODE + 0x1000)
    c0, c1 = m.cpus
    for c, pc in ((c0, CODE), (c1, CODE + 0x1000)):
        switch_to(c, t)
        c.set_el(0)
        c.pc = pc
    before = c0.cycles
    stop = c0.run(100)
    # the fetch: a cold walk (L1, L2, L3: 3 reads); one retired instruction; the load: a walk
    # resumed at the cached L2 table (1 read) that faults at level 2; the exception entry
    cost = m.core.cost
    assert stop.kind is StopKind.FAULT and stop.executed == 1
    assert c0.cycles - before == 4 * cost.descriptor_read + cost.walk_cache_hit + cost.base_cpi + \
        cost.exception_entry
    c0.pc = CODE
    done = []

    def on_stop(c, s):
        if c is c0:
            c.pc = s.pc
            return True
        done.append((c.index, s.kind))
        return False

    with pytest.raises(BudgetExceeded):
        m.run(quantum=50, budget=2000, on_stop=on_stop)
    assert done == [(1, StopKind.SVC)]                   # cpu1 finished while cpu0 kept faulting


def test_zero_or_negative_quantum_is_refused(one):
    m, t, cpu = one
    with pytest.raises(ValueError, match="quantum"):
        m.run(quantum=0)
    with pytest.raises(ValueError, match="quantum"):
        m.run(quantum=-5)
    with pytest.raises(ValueError, match="positive"):
        cpu.run(0, pc=CODE)


# ---------------------------------------------------------------- defect 11: literal loads
LITERALS = "_start:\n" + " ldr x1, lit\n ldr x2, =0x1122334455667788\n" * 8 + " svc #0\nlit: .quad 5\n"


def test_literal_loads_reach_the_dtlb_instrumented():
    m = machine(1, instrument=True)
    t = Tables(m)
    load(t, LITERALS)
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    stop = cpu.run(100, pc=CODE)
    assert stop.kind is StopKind.SVC and cpu.reg(1) == 5 and cpu.reg(2) == 0x1122334455667788
    s = cpu.tlb.dtlb.stats
    assert s.hits + s.misses == 16 and s.misses == 1            # 16 literal loads, one code page


def test_literal_load_fills_the_dtlb_fast():
    m = machine(1)
    t = Tables(m)
    load(t, LITERALS)
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    assert cpu.run(100, pc=CODE).kind is StopKind.SVC
    # the fetch walks and fills ITLB + L2; the first literal load misses the DTLB, hits L2
    assert cpu.tlb.dtlb.stats.misses == 1 and cpu.tlb.dtlb.stats.inserts == 1
    assert cpu.tlb.dtlb.probe(CODE, ASID) is not None and cpu.walks == 1


# ---------------------------------------------------------------- defect 12: AT from the model
AT_PROG = """
_start:
    at {op}, x0
    isb
    mrs x1, par_el1
    svc #0
"""


@pytest.mark.parametrize("op,va,expect", [
    # PAR: ATTR = MAIR byte 0 (0xff), PA[47:12], bit 11 RES1, SH = inner (0b11) << 7
    ("s1e1r", DATA, lambda pa: 0xFF << 56 | pa | 0x800 | 3 << 7),
    ("s1e0w", DATA, lambda pa: 0xFF << 56 | pa | 0x800 | 3 << 7),
    # F=1, FST = translation fault level 3 (0b000111), bit 11 RES1
    ("s1e1r", DATA + 0x1000, lambda pa: 0x800 | 0x07 << 1 | 1),
    # no L3 table for this 2 MB region: translation fault level 2
    ("s1e1w", DATA + 0x200000, lambda pa: 0x800 | 0x06 << 1 | 1),
    # EL0 write to an EL0 read-only page: permission fault level 3 (0b001111)
    ("s1e0w", DATA + 0x2000, lambda pa: 0x800 | 0x0F << 1 | 1),
    # EL0 read of an EL1-only page: permission fault level 3
    ("s1e0r", DATA + 0x3000, lambda pa: 0x800 | 0x0F << 1 | 1),
    ("s1e1r", DATA + 0x3000, lambda pa: 0xFF << 56 | pa | 0x800 | 3 << 7),
])
def test_at_is_answered_by_the_model(op, va, expect):
    m = machine(1)
    t = Tables(m)
    load(t, AT_PROG.replace("{op}", op), va=KCODE, el=1)
    pas = {DATA: t.map(DATA), DATA + 0x2000: t.map(DATA + 0x2000, ap=AP_RO_ALL),
           DATA + 0x3000: t.map(DATA + 0x3000, ap=AP_RO_EL1)}
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(1)
    cpu.set_reg(0, va)
    assert cpu.run(100, pc=KCODE).kind is StopKind.SVC
    assert cpu.reg(1) == expect(pas.get(va, 0))
    assert cpu.events[f"at.{op.upper()}"] == 1


# ---------------------------------------------------------------- trace events
def test_permission_fault_and_undef_reach_the_trace():
    m = machine(1, trace=True)
    t = Tables(m)
    load(t, f"_start:\n ldr x0, ={DATA:#x}\n str x0, [x0]\n")
    load(t, "_start:\n udf #1\n", va=CODE + 0x1000)
    t.map(DATA, ap=AP_RO_ALL)
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    assert cpu.run(100, pc=CODE).kind is StopKind.FAULT
    (rec,) = m.trace.of_kind(Ev.PERM_FAULT)
    assert rec[3]["va"] == DATA and rec[3]["access"] == "write" and rec[3]["el"] == 0
    assert cpu.run(100, pc=CODE + 0x1000).kind is StopKind.UNDEF
    (rec,) = m.trace.of_kind(Ev.UNDEF)
    assert rec[3]["pc"] == CODE + 0x1000 and rec[3]["insn"] == "00000001"


# ---------------------------------------------------------------- contract with the checker
class StaleRecorder:
    def __init__(self):
        self.uses = []

    def stale_use(self, cpu, va, e, access, el):
        self.uses.append((cpu.index, va, e.va_base, access, el))


@MODES
def test_hits_on_stale_entries_are_reported_to_the_checker(instrument):
    m = machine(1, instrument=instrument)
    t = Tables(m)
    load(t, f"_start:\n ldr x0, ={DATA:#x}\n ldr x1, [x0, #8]\n svc #0\n")
    t.map(DATA)
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    assert cpu.run(100, pc=CODE).kind is StopKind.SVC
    m.checker = StaleRecorder()
    cpu.tlb.dtlb.probe(DATA, ASID).stale = True
    cpu._uc_flush()                          # what the checker does when it marks entries
    assert cpu.run(100, pc=CODE).kind is StopKind.SVC
    assert m.checker.uses == [(0, DATA, DATA, Access.READ, 0)]


# ---------------------------------------------------------------- mutants of the review
def test_pending_tlbi_is_completed_when_the_quantum_ends():
    m = machine(1)
    t = Tables(m)
    load(t, f"_start:\n ldr x0, ={(ASID << 48) | (DATA >> 12):#x}\n tlbi vae1, x0\n nop\n nop\n svc #0\n",
         va=KCODE, el=1)
    t.map(DATA)
    cpu = m.cpus[0]
    switch_to(cpu, t)
    assert cpu.lookup(DATA, Access.READ, 0).__class__ is not Fault
    cpu.set_el(1)
    stop = cpu.run(3, pc=KCODE)                # ends after the TLBI, before any DSB
    assert stop.kind is StopKind.QUANTUM and cpu.events["tlbi.VAE1"] == 1 and cpu.events["dsb"] == 0
    assert cpu.pending == [] and cpu.tlb.probe(DATA, ASID) is None


def test_epd_stops_walks_resumed_from_the_walk_cache(one):
    m, t, cpu = one
    t.map(DATA)
    t.map(DATA + 0x1000)
    assert cpu.lookup(DATA, Access.READ, 0).__class__ is not Fault        # caches the L3 table
    cpu.tlbi(TLBIOp.VALE1, tlbi_operand(va=DATA, asid=ASID))             # leaf gone, walk cache kept
    cpu.dsb("nsh")
    cpu.msr(SysReg.TCR_EL1, cpu.tcr | 1 << 7)                            # EPD0: no TTBR0 walks
    for va in (DATA, DATA + 0x1000):
        r = cpu.lookup(va, Access.READ, 0)
        assert r.__class__ is Fault and (r.kind, r.level) == (FaultKind.TRANSLATION, 0)


@pytest.mark.parametrize("by_guest", [False, True], ids=["python", "guest"])
def test_msr_empties_unicorns_tlb(by_guest):
    """TTBR0 = b's tables with ASID 2 in TTBR0, but TCR.A1 = 1 takes the ASID (1) from TTBR1,
    so a's entries still serve; clearing A1 makes ASID 2 current: the guest must now read b's
    frame. QEMU does not flush its TLB on a TCR write (docs/unicorn.md §Flushing Unicorn's TLB): only the model can."""
    m = machine(1)
    a, b = Tables(m, owner="a"), Tables(m, owner="b")
    for tb, val in ((a, 0xA), (b, 0xB)):
        load(tb, f"_start:\n ldr x0, ={DATA:#x}\n ldr x1, [x0]\n svc #0\n")
        load(tb, "_start:\n msr tcr_el1, x2\n isb\n svc #0\n", va=KCODE, el=1)
        m.mem.write64(tb.map(DATA), val)
    cpu = m.cpus[0]
    cpu.msr(SysReg.TTBR1_EL1, make_ttbr(m.ktables.l1, 1))
    cpu.msr(SysReg.TTBR0_EL1, make_ttbr(a.l1, 2))
    cpu.set_el(0)
    assert cpu.run(100, pc=CODE).kind is StopKind.SVC and cpu.reg(1) == 0xA
    cpu.msr(SysReg.TTBR0_EL1, make_ttbr(b.l1, 2))
    tcr = cpu.tcr & ~(1 << 22)                   # A1 = 0: the ASID comes from TTBR0
    if by_guest:
        cpu.set_el(1)
        cpu.set_reg(2, tcr)
        assert cpu.run(100, pc=KCODE).kind is StopKind.SVC and cpu.tcr == tcr
        cpu.set_el(0)
    else:
        cpu.msr(SysReg.TCR_EL1, tcr)
    assert cpu.asid == 2
    assert cpu.run(100, pc=CODE).kind is StopKind.SVC and cpu.reg(1) == 0xB


# ---------------------------------------------------------------- the inlined miss path keeps the TLBs' books
def _books_balance(cpu):
    """Every index of every TLB agrees with its sets, and an entry's refs is the number of
    structures holding it (what SetAssocTLB.insert maintains; the fill path inlines it)."""
    holders = {}
    for t in (cpu.tlb.itlb, cpu.tlb.dtlb, cpu.tlb.l2):
        keys = {k: e for s in t.sets for k, e in s.items()}
        assert {k: e for d in t.by_tag.values() for k, e in d.items()} == keys, t.name
        assert all(d for d in t.by_tag.values()), t.name
        sizes = [0] * 31
        for k in keys:
            sizes[(k >> 17) & 63] += 1
        assert sizes == t.shift_count, t.name
        assert t.shifts == tuple(x for x in t._possible_shifts if sizes[x]), t.name
        for e in keys.values():
            holders[id(e)] = (e, holders.get(id(e), (e, 0))[1] + 1)
    assert all(e.refs == n for e, n in holders.values())


@pytest.mark.parametrize("replacement", ["lru", "random"])
def test_miss_path_keeps_tlb_indexes_consistent(replacement):
    from dataclasses import replace

    from emu.cores import load_preset
    p = load_preset("cortex-a72")
    small = lambda g, n, w: replace(g, entries=n, ways=w, replacement=replacement)
    core = replace(p, l1d=small(p.l1d, 4, 4), l2=small(p.l2, 16, 2))
    m = machine(1, core=core)
    t = Tables(m)
    n = 40
    load(t, f"_start:\n ldr x0, ={DATA:#x}\n mov x1, #{n}\nloop: str x1, [x0]\n add x0, x0, #0x1000\n"
            " subs x1, x1, #1\n b.ne loop\n svc #0\n")
    for i in range(n):
        t.map(DATA + i * 0x1000, ng=i % 3 != 0)           # every third page global
    cpu = m.cpus[0]
    switch_to(cpu, t)
    cpu.set_el(0)
    for i in range(4):
        assert cpu.run(10_000, pc=CODE).kind is StopKind.SVC
        _books_balance(cpu)
        if i == 1:                                  # every index emptied, then filled again
            cpu.tlbi(TLBIOp.VMALLE1)
            cpu.dsb("nsh")
            _books_balance(cpu)
    # every store missed the 4-entry DTLB (a cyclic sweep of 40 pages): 40 walks per pass
    # except what the 16-entry L2 still held; LRU L2 over a cyclic sweep of 40 > 16 holds none
    if replacement == "lru":
        assert cpu.tlb.dtlb.stats.misses == 4 * n and cpu.tlb.l2.stats.hits == 0


# ---------------------------------------------------------------- the Unicorn boundary
@pytest.mark.parametrize("version", ["2.2.0", "2.0.1", "1.0.3"])
def test_untested_unicorn_version_is_refused_with_a_clear_message(version):
    from emu.unicorn_boundary import UnsupportedUnicorn, check_version
    with pytest.raises(UnsupportedUnicorn, match=f"armmu needs Unicorn 2.1.x .*found {version}"):
        check_version(version)
    check_version("2.1.4")


def test_exception_in_the_fill_hook_reaches_the_caller(one):
    """Our ctypes fill callback has no binding wrapper: an exception raised while serving a
    miss (here by a walk observer) must stop the run and be raised by Cpu.run."""
    m, t, cpu = one
    load(t, "_start:\n nop\n svc #0\n")

    def observer(c, va, r, speculative):
        raise RuntimeError("observer failed")
    m.walk_observers.append(observer)
    cpu.set_el(0)
    with pytest.raises(RuntimeError, match="observer failed"):
        cpu.run(100, pc=CODE)
    m.walk_observers.clear()
    assert cpu.run(100, pc=CODE).kind is StopKind.SVC


# ---------------------------------------------------------------- stack pointers and thread contexts
SP_SWAP = "_start:\n mov x0, sp\n mov sp, x1\n svc #0\n"          # old SP out, new SP in


def test_sp_is_the_stack_pointer_of_the_running_el(one):
    """Cpu.sp is SP_EL0 at EL0 and SP_EL1 at EL1 (Arm ARM D1.8.2, SPSel); an EL switch banks
    them as exception entry and return do, and sp_el0 reaches the user SP from either EL."""
    m, t, cpu = one
    load(t, SP_SWAP)
    load(t, SP_SWAP, va=KCODE, el=1)
    cpu.set_el(0)
    cpu.sp = 0x7000
    cpu.set_reg(1, 0x9000)
    assert cpu.run(100, pc=CODE).kind is StopKind.SVC
    assert cpu.reg(0) == 0x7000 and cpu.sp == 0x9000 and cpu.sp_el0 == 0x9000
    cpu.set_el(1)
    cpu.sp = 0x5000                               # the kernel stack: not the user's
    assert cpu.sp_el0 == 0x9000
    cpu.sp_el0 = 0xA000
    cpu.set_el(0)
    cpu.set_reg(1, 0xB000)
    assert cpu.run(100, pc=CODE).kind is StopKind.SVC and cpu.reg(0) == 0xA000
    cpu.set_el(1)
    assert (cpu.sp, cpu.sp_el0) == (0x5000, 0xB000)
    cpu.set_reg(1, 0x6000)
    assert cpu.run(100, pc=KCODE).kind is StopKind.SVC and cpu.reg(0) == 0x5000
    assert (cpu.sp, cpu.sp_el0) == (0x6000, 0xB000)


USER_STATE = """
_start:
    mov x5, #42
    mov sp, x1
    msr tpidr_el0, x2
    cmp x5, x5                 // Z = C = 1
    svc #0
"""
CHECK_STATE = """
_start:
    mov x0, sp
    mrs x3, tpidr_el0
    svc #0
"""


@pytest.mark.parametrize("saved_at", [0, 1], ids=["saved-at-el0", "saved-at-el1"])
def test_a_thread_context_moves_to_another_cpu(saved_at):
    """Cpu.save_context on cpu0, restore_context on cpu1: the thread's registers, SP_EL0,
    TPIDR_EL0 and NZCV move; cpu1 keeps its own EL, SP_EL1 and translation registers."""
    m = machine(2)
    t, other = Tables(m), Tables(m)
    load(t, USER_STATE)
    c0, c1 = m.cpus
    switch_to(c0, t)
    switch_to(c1, other, asid=7)
    c1.set_el(1)
    c1.sp = 0x5000
    c0.set_el(0)
    c0.set_reg(1, 0x8000)
    c0.set_reg(2, 0x1234)
    assert c0.run(100, pc=CODE).kind is StopKind.SVC
    flags = c0.nzcv
    c0.set_el(saved_at)                           # (an EL switch sets PSTATE: the kernel keeps NZCV)
    c0.nzcv = flags
    ctx = c0.save_context()
    c0.set_reg(5, 0)
    c1.restore_context(ctx)
    assert (c1.reg(5), c1.sp_el0, c1.tpidr_el0, c1.nzcv >> 28) == (42, 0x8000, 0x1234, 0b0110)
    assert (c1.el, c1._raw.el(), c1.sp) == (1, 1, 0x5000)
    assert (c1.asid, c1.ttbr0) == (7, make_ttbr(other.l1))
    for r in (SysReg.TTBR0_EL1, SysReg.TTBR1_EL1, SysReg.TCR_EL1):
        assert c1.uc.reg_read(A.UC_ARM64_REG_CP_REG, r.cp_reg) == c1.mrs(r)
    assert c0.reg(5) == 0                         # a copy: cpu0's registers are its own
    # the thread runs on cpu1 from its state (cpu1 back on the thread's tables)
    switch_to(c1, t)
    c1.set_el(0)
    load(t, CHECK_STATE, va=CODE + 0x1000)
    assert c1.run(100, pc=CODE + 0x1000).kind is StopKind.SVC
    assert (c1.reg(0), c1.reg(3)) == (0x8000, 0x1234)
