"""The cost model on small cases computed by hand from the presets' TOML values.

Every expected number below is the sum of cost-table entries written out from
emu/presets/cortex-a72.toml and cortex-a76.toml (cycles), never read from the code
under test:

  cortex-a72: descriptor_read 10, walk_cache_hit 2, l2_tlb_hit 5, tlbi_broadcast 10,
              dsb_ishst 15, dsb_ish_base 500, dsb_ish_per_cpu 20, isb 12, msr_ttbr 5,
              context_switch 500, flush_bp_psci 1000 (ci_flush_bp = cpu_flush_bp_psci),
              repeat_tlbi false
  cortex-a76: the same TLBI/DSB/ISB/MSR/context_switch figures, ci_flush_bp =
              cpu_flush_bp_noop, repeat_tlbi true (erratum 1286807)
"""
from emu.machine import Machine
from emu.sysregs import SysReg, make_ttbr
from emu.tlbi import TLBIOp, tlbi_operand
from emu.walker import Access, Fault
from pmap_py.cpufunc import cpu_tlb_flush_asid_all
from emu.run import build

from .tables import Tables

DATA = 0x1000000
ASID = 5


def machine(ncpus, core="cortex-a72"):
    m = Machine(ncpus=ncpus, core=core, mem_size=32 << 20)
    m.ktables = Tables(m, owner="kernel")
    m.utables = Tables(m, owner="user")
    for c in m.cpus:
        c.msr(SysReg.TTBR1_EL1, make_ttbr(m.ktables.l1, ASID))
        c.msr(SysReg.TTBR0_EL1, make_ttbr(m.utables.l1))
    return m


def test_one_walk_with_a_cold_walk_cache():
    """A user read with empty TLBs and walk cache: 3 levels (T0SZ = 25: L1, L2, L3), so
    3 descriptor reads = 3 x 10 = 30 cycles, no walk-cache hit. The same VA read again
    hits the L1 D-TLB (l1_tlb_hit 0): nothing more. A neighbouring page in the same 2 MB
    region resumes at the cached L3 table: one descriptor read (10) + walk_cache_hit (2)."""
    m = machine(1)
    c = m.cpus[0]
    m.utables.map(DATA)
    m.utables.map(DATA + 0x1000)
    t0 = c.cycles
    assert c.lookup(DATA, Access.READ, 0).__class__ is not Fault
    assert (c.cycles - t0, c.walks, c.walk_reads) == (30, 1, 3)
    t1 = c.cycles
    c.lookup(DATA, Access.READ, 0)
    assert c.cycles - t1 == 0
    t2 = c.cycles
    c.lookup(DATA + 0x1000, Access.READ, 0)
    assert (c.cycles - t2, c.walks, c.walk_reads) == (10 + 2, 2, 4)


def test_one_broadcast_tlbi_and_dsb_on_four_cpus():
    """dsb ishst; tlbi aside1is; dsb ish; isb on a 4-CPU A72:
    15 + 10 + (500 + 20 x 3 other CPUs) + 12 = 597 cycles, charged to the issuing CPU only;
    one TLBI, two DSBs, one ISB."""
    m = machine(4)
    c = m.cpus[0]
    before = [x.cycles for x in m.cpus]
    ev = c.events.copy()
    cpu_tlb_flush_asid_all(c, tlbi_operand(asid=ASID))
    assert c.cycles - before[0] == 15 + 10 + (500 + 20 * 3) + 12 == 597
    assert [x.cycles for x in m.cpus[1:]] == before[1:]
    assert (c.events["tlbi.ASIDE1IS"] - ev["tlbi.ASIDE1IS"], c.events["dsb"] - ev["dsb"],
            c.events["isb"] - ev["isb"]) == (1, 2, 1)


def _switch(core):
    """Switch cpu1 from idle to the workload's main thread a second time (its ASID is
    allocated at the first): the cycles and events of that one cpu_switchto."""
    _, m, k = build({"workload": "touch", "pages": 1, "cpus": 2, "core": core})
    ci = k.cpus[1]
    idle, p = ci.ci_idleproc, k.workload[0].ps_mainproc
    k.cpu_switchto(ci, idle, p)
    k.cpu_switchto(ci, p, idle)
    cpu = ci.cpu
    t0, ev = cpu.cycles, cpu.events.copy()
    k.cpu_switchto(ci, idle, p)
    return cpu.cycles - t0, {key: cpu.events[key] - ev[key] for key in ("ttbr_writes", "isb", "flush_bp_psci")}


def test_one_context_switch_with_and_without_the_bp_flush():
    """cpu_switchto: context_switch 500, then pmap_setttb: TTBR0 <- zero page (msr 5, isb 12),
    cpu_setttb (msr TTBR1 5, isb 12, msr TTBR0 5, isb 12), ci_flush_bp. On the A72 that is
    cpu_flush_bp_psci (1000): 500 + 51 + 1000 = 1551; on the A76 cpu_flush_bp_noop: 551."""
    cycles, ev = _switch("cortex-a72")
    assert cycles == 500 + (5 + 12) + (5 + 12 + 5 + 12) + 1000 == 1551
    assert ev == {"ttbr_writes": 3, "isb": 3, "flush_bp_psci": 1}
    cycles, ev = _switch("cortex-a76")
    assert cycles == 500 + (5 + 12) + (5 + 12 + 5 + 12) == 551
    assert ev == {"ttbr_writes": 3, "isb": 3, "flush_bp_psci": 0}


def _flush(core):
    m = machine(4, core)
    c = m.cpus[0]
    t0, ev = c.cycles, c.events.copy()
    cpu_tlb_flush_asid_all(c, tlbi_operand(asid=ASID))
    return c.cycles - t0, c.events["tlbi.ASIDE1IS"] - ev["tlbi.ASIDE1IS"], c.events["dsb"] - ev["dsb"]


def test_the_repeat_tlbi_erratum_doubles_the_tlbi_and_adds_a_dsb():
    """On the A76 (repeat_tlbi) the helper is dsb ishst; tlbi; dsb ish; tlbi; dsb ish; isb:
    2 TLBIs and 3 DSBs. Cycles: 15 + 10 + 560 + 10 + 560 + 12 = 1167 (the second dsb ish
    completes the repeated broadcast TLBI, so it costs the full 500 + 20 x 3 again), against
    597 with one TLBI and 2 DSBs on the A72 (same figures, no erratum)."""
    assert _flush("cortex-a72") == (597, 1, 2)
    assert _flush("cortex-a76") == (15 + 10 + 560 + 10 + 560 + 12, 2, 3) == (1167, 2, 3)
