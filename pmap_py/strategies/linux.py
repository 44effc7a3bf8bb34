"""linux: Linux arm64's exit_mmap (mm/mmap.c 6.x, arch/arm64/include/asm/tlb.h,
arch/arm64/mm/context.c), on this pmap's tables.

Linux without KPTI runs EL0 with the kernel table in TTBR1 and one ASID, so this
strategy sets ``trampoline = False``: no TTBR1 flip on kernel entry/exit.
Order: the last thread (the main thread here), in exit1 where OpenBSD purges:
tlb_gather_mmu_fullmm; unmap_vmas clears every PTE with no per-page TLBI (modelled
with pm_active = 0, ttlb_flush's skip condition) and batches the pages;
free_pgtables clears the L2/L1 table descriptors and queues the L3/L2 table pages;
tlb_finish_mmu: tables were freed, so one flush_tlb_mm (DSB ISHST, TLBI ASIDE1IS,
DSB ISH, no ISB), then the pages and tables are freed. The threads never switch
TTBR0 at exit (lazy mm). The reaper's mmdrop frees the pgd; the ASID is never freed
(context.c: it dies at the next rollover, which flushes everything).
"""
from pmap_py.cpufunc import MASK64
from pmap_py.kern.steps import STEP
from emu.tlbi import TLBIOp

from .base import ExitStrategy
from .tables import clear_table_descs, free_frames, unmap_unflushed


class Linux(ExitStrategy):
    name = "linux"
    summary = "Linux exit_mmap: fullmm gather, no per-page TLBI, one ASIDE1IS if tables were freed, ASID kept"
    revision = "1.113"
    trampoline = False

    def exit1_purge(self, k, p):
        vm = p.p_p.ps_vmspace
        pm = vm.pmap
        k.ktrace(p, "exit_mmap")
        held = k.kernel_lock.release_all(p)
        yield from k.teardown(p, self.exit_mmap(k, p, vm, pm))
        yield from k.kernel_lock.acquire(p, max(held, 1))

    def exit_mmap(self, k, p, vm, pm):
        pages = yield from unmap_unflushed(k, p, vm, pm)      # unmap_vmas, fullmm: no flush per page
        cpu = k.curcpu(p)
        tables = clear_table_descs(k.ps, cpu, pm)              # free_pgtables
        if tables:                                            # tlb_flush: freed_tables
            cpu.dsb("ishst")
            cpu.tlbi(TLBIOp.ASIDE1IS, (pm.pm_asid << 48) & MASK64)
            cpu.dsb("ish")
        k.uvm.free_pages(cpu, pages)
        free_frames(k.ps, cpu, tables)
        yield STEP

    def cpu_exit(self, k, p):
        yield STEP                                            # lazy mm: TTBR0 left alone

    def uvm_exit(self, k, r, pr):
        vm = pr.ps_vmspace
        pr.ps_vmspace = None
        cpu = k.curcpu(r)
        pm = vm.pmap
        k.ktrace(r, "mmdrop")
        free_frames(k.ps, cpu, [pm.pm_vp])                    # pgd_free
        pm.pm_vp = None
        pm.pm_destroyed = True
        k.ps.live.discard(pm)
        yield STEP


STRATEGY = Linux
