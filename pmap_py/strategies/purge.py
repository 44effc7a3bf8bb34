"""purge: path C, current OpenBSD (pmap.c 1.113, kern_exit.c 1.252, uvm_glue.c 1.94,
uvm_map.c 1.346).

Order: non-main threads: exit1 -> ps_exitcnt-- (waking the main thread) ->
pmap_deactivate (TTBR0 <- zero page, ISB, pm_active--) -> sched_exit. Main thread,
after "thrdeath": __mp_release_all(&kernel_lock); uvm_purge: pmap_purge (spin until
pm_active == 1, TTBR0 <- zero page, ISB, ASIDE1IS(asid), ASIDE1IS(asid|1),
pm_pt0pa <- zero page, pm_active <- 0), then uvmspace_purge -> uvm_map_teardown with
no per-page TLBI (sched_pause per entry: a reschedule loads the zero page);
KERNEL_LOCK; cpu_exit's pmap_deactivate returns early (pm_active 0). Reaper:
uvm_uarea_free, uvm_exit on an empty map -> pmap_destroy (vp tables, 2 ASIDE1IS,
ASID released) -> PS_ZOMBIE under the kernel lock.
"""
from pmap_py.kern.steps import STEP

from .base import ExitStrategy


class Purge(ExitStrategy):
    name = "purge"
    summary = "pmap.c 1.113 (current): pmap_purge (TTBR0 -> zero page, 2 ASIDE1IS), teardown in exit1"
    revision = "1.113"

    def exit1_purge(self, k, p):
        held = k.kernel_lock.release_all(p)              # __mp_release_all(&kernel_lock)
        yield from k.teardown(p, self.uvm_purge(k, p))
        yield from k.kernel_lock.acquire(p, max(held, 1))    # KERNEL_LOCK()

    def uvm_purge(self, k, p):
        vm = p.p_p.ps_vmspace
        k.ktrace(p, "uvm_purge")
        yield from self.pmap_purge(k, p, vm.pmap)
        yield from k.uvm.uvmspace_purge(p, vm)

    def pmap_purge(self, k, p, pm):
        """Spin (one step per CPU_BUSY_CYCLE) until every sibling has deactivated."""
        while not k.ps.pmap_purge_ready(pm):
            yield from k.spin(p)                         # CPU_BUSY_CYCLE
        k.ps.pmap_purge_flush(k.curcpu(p), pm)
        yield STEP


STRATEGY = Purge
