"""purge-unsafe: per-page flushes skipped while the exiting thread's TTBR0 still
points at the user tables.

Source: the skip of pmap.c 1.113's ttlb_flush (pm_active == 0) without the TTBR0
switch and ASID flush of pmap_purge that make it safe: the main thread waits for the
siblings (pm_active == 1), sets pm_active <- 0 and runs uvm_map_teardown with its
TTBR0 still on the user tables, so no removed page is flushed; its pmap_deactivate
then returns early (pm_active 0) and TTBR0 stays live until the switch to idle. Only
the reaper's pmap_destroy flushes the ASID pair. Entries cached before or refilled
during the teardown keep mapping frames that uvm_unmap_detach frees.
"""
from .purge import Purge


class PurgeUnsafe(Purge):
    name = "purge-unsafe"
    summary = "unsafe: per-page flushes skipped with TTBR0 still on the user tables"
    safe = False

    def uvm_purge(self, k, p):
        vm = p.p_p.ps_vmspace
        pm = vm.pmap
        k.ktrace(p, "uvm_purge")
        while not k.ps.pmap_purge_ready(pm):
            yield from k.spin(p)
        pm.pm_active = 0                                 # ttlb_flush now skips
        yield from k.uvm.uvmspace_purge(p, vm)


STRATEGY = PurgeUnsafe
