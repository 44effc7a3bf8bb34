"""Every statistic of the hardware model, declared once with its description.

As gem5 gives each stat a description with ADD_STAT (src/arch/arm/tlb.cc TlbStats,
table_walker.cc TableWalkerStats), each name here has one line saying what it counts
and, where gem5 has the same count, the gem5 stat it corresponds to. Names are
templates: ``cpu{cpu}.`` per CPU, ``asid{asid}.`` per ASID, ``{op}`` per TLBI kind,
``{level}`` per terminating walk level, ``{reg}`` per system register.

``collect(machine)`` returns ``{name: value}`` for one machine; ``attach(machine)``
registers the walk observer that splits walks by terminating level and by ASID (those
two cannot be read back from the CPU afterwards). ``describe(name)`` gives the
declaration a concrete name came from.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass



@dataclass(frozen=True)
class Stat:
    name: str                 # template, e.g. "cpu{cpu}.dtb.hits"
    desc: str
    gem5: str = ""            # the corresponding gem5 stat, "" when gem5 has none


TLB_PARTS = (("itb", "L1 instruction TLB", "itb"), ("dtb", "L1 data TLB", "dtb"),
             ("l2_shared", "unified L2 TLB", "l2_shared"), ("walk_cache", "walk cache", ""))

# the gem5 flush counter each TLBI kind lands in (tlb.cc: flushAll / flush by MVA / ...)
GEM5_FLUSH = {"VMALLE1IS": "flushTlb", "VMALLE1": "flushTlb", "VAE1IS": "flushTlbMvaAsid",
              "VAE1": "flushTlbMvaAsid", "VALE1IS": "flushTlbMvaAsid", "VALE1": "flushTlbMvaAsid",
              "ASIDE1IS": "flushTlbAsid", "ASIDE1": "flushTlbAsid", "VAAE1IS": "flushTlbMva",
              "VAAE1": "flushTlbMva", "VAALE1IS": "flushTlbMva", "VAALE1": "flushTlbMva"}


def _declare() -> tuple[Stat, ...]:
    s = []
    for part, what, g in TLB_PARTS:
        gp = f"system.cpu.mmu.{g}." if g else ""
        s += [
            Stat(f"cpu{{cpu}}.{part}.hits", f"lookups that hit in the {what}",
                 gp + "hits" if g else ""),
            Stat(f"cpu{{cpu}}.{part}.misses", f"lookups that missed in the {what}",
                 gp + "misses" if g else ""),
            Stat(f"cpu{{cpu}}.{part}.inserts", f"entries filled into the {what}",
                 gp + "inserts" if g else ""),
            Stat(f"cpu{{cpu}}.{part}.evictions", f"entries the {what} replaced to make room"),
            Stat(f"cpu{{cpu}}.{part}.flushed_entries", f"entries a TLBI removed from the {what}",
                 gp + "flushedEntries" if g else ""),
            Stat(f"cpu{{cpu}}.{part}.flush_ops", f"TLBI operations that reached the {what}"),
            Stat(f"cpu{{cpu}}.{part}.occupancy", f"entries the {what} holds at the end of the run"),
        ]
    s += [
        Stat("cpu{cpu}.walker.walks", "demand table walks (TLB misses that walked)",
             "system.cpu.mmu.dtb.walker.walks"),
        Stat("cpu{cpu}.walker.walks_level{level}",
             "demand walks that ended at level {level} (a leaf or a fault there)",
             "system.cpu.mmu.dtb.walker.walksLongTerminatedAtLevel[{level}]"),
        Stat("cpu{cpu}.walker.descriptor_reads", "descriptors read by demand walks"),
        Stat("cpu{cpu}.walker.speculative_walks", "speculative walks (fills no instruction asked for)"),
        Stat("cpu{cpu}.faults", "translation, access-flag and permission faults taken by guest code"),
        Stat("cpu{cpu}.insts", "guest instructions retired", "system.cpu.committedInsts"),
        Stat("cpu{cpu}.cycles", "the CPU's cycle clock at the end of the run", "system.cpu.numCycles"),
        Stat("cpu{cpu}.tlbi.{op}", "TLBI {op} instructions issued by this CPU", "system.cpu.mmu.dtb.{gem5_flush}"),
        Stat("cpu{cpu}.msr.{reg}", "MSR writes to {reg}"),
        Stat("cpu{cpu}.dsb", "DSB instructions (every domain)"),
        Stat("cpu{cpu}.isb", "ISB instructions"),
        Stat("cpu{cpu}.ttbr_writes", "writes of TTBR0_EL1 or TTBR1_EL1"),
        Stat("cpu{cpu}.eret", "ERETs executed by guest code"),
        Stat("cpu{cpu}.undef", "undefined instructions met by guest code"),
        Stat("cpu{cpu}.speculative_fills", "TLB entries filled by speculative walks"),
        Stat("cpu{cpu}.context_switches", "cpu_switchto calls (context_switch cost each)"),
        Stat("cpu{cpu}.el0_entries", "exceptions taken from EL0 (syscalls, faults, interrupts)"),
        Stat("cpu{cpu}.el0_returns", "returns to EL0 (userret)"),
        Stat("cpu{cpu}.interrupts", "interrupt handlers run between kernel steps (KernConfig.irq_prob)"),
        Stat("cpu{cpu}.flush_bp_psci", "cpu_flush_bp_psci calls in pmap_setttb (SMCCC_ARCH_WORKAROUND_1)"),
        Stat("cpu{cpu}.bhb_loop", "BHB-clearing loops run on kernel entry (trampoline_vectors_loop_k)"),
        Stat("cpu{cpu}.icache_sync_page", "pages cleaned and invalidated for instruction fetch"),
        Stat("cpu{cpu}.lock_acquire", "uncontended lock acquisitions (kernel lock, pmap and ASID mutexes)"),
        Stat("cpu{cpu}.lock_contended", "lock acquisitions that found the lock held"),
        Stat("cpu{cpu}.spin_wait", "CPU_BUSY_CYCLE iterations (pmap_purge waiting for pm_active == 1)"),
        Stat("cpu{cpu}.pte_writes", "page-table descriptors written"),
        Stat("cpu{cpu}.ptes_cleared", "leaf PTEs cleared (pmap_remove, teardown)"),
        Stat("cpu{cpu}.pt_pages_allocated", "page-table pages allocated"),
        Stat("cpu{cpu}.pt_pages_freed", "page-table pages freed"),
        Stat("cpu{cpu}.asids_allocated", "ASIDs handed to a pmap"),
        Stat("cpu{cpu}.asid_rollovers", "ASID generation rollovers (a full flush each)"),
        Stat("asid{asid}.walks", "demand walks tagged with ASID {asid} (TTBR0 walks and the kernel's nG fills)"),
        Stat("asid{asid}.tlb_entries", "entries tagged with ASID {asid} in any L2 TLB at the end of the run"),
        Stat("global.tlb_entries", "global (not nG) entries in any L2 TLB at the end of the run"),
    ]
    return tuple(s)


STATS: tuple[Stat, ...] = _declare()


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"(\{[a-z_]+\})", template)
    return re.compile("".join("[^.]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")


_PATTERNS = [(_pattern(st.name), st) for st in STATS]


def describe(name: str) -> Stat | None:
    """The declaration a concrete stat name (``cpu0.tlbi.VAE1IS``) comes from."""
    for pat, st in _PATTERNS:
        if pat.match(name):
            return st
    return None


def render(st: Stat, name: str) -> tuple[str, str]:
    """(description, gem5 name) with the template's fields filled from a concrete name."""
    m = re.match(_pattern(st.name).pattern.replace("[^.]+", "([^.]+)"), name)
    fields = dict(zip(re.findall(r"\{([a-z_]+)\}", st.name), m.groups())) if m else {}
    fields["gem5_flush"] = GEM5_FLUSH.get(fields.get("op", ""), "")
    desc = st.desc.format_map(_Missing(fields))
    gem5 = st.gem5.format_map(_Missing(fields)) if st.gem5 else ""
    return desc, gem5


class _Missing(dict):
    def __missing__(self, key):
        return "{" + key + "}"


class WalkStats:
    """The machine's walk observer for the two splits a CPU does not keep."""

    def __init__(self):
        self.by_level: Counter = Counter()     # (cpu, level) -> demand walks
        self.by_asid: Counter = Counter()      # asid -> demand walks

    def on_walk(self, cpu, va, r, speculative) -> None:
        if speculative:
            return
        self.by_level[cpu.index, r.level] += 1
        self.by_asid[cpu.asid] += 1


def attach(machine) -> WalkStats:
    ws = getattr(machine, "walk_stats", None)
    if ws is None:
        ws = machine.walk_stats = WalkStats()
        machine.walk_observers.append(ws.on_walk)
    return ws


def cpu_stats(cpu) -> dict[str, int]:
    """One CPU's counts under their declared names."""
    i = cpu.index
    out = {}
    for part, t in (("itb", cpu.tlb.itlb), ("dtb", cpu.tlb.dtlb), ("l2_shared", cpu.tlb.l2),
                    ("walk_cache", cpu.tlb.walk_cache)):
        s = t.stats
        for k in ("hits", "misses", "inserts", "evictions", "flushed_entries", "flush_ops"):
            out[f"cpu{i}.{part}.{k}"] = getattr(s, k)
        out[f"cpu{i}.{part}.occupancy"] = len(t)
    out[f"cpu{i}.walker.walks"] = cpu.walks
    out[f"cpu{i}.walker.descriptor_reads"] = cpu.walk_reads
    out[f"cpu{i}.walker.speculative_walks"] = cpu.spec_walks
    out[f"cpu{i}.faults"] = cpu.faults
    out[f"cpu{i}.insts"] = cpu.insns
    out[f"cpu{i}.cycles"] = cpu.cycles
    for k, v in sorted(cpu.events.items()):
        out[f"cpu{i}.{k}"] = v
    ws = getattr(cpu.machine, "walk_stats", None)
    if ws is not None:
        for level in (1, 2, 3):
            out[f"cpu{i}.walker.walks_level{level}"] = ws.by_level[i, level]
    return out


def collect(machine) -> dict[str, int]:
    """Every statistic of a machine: per CPU, then per ASID."""
    out: dict[str, int] = {}
    for cpu in machine.cpus:
        out.update(cpu_stats(cpu))
    ws = getattr(machine, "walk_stats", None)
    if ws is not None:
        for asid, n in sorted(ws.by_asid.items()):
            out[f"asid{asid:#x}.walks"] = n
    held = Counter()
    for cpu in machine.cpus:
        for e in cpu.tlb.l2:
            held[e.asid] += 1
    for asid, n in sorted(held.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0)):
        out["global.tlb_entries" if asid is None else f"asid{asid:#x}.tlb_entries"] = n
    return out


def table(stats: dict[str, int]) -> str:
    """name, value, description (and gem5 name) per line, for armmu run --stats."""
    width = max((len(n) for n in stats), default=0)
    lines = []
    for name, value in stats.items():
        st = describe(name)
        desc, gem5 = render(st, name) if st else ("", "")
        lines.append(f"{name:<{width}}  {value:>12}  {desc}" + (f"  [gem5 {gem5}]" if gem5 else ""))
    return "\n".join(lines)


__all__ = ["STATS", "Stat", "WalkStats", "attach", "collect", "cpu_stats", "describe", "render", "table"]
