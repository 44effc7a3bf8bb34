"""freebsd: FreeBSD arm64's vmspace_exit (sys/vm/vm_map.c) and pmap_remove_pages /
pmap_release (sys/arm64/arm64/pmap.c), on this pmap's tables.

FreeBSD has no trampoline ASID pair: ``trampoline = False`` (one ASID, kernel table
in TTBR1 at EL0).
Order: every thread but the last switches to vmspace0 (pmap_activate: TTBR0 off
the user tables, here pmap_deactivate) as it exits. The last one (the main thread,
after thread_single's wait, modelled as waiting for pm_active == 1) runs
pmap_remove_pages with the pmap active only on its CPU: each PTE cleared with no
TLBI; each page-table page that empties is unlinked with one non-last-level VAE1IS
(pmap_unuse_pt -> _pmap_unwire_l3 -> pmap_invalidate_page(.., false)) and queued;
then one pmap_invalidate_all (DSB ISHST, TLBI ASIDE1IS, DSB ISH, ISB); pages and
tables freed; pmap_activate(vmspace0). The reaper's pmap_release frees the top
table and clears the ASID bit (current epoch) without a flush.
"""
from pmap_py.cpufunc import MASK64, cpu_tlb_flush_asid, cpu_tlb_flush_asid_all
from pmap_py.kern.steps import STEP

from .base import ExitStrategy
from .tables import clear_table_descs, free_frames, unmap_unflushed


class FreeBSD(ExitStrategy):
    name = "freebsd"
    summary = "FreeBSD pmap_remove_pages: 1 VAE1IS per freed table page, 1 ASIDE1IS, ASID freed unflushed"
    revision = "1.113"
    trampoline = False

    def exit1_purge(self, k, p):
        vm = p.p_p.ps_vmspace
        pm = vm.pmap
        held = k.kernel_lock.release_all(p)
        while not k.ps.pmap_purge_ready(pm):                  # thread_single: the others are gone
            yield from k.spin(p)
        k.ktrace(p, "pmap_remove_pages")
        yield from k.teardown(p, self.pmap_remove_pages(k, p, vm, pm))
        k.ps.pmap_deactivate(k.curcpu(p), pm)                 # pmap_activate(vmspace0)
        yield from k.kernel_lock.acquire(p, max(held, 1))

    def pmap_remove_pages(self, k, p, vm, pm):
        pages = yield from unmap_unflushed(k, p, vm, pm)      # PTEs cleared without TLBI
        pm.pm_active = 1
        cpu = k.curcpu(p)
        asid = (pm.pm_asid << 48) & MASK64
        tables = clear_table_descs(k.ps, cpu, pm,
                                   on_unlink=lambda va: cpu_tlb_flush_asid(cpu, asid | (va >> 12)))
        cpu_tlb_flush_asid_all(cpu, asid)                     # pmap_invalidate_all
        k.uvm.free_pages(cpu, pages)
        free_frames(k.ps, cpu, tables)
        yield STEP

    def uvm_exit(self, k, r, pr):
        vm = pr.ps_vmspace
        pr.ps_vmspace = None
        cpu = k.curcpu(r)
        pm = vm.pmap
        k.ktrace(r, "pmap_release")
        free_frames(k.ps, cpu, [pm.pm_vp])
        pm.pm_vp = None
        k.ps.asids.release(pm)                                # no TLBI
        pm.pm_destroyed = True
        k.ps.live.discard(pm)
        yield STEP


STRATEGY = FreeBSD
