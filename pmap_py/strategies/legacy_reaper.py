"""legacy-reaper: path A, pmap.c 1.58 (2018) with the reaper of that era.

Source: sys/arch/arm64/arm64/pmap.c 1.58; sys/kern/kern_exit.c of the time (the
reaper took KERNEL_LOCK around uvm_uarea_free and uvm_exit).
Order: every thread: exit1 ... cpu_exit -> pmap_deactivate (no hardware access in
1.58: TTBR0 keeps the user tables until the switch to idle) -> sched_exit. Reaper:
uvm_uarea_free; uvm_exit -> uvmspace_free -> uvm_map_teardown: per page the L3
descriptor is cleared and ttlb_flush runs twice (pmap_pte_remove and
pmap_remove_pted: 4 VAE1IS) -> pages freed -> pmap_destroy (vp tables, 2 ASIDE1IS).
"""
from .base import ExitStrategy


class LegacyReaper(ExitStrategy):
    name = "legacy-reaper"
    summary = "pmap.c 1.58 (2018): the reaper tears down, 4 VAE1IS per page"
    revision = "1.58"
    reaper_kernel_lock = True


STRATEGY = LegacyReaper
