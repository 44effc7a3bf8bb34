"""reaper: path B, pmap.c 1.111 (Feb 2025): the pm_active optimisation.

Source: pmap.c 1.111 (the hunks in the tech@ "uvm_purge()" diff of 13 May 2025);
kern_exit.c before the May 2025 changes (the reaper under KERNEL_LOCK).
Order: every thread: exit1 ... pmap_deactivate: TTBR0 <- zero page, ISB,
pm_active--; the decrement that reaches 0 also issues ASIDE1IS(asid) and
ASIDE1IS(asid|1) -> sched_exit. Reaper: uvm_uarea_free; uvm_exit -> uvmspace_free ->
uvm_map_teardown with ttlb_flush skipped (pm_active == 0) -> pages freed ->
pmap_destroy (vp tables, 2 ASIDE1IS, ASID released).
"""
from .base import ExitStrategy


class Reaper(ExitStrategy):
    name = "reaper"
    summary = "pmap.c 1.111: last pmap_deactivate flushes both ASIDs, the reaper tears down unflushed"
    revision = "1.111"
    reaper_kernel_lock = True


STRATEGY = Reaper
