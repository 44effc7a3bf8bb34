"""emu/stats.py: every statistic a run produces is declared once with a description, and
the splits it adds (walks by terminating level, by ASID; TLB occupancy) agree with counts
derived by hand from the tables the test builds."""
from emu import stats
from emu.machine import Machine
from emu.run import run
from emu.sysregs import SysReg, make_ttbr
from emu.tlbi import tlbi_operand
from emu.walker import Access
from pmap_py.cpufunc import cpu_tlb_flush_asid_all

from .tables import Tables
from .test_tlbi import map_block

DATA = 0x1000000


def test_every_statistic_of_real_runs_is_declared_with_a_description():
    names = set()
    for cfg in ({"workload": "threads", "strategy": "purge", "speculate": "default", "irq_prob": 0.3,
                 "unlocked_exit": True},
                {"workload": "storm", "procs": 3, "strategy": "legacy-reaper", "core": "cortex-a76"},
                {"workload": "threads", "strategy": "linux"}, {"workload": "threads", "strategy": "freebsd"}):
        names |= set(run(cfg, 0)["stats"])
    missing = sorted(n for n in names if stats.describe(n) is None)
    assert not missing
    for n in names:
        desc, _ = stats.render(stats.describe(n), n)
        assert desc and "{" not in desc
    assert len({s.name for s in stats.STATS}) == len(stats.STATS)      # each declared once


def test_walks_by_level_by_asid_and_occupancy_by_hand():
    """Two pages in one 2 MB region and a 2 MB block elsewhere, ASID 7, one CPU: three demand
    walks; the pages end at level 3, the block at level 2; all three tagged ASID 7 (nG);
    the L2 TLB then holds 3 entries of ASID 7; a flush of ASID 7 empties it."""
    m = Machine(ncpus=1, core="cortex-a72", mem_size=32 << 20)
    stats.attach(m)
    k, u = Tables(m, owner="kernel"), Tables(m, owner="user")
    c = m.cpus[0]
    c.msr(SysReg.TTBR1_EL1, make_ttbr(k.l1, 7))
    c.msr(SysReg.TTBR0_EL1, make_ttbr(u.l1))
    u.map(DATA)
    u.map(DATA + 0x1000)
    map_block(u, 0x4000000, 0x1600000, ng=True)
    for va in (DATA, DATA + 0x1000, 0x4000000):
        c.lookup(va, Access.READ, 0)
    st = m.stats()
    assert st["cpu0.walker.walks_level3"] == 2
    assert st["cpu0.walker.walks_level2"] == 1
    assert st["cpu0.walker.walks"] == 3
    assert st["asid0x7.walks"] == 3
    assert st["asid0x7.tlb_entries"] == st["cpu0.l2_shared.occupancy"] == 3
    assert "cpu0.tlbi.ASIDE1IS" not in st
    cpu_tlb_flush_asid_all(c, tlbi_operand(asid=7))
    st = m.stats()
    assert st["cpu0.tlbi.ASIDE1IS"] == 1 and st["cpu0.l2_shared.occupancy"] == 0
    assert "asid0x7.tlb_entries" not in st


def test_run_result_has_the_stats_and_exits_per_mcycle():
    r = run({"workload": "storm", "procs": 2, "threads": 2, "cpus": 2}, 0)
    assert sum(r["stats"][f"cpu{i}.walker.walks"] for i in range(2)) == r["events"]["walks"]
    c = r["cycles"]
    assert c["exits_per_mcycle"] == round(2 / (c["total"] / 1e6), 3)
