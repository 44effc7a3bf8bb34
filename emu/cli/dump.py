"""--dump-at EVENT: the page tables of a process as a tree and every CPU's TLB contents,
printed when the kernel reaches EVENT (a kernel trace op: pmap_purge, exit1, reaper, ...).

The tables are read from emulated memory from the pmap's L1 (what a walk would read, not
the pmap's software copy), each valid descriptor decoded; runs of L3 pages that map
consecutive frames with the same attributes are folded into one line.
"""
from __future__ import annotations

from ..descriptors import (DESC_VALID, ENTRIES, LEVEL_SHIFT, OA_MASK, describe)

MAX_TLB_LINES = 48                       # per CPU; the rest is counted


def _table_lines(mem, pa: int, level: int, va0: int, indent: str) -> list[str]:
    out = []
    run = None                                   # [first index, count, first desc]

    def flush():
        if run is None:
            return
        i, n, d = run
        va = va0 | i << LEVEL_SHIFT[level]
        where = f"L{level}[{i:3d}]" if n == 1 else f"L{level}[{i:3d}..{i + n - 1:3d}]"
        pages = "" if n == 1 else f" x{n} (to {(d & OA_MASK) + (n - 1) * 4096:#x})"
        out.append(f"{indent}{where} va {va:#012x}  {d:#018x}  {describe(d, level)}{pages}")

    for i in range(ENTRIES):
        d = mem.read64(pa + i * 8)
        if not d & DESC_VALID:
            flush()
            run = None
            continue
        if level < 3 and d & 3 == 3:
            flush()
            run = None
            va = va0 | i << LEVEL_SHIFT[level]
            out.append(f"{indent}L{level}[{i:3d}] va {va:#012x}  {d:#018x}  {describe(d, level)}")
            out += _table_lines(mem, d & OA_MASK, level + 1, va, indent + "  ")
            continue
        if run is not None and level == 3 and i == run[0] + run[1] and \
                d == run[2] + (run[1] << 12):
            run[1] += 1
            continue
        flush()
        run = [i, 1, d]
    flush()
    return out


def page_tables(machine, pm) -> list[str]:
    """The tree under pm's L1 table (OpenBSD user space: T0SZ = 25, the walk starts at L1)."""
    vp = getattr(pm, "pm_vp", None)
    if vp is None or getattr(pm, "pm_destroyed", False):
        return [f"pmap {pm.pm_name}: destroyed (no tables)"]
    head = (f"pmap {pm.pm_name}: L1 table at {vp.pa:#x}, ASID {pm.asid:#x} (pair {pm.asid:#x}/{pm.asid | 1:#x}), "
            f"pm_active {pm.pm_active}, TTBR0 value pm_pt0pa {pm.pm_pt0pa:#x}")
    lines = _table_lines(machine.mem, vp.pa, 1, 0, "  ")
    return [head] + (lines or ["  (no valid descriptors)"])


def tlb_contents(cpu) -> list[str]:
    """Every leaf entry a CPU's TLBs hold (L1I, L1D, L2), sorted by VA."""
    t = cpu.tlb
    where: dict = {}
    for name, s in (("L1I", t.itlb), ("L1D", t.dtlb), ("L2", t.l2)):
        for e in s:
            where.setdefault(id(e), [e, []])[1].append(name)
    entries = sorted(where.values(), key=lambda x: (x[0].va_base, x[0].asid if x[0].asid is not None else -1))
    head = (f"cpu{cpu.index}: TTBR0 {cpu.ttbr0:#x} TTBR1 {cpu.ttbr1:#x} ASID {cpu.asid:#x}; "
            f"{len(entries)} TLB entries, {len(t.walk_cache)} walk-cache entries")
    lines = [head]
    for e, structs in entries[:MAX_TLB_LINES]:
        size = {1 << 12: "4K", 1 << 21: "2M", 1 << 30: "1G"}.get(e.size, f"{e.size:#x}")
        tag = "global" if e.asid is None else f"ASID {e.asid:#06x}"
        how = "speculative" if e.speculative else "demand"
        lines.append(f"  va {e.va_base:#014x} -> pa {e.pa_base:#011x} {size:>3} L{e.level} {tag:<11} "
                     f"{how:<11} {'+'.join(structs)}  filled at {e.fill_cycle}")
    if len(entries) > MAX_TLB_LINES:
        lines.append(f"  ... {len(entries) - MAX_TLB_LINES} more")
    return lines


def _process_of(kernel, fields: dict):
    """The workload process an event is about: by its pmap, by the proc named, else all."""
    procs = list(kernel.workload)
    name = fields.get("pmap")
    if name:
        hit = [pr for pr in procs if pr.ps_pmap is not None and pr.ps_pmap.pm_name == name]
        if hit:
            return hit
    for key in ("dead", "proc"):
        who = fields.get(key)
        hit = [pr for pr in procs if any(p.p_name == who for p in [pr.ps_mainproc, *pr.ps_threads] if p)]
        if who and hit:
            return hit
    return procs


def dump(machine, kernel, cycle: int, cpu: int, fields: dict) -> str:
    op = fields.get("op")
    what = " ".join(f"{k}={v:#x}" if isinstance(v, int) and k in ("asid", "va", "pa") else f"{k}={v}"
                    for k, v in fields.items() if k != "op")
    lines = [f"=== dump at {op} (cycle {cycle}, cpu{cpu}{', ' + what if what else ''})"]
    for pr in _process_of(kernel, fields):
        lines.append(f"process {pr}:")
        lines += ["  " + s for s in page_tables(machine, pr.ps_pmap)] if pr.ps_pmap is not None \
            else ["  (no pmap)"]
    lines.append("TLBs:")
    for c in machine.cpus:
        lines += ["  " + s for s in tlb_contents(c)]
    return "\n".join(lines)
