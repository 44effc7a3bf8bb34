"""purge-early (unsafe): Kettenis' pmap_exit PoC applied to every thread.

Source: the pmap_exit of the tech@ "uvm_purge()" proof of concept (13 May 2025),
whose full form (TTBR0 <- zero page, ISB, ASIDE1IS(asid), ASIDE1IS(asid|1),
pm_pt0pa <- zero page, pm_active <- 0) is meant for the last thread only. Here every
exiting thread runs it (non-main threads where ps_exitcnt-- is, the main thread at
uvm_purge), so a sibling still running user code gets the zero page as its user
table at its next context switch and faults forever: uvm_fault finds the page
mapped, pmap_enter changes nothing, the instruction faults again.
"""
from pmap_py.kern.steps import STEP

from .purge import Purge
from .purge_nowait import pmap_purge_nowait


class PurgeEarly(Purge):
    name = "purge-early"
    summary = "unsafe: pmap_exit (zero page in pm_pt0pa) for every thread: siblings fault forever"
    safe = False

    def pmap_purge(self, k, p, pm):
        if pm.pm_pt0pa != k.ps.pmap_kernel().pm_pt0pa:
            pmap_purge_nowait(k.ps, k.curcpu(p), pm)
        yield STEP

    def thread_exit(self, k, p):
        pm = k.pmap_of(p)
        k.ktrace(p, "pmap_exit")
        pmap_purge_nowait(k.ps, k.curcpu(p), pm)
        yield STEP


STRATEGY = PurgeEarly
