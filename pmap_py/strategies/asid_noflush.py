"""asid-noflush (unsafe): purge whose pmap_free_asid does not flush.

Source: a pmap_free_asid with its two cpu_tlb_flush_asid_all calls commented out under
"XXX TLB Flush?", as in a 2019 work-in-progress pmap.c derived from arm64's (the start of
the riscv64 port; no arm64 revision read, 1.58 or 1.113, lacks the flush: see
docs/strategies.md); everything else as purge (pmap.c 1.113). The exiting thread keeps
filling kernel-VA entries tagged with the dying even ASID after pmap_purge (TTBR1
carries the ASID, every PTE is nG), so the ASID is released with entries of its old
owner still cached: the next pmap that gets it can hit them.
"""
from .purge import Purge


def pmap_destroy_noflush(ps, cpu, pm) -> None:
    """pmap_destroy with pmap_free_asid's two ASIDE1IS left out."""
    pm.pm_refs -= 1
    if pm.pm_refs > 0:
        return
    ps._trace(cpu, "pmap_destroy", pm, refs=0)
    ps.pmap_release(cpu, pm)
    ps._trace(cpu, "pmap_free_asid", pm, gen=pm.generation >> 16, flush="none (XXX TLB Flush?)")
    cpu.charge(cpu.cost.lock_acquire, "lock_acquire")              # pmap_asid_mtx
    ps.asids.release(pm)
    pm.pm_destroyed = True
    ps.live.discard(pm)


class AsidNoflush(Purge):
    name = "asid-noflush"
    summary = "unsafe: pmap_free_asid without its TLBI (\"XXX TLB Flush?\"): ASID reused with entries cached"
    safe = False

    def uvm_exit(self, k, r, pr):
        vm = pr.ps_vmspace
        pr.ps_vmspace = None
        yield from k.teardown(r, k.uvm.uvmspace_free(
            r, vm, destroy=lambda cpu, pm: pmap_destroy_noflush(k.ps, cpu, pm)))


STRATEGY = AsidNoflush
