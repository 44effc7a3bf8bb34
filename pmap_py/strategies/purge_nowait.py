"""purge-nowait (unsafe): purge without pmap_purge's wait for the siblings.

Source: pmap.c 1.113's pmap_purge with the `while (pm->pm_active != 1)` loop removed.
Order: as purge, but the main thread switches its TTBR0, flushes both ASIDs and sets
pm_pt0pa <- zero page, pm_active <- 0 while siblings that already counted out of
exit1 (ps_exitcnt--) may still have the user tables in TTBR0 on their CPUs; their
pmap_deactivate then returns early (pm_active 0) and their TLBs can refill from the
tables being torn down until they switch to idle.
"""
from pmap_py.cpufunc import MASK64, cpu_tlb_flush_asid_all
from pmap_py.asid import ASID_USER
from pmap_py.kern.steps import STEP
from emu.sysregs import SysReg

from .purge import Purge


def pmap_purge_nowait(ps, cpu, pm) -> None:
    """pmap_purge's body without the spin."""
    ps._trace(cpu, "pmap_purge", pm, active=pm.pm_active)
    cpu.msr(SysReg.TTBR0_EL1, ps.pmap_kernel().pm_pt0pa)
    cpu.isb()
    cpu_tlb_flush_asid_all(cpu, (pm.pm_asid << 48) & MASK64)
    cpu_tlb_flush_asid_all(cpu, ((pm.pm_asid | ASID_USER) << 48) & MASK64)
    pm.pm_pt0pa = ps.pmap_kernel().pm_pt0pa
    pm.pm_active = 0


class PurgeNowait(Purge):
    name = "purge-nowait"
    summary = "unsafe: pmap_purge without waiting for the siblings' pmap_deactivate"
    safe = False

    def pmap_purge(self, k, p, pm):
        pmap_purge_nowait(k.ps, k.curcpu(p), pm)
        yield STEP


STRATEGY = PurgeNowait
