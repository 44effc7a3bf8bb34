"""Helpers for strategies that free page-table pages themselves (linux, freebsd)."""
from __future__ import annotations

from pmap_py.kern.steps import STEP


def unmap_unflushed(k, p, vm, pm):
    """Clear every PTE of vm's entries with no per-page TLBI (pm_active = 0: ttlb_flush's
    skip condition), one step per entry, and empty the map. Returns the pages to free."""
    pm.pm_active = 0
    pages = []
    for e in vm.vm_map.teardown_order():
        yield from k.uvm.pmap_remove_chunked(p, pm, e.start, e.end)
        pages.extend(e.anon.values())
        e.anon.clear()
        yield STEP
    vm.vm_map.entries.clear()
    vm.vm_map._starts.clear()
    return pages


def clear_table_descs(ps, cpu, pm, on_unlink=None) -> list:
    """Unlink every L3 and L2 table of pm (children first): write 0 into the parent's
    table descriptor, call on_unlink(va of the region it mapped). Returns the vps to
    free; the L1 stays."""
    out = []
    vp1 = pm.pm_vp
    for i1 in sorted(vp1.vp):
        vp2 = vp1.vp.pop(i1)
        for i2 in sorted(vp2.vp):
            vp3 = vp2.vp.pop(i2)
            ps.mem.write64(vp2.pa + i2 * 8, 0)
            cpu.charge(cpu.cost.descriptor_write)
            if on_unlink is not None:
                on_unlink(i1 << 30 | i2 << 21)
            out.append(vp3)
        ps.mem.write64(vp1.pa + i1 * 8, 0)
        cpu.charge(cpu.cost.descriptor_write)
        if on_unlink is not None:
            on_unlink(i1 << 30)
        out.append(vp2)
    return out


def free_frames(ps, cpu, vps) -> None:
    for vp in vps:
        ps.frames.free(vp.pa)
        cpu.charge(cpu.cost.frame_free, "pt_pages_freed")
