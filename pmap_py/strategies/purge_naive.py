"""purge-naive: mpi's first uvm_purge diff (tech@, 12 May 2025) on pmap.c 1.111.

Source: the diff against kern_exit.c 1.245 in the "uvm_purge()" thread; pmap.c 1.111.
Order: main thread, exit1 step 5: release the kernel lock, uvmspace_purge ->
uvm_map_teardown while pm_active >= 1 (its own thread has not deactivated), so
every page costs ttlb_flush = 2 VAE1IS; KERNEL_LOCK. Then every thread's
pmap_deactivate as in 1.111 (the last one flushes both ASIDs: 2 ASIDE1IS in the
exiting path), and the reaper's pmap_destroy flushes both again (2 more).
"""
from pmap_py.kern.steps import STEP

from .base import ExitStrategy


class PurgeNaive(ExitStrategy):
    name = "purge-naive"
    summary = "mpi's first diff on 1.111: uvm_purge in exit1 while pm_active >= 1, 2 VAE1IS per page"
    revision = "1.111"

    def exit1_purge(self, k, p):
        held = k.kernel_lock.release_all(p)              # __mp_release_all(&kernel_lock)
        k.ktrace(p, "uvm_purge")
        yield from k.teardown(p, k.uvm.uvmspace_purge(p, p.p_p.ps_vmspace))
        yield STEP
        yield from k.kernel_lock.acquire(p, max(held, 1))


STRATEGY = PurgeNaive
