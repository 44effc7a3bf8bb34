"""The TLB hazard checker (docs/checker.md): a runtime monitor fed by frame ownership and
the TLB model, as rems-project's casemate monitors break-before-make and TLBI from events.

It sees only what the hardware sees, plus who owns each physical frame:

* every walk, demand or speculative (``machine.walk_observers``): the descriptors read
  and the entry filled. Each fill is recorded with the frame it maps (and that frame's
  owner and kind at the fill), the table frame it came from, the address space it belongs
  to, its ASID, cycle and whether it was speculative;
* every frame alloc, free and retag (``machine.frames.listeners``);
* every write of TTBR0/TTBR1/TCR (``Cpu.msr`` calls ``sysreg_written``);
* every TLB hit on an entry marked stale (the CPU calls ``stale_use``).

An "address space" is the owner of the page-table frames a walk goes through: TTBR0's
user tables (owner = the pmap) for the user range. Kernel-range (TTBR1) entries are
filled from the kernel's tables for whichever process runs in the kernel; OpenBSD sets
TCR.A1 (the ASID comes from TTBR1) and nG on every PTE, so they carry that process's
even ASID. Their address space is therefore the owner of the user tables last seen in
TTBR0 with that ASID current.

Violations (``Violation``; ``violations`` in order, ``counts`` by kind):

* ``stale-tlb-use``: a guest access is translated by an entry whose frame no longer has
  the owner it had at the fill (freed or reused), or by an entry of another address space
  that kept its ASID. The hit is seen because entries are marked ``stale`` and Unicorn's
  TLB is flushed when that happens, so the next use reaches the model.
* ``walk-freed-table``: a walk reads a frame that is no longer a page table of the
  address space whose tables it started in (TTBRn's table when the TTBR was written, or
  the table of the walk-cache entry it started from, at that entry's fill). The kernel
  zero page is always a legitimate table.
* ``asid-reuse-stale``: a TTBR write makes ASID a current with user tables of Q while some
  CPU still holds entries (TLB or walk cache) tagged a that belong to another address
  space P (dead or alive). Derived from hardware facts only: the OS is not asked.
* ``stale-tlb-entry``: a frame is freed (or changes owner) while a CPU holds an entry
  mapping it that it can still use: the entry's ASID is current on that CPU (or the entry
  is global) and the TTBR of its range is not disabled by TCR.EPDn. Also reported when a
  TTBR write makes such an already-stale entry usable again. ``range`` says "user"
  (TTBR0) or "kernel" (TTBR1).

  Decision on kernel-range entries: an entry of a kernel VA mapping a frame that is still
  the kernel's is not a violation, whatever its ASID. The entries the exiting thread keeps
  filling after pmap_purge with the dying even ASID are of that kind: the kernel map is
  the same for every ASID and kernel changes are flushed for every ASID (VAALE1IS), and
  pmap_free_asid's two ASIDE1IS remove them before the ASID is released. They become a
  finding only if the kernel frame they map is freed while they are usable
  (``stale-tlb-entry``, range "kernel"), or if the ASID is handed to a new address space
  before they are flushed (``asid-reuse-stale``, range "kernel").
* ``livelock``: a thread takes the same fault (PC, VA, fault status code) ``livelock_after``
  times in a row (default 64) without retiring an instruction in between.

Interface for the kernel model (all optional):

* ``Checker(machine, reproducer="armmu run ... --seed N", context_fn=..., actor_fn=...)``
  attaches itself (``machine.checker``); a Machine without a checker pays one None test.
* ``context_fn(cpu_index) -> str | None``: the thread running on that CPU and the kernel
  step it is in ("p3.t1 (main) in exit1: uvm_purge"), quoted in the stories.
* ``actor_fn() -> int | None``: the CPU running kernel code now (who frees a frame).
* ``note_fault(cpu, thread, pc, va, fsc, retired=None)``: the fault handler took a fault;
  ``retired`` is the thread's retired-instruction count, if known (progress resets).
* ``on_violation(v)``: called for every new violation (e.g. to stop a run at the first).
* ``reproducer``: the command line quoted in every violation.

Blocks: a block a TLB cannot hold whole is kept there as slices that share the walk
entry's stale mark (emu/tlb.py), so a hit on a slice is reported; but the record of a
block held only as slices (the walk entry itself in no TLB, refs == 0) is pruned, so a
frame free under it is not seen. OpenBSD's pmap maps pages only.

Cost: one call per walk (a few dict operations), one per frame event (only the entries
that map that frame are looked at: a reverse map frame -> fills, pruned lazily by the
TLB's reference counts, ``refs == 0`` = held nowhere), one per TTBR/TCR write. Nothing
per guest instruction or per TLB hit on a healthy entry.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Callable

from .frames import FREE_INFO, FrameInfo, FrameKind
from .trace import Ev
from .walker import Fault, Translation

USER, KERNEL = "user", "kernel"
_TTBR = ("TTBR0", "TTBR1")
_MAX_BLOCK_FRAMES = 512          # blocks up to 2 MB are indexed under every frame they map


class ViolationKind(str, Enum):          # a str: JSON writes the kind's name
    STALE_TLB_USE = "stale-tlb-use"
    WALK_FREED_TABLE = "walk-freed-table"
    ASID_REUSE_STALE = "asid-reuse-stale"
    STALE_TLB_ENTRY = "stale-tlb-entry"
    LIVELOCK = "livelock"


@dataclass
class Violation:
    kind: ViolationKind
    cpu: int                    # the CPU whose TLB, walk or thread is at fault
    cycle: int                  # that CPU's clock when it was detected
    va: int | None
    asid: int | None
    pa: int | None
    range: str | None           # "user" (TTBR0) or "kernel" (TTBR1)
    story: str                  # what happened, for a kernel developer
    reproducer: str
    thread: str | None = None   # context_fn's description of what ran on cpu
    fill_cycle: int | None = None
    speculative: bool | None = None
    frame: str | None = None    # owner and kind of the frame concerned, now
    count: int = 1              # entries concerned (asid-reuse-stale) or faults (livelock)
    trace_index: int | None = None   # len(machine.trace.records) at detection

    @property
    def detail(self) -> str:
        """The result schema's name for the story."""
        return self.story

    def to_dict(self) -> dict:
        """The result-schema record: {kind, cpu, cycle, va, asid, pa, detail} + extras."""
        return {"kind": self.kind.value, "cpu": self.cpu, "cycle": self.cycle, "va": self.va,
                "asid": self.asid, "pa": self.pa, "detail": self.story, "range": self.range,
                "reproducer": self.reproducer, "thread": self.thread, "fill_cycle": self.fill_cycle,
                "speculative": self.speculative, "frame": self.frame, "count": self.count,
                "trace_index": self.trace_index}

    def __str__(self) -> str:
        head = f"{self.kind.value}" + (f" ({self.range} range)" if self.range else "")
        where = [f"cpu{self.cpu}", f"cycle {self.cycle}"]
        if self.va is not None:
            where.append(f"va {self.va:#x}")
        if self.asid is not None:
            where.append(f"asid {self.asid:#x}")
        if self.pa is not None:
            where.append(f"pa {self.pa:#x}")
        out = f"{head}: {', '.join(where)}\n  {self.story}"
        if self.reproducer:
            out += f"\n  reproduce: {self.reproducer}"
        return out


@dataclass(eq=False, slots=True)
class Fill:
    """One recorded TLB fill: the entry and the facts at its fill."""
    e: Translation
    cpu: int
    frame: int                  # first 4 KB frame the entry maps
    then: FrameInfo             # that frame's owner and kind at the fill
    space: object               # address space it belongs to (None: unknown)
    range: str
    start: tuple                # where its walk started: (walk-cache level or 0, first read PA,
                                # walk-cache entry's fill cycle, ownership claim of that table)
    seq: int | None             # trace records before the fill (when tracing): event order
    reported: int = 0           # bit per ViolationKind already reported for it


_USE, _ENTRY = 1, 2                                 # Fill.reported bits


def _region_shift(level: int) -> int:
    """A level-L table covers the VA region translated by the levels above it."""
    return 12 + 9 * (4 - level)


_RSHIFT = tuple(_region_shift(level) for level in range(4))
_PAGE_TABLE, _ZERO, _FREE = FrameKind.PAGE_TABLE, FrameKind.ZERO, FrameKind.FREE


def _start_str(start: tuple, sel: int) -> str:
    level, pa, cycle, chain = start
    if level == 0:
        return f"{_TTBR[sel]} ({chain or 'an unmanaged table'} at {pa & ~0xFFF:#x})"
    return (f"the walk-cache entry for the L{level} table at {pa & ~0xFFF:#x}"
            + (f" (filled at cycle {cycle})" if cycle is not None else ""))


def _fsc_str(fsc: int) -> str:
    kind = {0x00: "address-size", 0x04: "translation", 0x08: "access-flag", 0x0C: "permission"}.get(
        fsc & 0x3C, f"FSC {fsc:#04x}")
    return f"{kind} fault, level {fsc & 3} (FSC {fsc:#04x})"


class Checker:
    def __init__(self, machine, reproducer: str = "", context_fn: Callable[[int], str | None] | None = None,
                 actor_fn: Callable[[], int | None] | None = None, livelock_after: int = 64,
                 max_violations: int = 1000, on_violation: Callable[[Violation], None] | None = None):
        if livelock_after < 2:
            raise ValueError(f"livelock_after must be at least 2, not {livelock_after}")
        self.machine = machine
        self.frames = machine.frames
        self._frame_info = machine.frames._info          # frame number -> FrameInfo (absent: free)
        self.reproducer = reproducer
        self.context_fn = context_fn
        self.actor_fn = actor_fn
        self.livelock_after = livelock_after
        self.max_violations = max_violations
        self.on_violation = on_violation
        self.violations: list[Violation] = []
        self.counts: Counter = Counter()
        self._seen: set = set()
        self._by_frame: dict[int, list[Fill]] = {}
        self._by_id: dict[int, Fill] = {}
        self._big: list[Fill] = []                     # blocks larger than 2 MB
        self._stale: list[Fill] = []                   # fills marked stale, still maybe held
        self._wc: dict[tuple, tuple] = {}              # (cpu, level, region, asid) -> (chain, space, cycle)
        self._root: list[list] = [[None, None] for _ in machine.cpus]   # chain of each TTBR: FrameInfo
        self._user_space: list = [None for _ in machine.cpus]    # owner of TTBR0's user tables, if any
        self._asid_space: dict[int, object] = {}       # ASID -> owner of the user tables last current with it
        self._freed: dict[int, tuple[FrameInfo, int]] = {}   # frame -> (info before the free, cycle)
        self._faults: dict[object, list] = {}          # thread -> [(pc, va, fsc), count, retired, reported]
        self._fills = 0
        self._sweep_at = 8192
        machine.checker = self
        machine.walk_observers.append(self.on_walk)
        machine.frames.listeners.append(self.on_frame)
        for cpu in machine.cpus:
            self._set_roots(cpu)

    # ------------------------------------------------------------------ helpers
    def _ctx(self, ci: int) -> str | None:
        return self.context_fn(ci) if self.context_fn is not None else None

    def _cpu_str(self, ci: int) -> str:
        ctx = self._ctx(ci)
        return f"cpu{ci}" + (f" ({ctx})" if ctx else "")

    def _now(self) -> int:
        ci = self.actor_fn() if self.actor_fn is not None else None
        if ci is not None:
            return self.machine.cpus[ci].cycles
        return max(c.cycles for c in self.machine.cpus)

    def _chain_of(self, pa: int) -> FrameInfo | None:
        """The ownership claim of a table at pa (a TTBR base): None if unmanaged."""
        info = self.frames.info(pa)
        if info.kind is FrameKind.FREE:
            freed = self._freed.get(pa & ~0xFFF)
            return freed[0] if freed is not None else None
        return info

    def _report(self, v: Violation, key) -> Violation | None:
        if key is not None:
            if key in self._seen:
                return None
            self._seen.add(key)
        self.counts[v.kind.value] += 1
        trace = self.machine.trace
        if trace is not None:
            v.trace_index = len(trace.records)
        if len(self.violations) < self.max_violations:
            self.violations.append(v)
        if self.on_violation is not None:
            self.on_violation(v)
        return v

    def _usable(self, f: Fill) -> bool:
        regime = self.machine.cpus[f.cpu].regime
        sel = 1 if f.range is KERNEL else 0
        return not regime.epd[sel] and (f.e.asid is None or f.e.asid == regime.asid)

    def _mark_stale(self, f: Fill) -> None:
        if not f.e.stale:
            f.e.stale = True
            self._stale.append(f)
            self.machine.cpus[f.cpu]._uc_flush()      # the next use reaches the model

    def _fill_str(self, f: Fill) -> str:
        e = f.e
        how = "a speculative" if e.speculative else "a demand"
        tag = "global" if e.asid is None else f"ASID {e.asid:#x}"
        return (f"{f.range} VA {e.va_base:#x} ({tag}) -> PA {e.pa_base:#x}, filled at cycle {e.fill_cycle} "
                f"by {how} walk from {_start_str(f.start, 1 if f.range is KERNEL else 0)}; its frame was "
                f"{f.then} at the fill")

    def _last_tlbi(self, f: Fill) -> str:
        """Which TLBI could have removed the entry, and when it came, from the trace when
        there is one (a TLBI issued before the fill cannot remove it)."""
        trace = self.machine.trace
        e = f.e
        tag = "" if e.asid is None else f" {e.asid:#x}"
        if trace is None:
            return (f"No TLBI that covers it (ASIDE1IS{tag}, or VAE1IS for this VA) completed after the fill: "
                    f"any such flush came before the entry was (re)filled, or none was issued.")
        # (record index, cycle, cpu, mnemonic) of the last TLBI of each scope; "before the fill"
        # is by event order, since the CPUs' clocks need not agree
        by_asid = everything = page = None
        for i, (cycle, ci, kind, fl) in enumerate(trace.records):
            if kind is not Ev.TLBI:
                continue
            op = fl["op"]
            if not op.endswith("IS") and ci != f.cpu:
                continue
            if op.startswith("VMALL"):
                everything = (i, cycle, ci, op)
            elif op.startswith("ASIDE1") and e.asid is not None and fl.get("asid") == e.asid:
                by_asid = (i, cycle, ci, f"{op} {e.asid:#x}")
            elif op.startswith("VA") and fl.get("va", -1) >> 12 == e.va_base >> 12 and (
                    op.startswith("VAA") or e.asid is None or fl.get("asid") == e.asid):
                page = (i, cycle, ci, f"{op} {e.va_base:#x}")
        seq = f.seq if f.seq is not None else len(trace.records)

        def when(t) -> str:
            i, cycle, ci, op = t
            if i < seq:
                return f"{op} by cpu{ci} at cycle {cycle}, before this fill (too early: the entry was refilled)"
            return f"{op} by cpu{ci} at cycle {cycle}, after the fill but not completed on cpu{f.cpu} (no DSB yet)"
        out = []
        if e.asid is not None:
            out.append(f"The last ASIDE1IS{tag} was {when(by_asid)}." if by_asid is not None else
                       f"No ASIDE1IS{tag} was issued in the whole run: the ASID flush that removes it is missing.")
        # flushes of everything or of this page matter only if they came after the fill
        for t in (everything, page):
            if t is not None and t[0] >= seq:
                out.append(f"A later {when(t)}.")
        if e.asid is None and not out:
            out.append("No TLBI for this page (nor VMALLE1IS) was issued after the fill.")
        return " ".join(out)

    # ------------------------------------------------------------------ TTBR / TCR writes
    def _set_roots(self, cpu) -> None:
        regime = cpu.regime
        roots = self._root[cpu.index]
        for sel in (0, 1):
            roots[sel] = self._chain_of(regime.base[sel])
        root0 = roots[0]
        self._user_space[cpu.index] = root0.owner if root0 is not None and root0.kind is _PAGE_TABLE else None

    def sysreg_written(self, cpu) -> None:
        """TTBR0/TTBR1/TCR written on cpu (after the write): new walk roots; an ASID that
        becomes current with another address space's user tables; stale entries that
        become usable again."""
        self._set_roots(cpu)
        regime = cpu.regime
        asid = regime.asid
        root0 = self._root[cpu.index][0]
        if root0 is not None and root0.kind is FrameKind.PAGE_TABLE:
            q = root0.owner
            prev = self._asid_space.get(asid)
            self._asid_space[asid] = q
            if prev is not None and prev != q:
                self._asid_handover(cpu, asid, prev, q)
        if self._stale:
            live = [f for f in self._stale if f.e.refs > 0]
            self._stale = live
            for f in live:
                if f.cpu == cpu.index and not f.reported & _ENTRY and self._usable(f) \
                        and self.frames.info(f.frame) != f.then:
                    self._stale_entry(f, again=True)

    def _asid_handover(self, cpu, asid: int, prev, q) -> None:
        """ASID `asid` now belongs to q on cpu (it last belonged to prev): every entry still
        tagged with it that belongs to another address space is a stale one."""
        held: dict[tuple, list[Fill]] = {}
        by_id = self._by_id
        for c in self.machine.cpus:
            for e in c.tlb.entries():
                if e.asid != asid:
                    continue
                f = by_id.get(id(e)) or by_id.get(id(getattr(e, "block", None)))
                if f is not None and f.space is not None and f.space != q:
                    held.setdefault((c.index, f.range), []).append(f)
        tables: dict[tuple, list] = {}
        for c in self.machine.cpus:
            for w in c.tlb.walk_cache:
                if w.asid != asid:
                    continue
                rec = self._wc.get((c.index, w.level, w.va_base >> _RSHIFT[w.level], asid))
                if rec is not None and rec[1] is not None and rec[1] != q:
                    tables.setdefault((c.index, KERNEL if w.va_base >> 55 & 1 else USER), []).append((w, rec))
        for key in sorted(set(held) | set(tables)):
            ci, rng = key
            fills = held.get(key, [])
            wcs = tables.get(key, [])
            for f in fills:
                self._mark_stale(f)
            owner = fills[0].space if fills else wcs[0][1][1]
            if fills:
                f = fills[0]
                example = f"e.g. {self._fill_str(f)}, now {self.frames.info(f.frame)}"
                va, pa, fc, spec, frame = f.e.va_base, f.e.pa_base, f.e.fill_cycle, f.e.speculative, \
                    str(self.frames.info(f.frame))
            else:
                w, rec = wcs[0]
                example = (f"e.g. the walk-cache entry for the L{w.level} table at {w.table_pa:#x} "
                           f"(VA region {w.va_base:#x}), filled at cycle {rec[2]}")
                va, pa, fc, spec, frame = w.va_base, w.table_pa, rec[2], None, str(self.frames.info(w.table_pa))
            what = []
            if fills:
                what.append(f"{len(fills)} TLB entr{'y' if len(fills) == 1 else 'ies'}")
            if wcs:
                what.append(f"{len(wcs)} walk-cache entr{'y' if len(wcs) == 1 else 'ies'}")
            story = (f"{self._cpu_str(cpu.index)} made ASID {asid:#x} current for {q} (TTBR0 = {q}'s L1 table) "
                     f"while cpu{ci} still holds {' and '.join(what)} tagged ASID {asid:#x} that belong to "
                     f"its previous owner {owner}: {example}. The ASID was handed over without a TLBI ASIDE1IS "
                     f"{asid:#x} completed after {owner}'s last use of it, so {q} can hit {owner}'s "
                     f"translations on cpu{ci}. pmap_free_asid must flush both ASIDs of the pair before it "
                     f"releases their bits (an old pmap_free_asid had that flush commented out: "
                     f"\"XXX TLB Flush?\").")
            if rng is KERNEL:
                story += (f" These are kernel-range (TTBR1) entries: OpenBSD sets TCR.A1, so the ASID comes "
                          f"from TTBR1, and every PTE is nG, so the kernel VAs {owner}'s threads touched in the "
                          f"kernel (also after pmap_purge, with the even ASID) were tagged with its ASID. They map "
                          f"kernel memory, not {owner}'s user pages; pmap_free_asid's two ASIDE1IS are what "
                          f"removes them.")
            self._report(Violation(ViolationKind.ASID_REUSE_STALE, ci, self.machine.cpus[ci].cycles, va, asid,
                                   pa, rng, story, self.reproducer, self._ctx(ci), fc, spec, frame,
                                   count=len(fills) + len(wcs)), None)

    # ------------------------------------------------------------------ walks and fills
    def on_walk(self, cpu, va: int, r, speculative: bool) -> None:
        """Walk observer: check every descriptor read; record the fill."""
        reads = r.reads
        if not reads:
            return
        ci = cpu.index
        regime = cpu.regime
        sel = (va >> 55) & 1
        pa0, _, first = reads[0]
        asid = regime.asid
        if first == regime.start[sel]:
            chain = self._root[ci][sel]
            space = chain.owner if chain is not None else None
            start = (0, pa0, None, chain)
        else:
            rec = self._wc.get((ci, first, va >> _RSHIFT[first], asid))
            if rec is None:
                chain = space = None
                start = (first, pa0, None, None)
            else:
                chain, space, cyc = rec
                start = (first, pa0, cyc, chain)
        # NOTE: inlined from FrameAllocator.info for speed
        finfo = self._frame_info
        if chain is not None:
            owner = chain.owner
            for pa, value, level in reads:
                fi = finfo.get(pa >> 12, FREE_INFO)
                if (fi.kind is _PAGE_TABLE and fi.owner == owner) or fi.kind is _ZERO:
                    continue
                self._walk_freed(cpu, va, asid, pa, value, level, fi, owner, start, speculative, sel)
                break
        if r.__class__ is Fault:
            return
        if sel:
            space = self._asid_space.get(r.asid) if r.ng else None
        if r.tables:
            wcs = self._wc
            rec = (chain, space, cpu.cycles)
            for level, table_pa, tattrs in r.tables:
                wcs[(ci, level, va >> _RSHIFT[level], asid)] = rec
        if self._fills >= self._sweep_at:
            self._sweep()
        self._fills += 1
        frame = r.pa_base & ~0xFFF
        then = finfo.get(frame >> 12, FREE_INFO)
        trace = self.machine.trace
        f = Fill(r, ci, frame, then, space, KERNEL if sel else USER, start,
                 len(trace.records) if trace is not None else None)
        self._by_id[id(r)] = f
        if r.size == 4096:
            lst = self._by_frame.get(frame)
            if lst is None:
                self._by_frame[frame] = [f]
            else:
                lst.append(f)
        elif r.size <= _MAX_BLOCK_FRAMES << 12:
            for fr in range(frame, frame + r.size, 4096):
                self._by_frame.setdefault(fr, []).append(f)
        else:
            self._big.append(f)
        # a fill that is stale from the start: its PTE still points at a freed frame, or it came
        # through a walk-cache entry of another address space that kept this ASID
        if then.kind is _FREE and frame in self._freed:
            r.stale = True
            self._stale.append(f)
        elif start[0] and not sel and space is not None:
            cur = self._user_space[ci]
            if cur is not None and cur != space:
                r.stale = True
                self._stale.append(f)

    def _walk_freed(self, cpu, va, asid, pa, value, level, fi: FrameInfo, owner, start: tuple, speculative,
                    sel) -> None:
        frame = pa & ~0xFFF
        key = (ViolationKind.WALK_FREED_TABLE, cpu.index, frame, id(owner))
        if key in self._seen:
            return
        freed = self._freed.get(frame)
        if fi.kind is FrameKind.FREE:
            now = "free" + (f" (freed at cycle {freed[1]}, it was the {freed[0]})" if freed else "")
        else:
            now = str(fi)
        how = "speculative" if speculative else "demand"
        story = (f"{self._cpu_str(cpu.index)}: a {how} walk of VA {va:#x} (ASID {asid:#x}) started at {_start_str(start, sel)} "
                 f"of {owner} and read the L{level} descriptor {value:#x} at PA {pa:#x}, in frame {frame:#x}, "
                 f"which is no longer a page table of {owner}: it is {now}. ")
        if start[0]:
            story += ("The walk cache kept a pointer to a table that was unlinked and freed: a TLBI that removes "
                      "walk-cache entries (VAE1IS or ASIDE1IS, not the last-level VALE1IS/VAALE1IS) must complete "
                      "on every CPU after the table is unlinked and before its frame is freed. ")
        else:
            story += (f"{_TTBR[sel]} of cpu{cpu.index} still pointed at {owner}'s tables when they were freed: every "
                      f"CPU must switch TTBR0 away (pmap_deactivate, pmap_purge) before pmap_destroy frees the vp "
                      f"tables. ")
        story += "Whatever the reused frame now holds is read as descriptors and can be cached as translations."
        self._report(Violation(ViolationKind.WALK_FREED_TABLE, cpu.index, cpu.cycles, va, asid, pa,
                               KERNEL if sel else USER, story, self.reproducer, self._ctx(cpu.index),
                               speculative=speculative, frame=str(fi)), key)

    # ------------------------------------------------------------------ frames
    def on_frame(self, pa: int, old: FrameInfo, new: FrameInfo) -> None:
        """Frame listener: a free or a change of owner makes the entries mapping it stale."""
        if new.kind is FrameKind.FREE:
            self._freed[pa] = (old, self._now())
        else:
            self._freed.pop(pa, None)
        if old.kind is FrameKind.FREE:
            return                               # an allocation: nothing mapped a free frame legitimately
        fills = self._by_frame.get(pa)
        if fills is not None:
            live = [f for f in fills if f.e.refs > 0]
            if live:
                self._by_frame[pa] = live
            else:
                del self._by_frame[pa]
            for f in live:
                self._frame_changed(f, new)
        if self._big:
            self._big = [f for f in self._big if f.e.refs > 0]
            for f in self._big:
                if f.frame <= pa < f.frame + f.e.size:
                    self._frame_changed(f, new)

    def _frame_changed(self, f: Fill, new: FrameInfo) -> None:
        if f.then == new:
            return
        self._mark_stale(f)
        if not f.reported & _ENTRY and self._usable(f):
            self._stale_entry(f)

    def _stale_entry(self, f: Fill, again: bool = False) -> None:
        f.reported |= _ENTRY
        ci = f.cpu
        cpu = self.machine.cpus[ci]
        e = f.e
        now = self.frames.info(f.frame)
        sel = 1 if f.range is KERNEL else 0
        root = self._root[ci][sel]
        if root is not None and root.kind is _ZERO:
            enabled = (f"{_TTBR[sel]} is not disabled (EPD{sel} = 0): it points at the kernel zero page, but a TLB "
                       f"hit needs no walk")
        else:
            enabled = f"{_TTBR[sel]} ({root or 'an unmanaged table'}) is enabled"
        if again:
            opening = (f"{self._cpu_str(ci)} made ASID {cpu.regime.asid:#x} current again while it holds a stale "
                       f"entry: {self._fill_str(f)}; the frame is now {now}.")
        else:
            actor = self.actor_fn() if self.actor_fn is not None else None
            holder = "the same CPU" if actor == ci else self._cpu_str(ci)
            opening = (f"Frame {f.frame:#x} ({f.then} at the fill) became {now}"
                       f"{self._freed_by()} while {holder} still holds an entry mapping it: "
                       f"{self._fill_str(f)}.")
        tag = "it is global" if e.asid is None else f"ASID {e.asid:#x} is current on cpu{ci}"
        story = f"{opening} The entry is usable: {tag} and {enabled}, so cpu{ci} can still read or write the frame through it"
        if f.range is USER:
            story += (f" and refill more entries from the same tables, if only speculatively. {self._last_tlbi(f)} "
                      f"The frame may be freed only after every CPU that can hold such entries has switched "
                      f"TTBR0 away from the tables (pmap_deactivate) and a TLBI (ASIDE1IS, or VAE1IS per page) "
                      f"has completed after that.")
        else:
            story += (f". This is a kernel-range (TTBR1) entry: OpenBSD's TCR.A1 takes the ASID from TTBR1 and "
                      f"every PTE is nG, so kernel VAs are cached per ASID; it maps kernel memory, not a user page "
                      f"of the exiting process. The kernel mapping was removed without a TLBI for every ASID "
                      f"(pmap_kremove's VAALE1IS) completed before the frame was freed. {self._last_tlbi(f)}")
        self._report(Violation(ViolationKind.STALE_TLB_ENTRY, ci, cpu.cycles, e.va_base, e.asid, e.pa_base,
                               f.range, story, self.reproducer, self._ctx(ci), e.fill_cycle, e.speculative,
                               str(now)), None)

    def _freed_by(self) -> str:
        ci = self.actor_fn() if self.actor_fn is not None else None
        return f" on {self._cpu_str(ci)}" if ci is not None else ""

    # ------------------------------------------------------------------ uses
    def stale_use(self, cpu, va: int, e: Translation, access, el: int) -> None:
        """The CPU served a guest access from an entry marked stale."""
        f = self._by_id.get(id(e))
        if f is None:
            block = getattr(e, "block", None)          # a slice of a block the TLB could not hold whole
            f = self._by_id.get(id(block)) if block is not None else None
        ci = cpu.index
        pa = e.pa_base | (va & (e.size - 1))
        acc = getattr(access, "name", None) or ("read", "write", "fetch")[int(access)]
        acc = acc.lower()
        if f is None:
            key = (ViolationKind.STALE_TLB_USE, ci, id(e))
            story = (f"{self._cpu_str(ci)}: a {acc} at EL{el} of VA {va:#x} was translated by a stale TLB entry "
                     f"-> PA {pa:#x} (frame now {self.frames.info(pa)}).")
            self._report(Violation(ViolationKind.STALE_TLB_USE, ci, cpu.cycles, va, e.asid, pa,
                                   KERNEL if va >> 55 & 1 else USER, story, self.reproducer, self._ctx(ci),
                                   e.fill_cycle, e.speculative, str(self.frames.info(pa))), key)
            return
        if f.reported & _USE:
            return
        f.reported |= _USE
        now = self.frames.info(f.frame)
        if now != f.then:
            why = f"its frame {f.frame:#x} is no longer {f.then}: it is {now}"
            if now.kind is FrameKind.FREE:
                why += " (a use after free)"
            elif f.then.kind is FrameKind.FREE:
                why += " (the PTE still pointed at a freed frame when the entry was filled)"
            else:
                why += f" (the frame was reused: {f.then.owner}'s code reads or writes {now.owner}'s memory)"
        else:
            root0 = self._root[ci][0]
            cur = root0.owner if root0 is not None else None
            why = (f"it belongs to {f.space}, but ASID {e.asid:#x} now belongs to {cur} on cpu{ci} "
                   f"(the ASID was reused without a flush)")
        story = (f"{self._cpu_str(ci)}: a {acc} at EL{el} of VA {va:#x} was translated by the entry "
                 f"{self._fill_str(f)}; {why}. Isolation breach: the access reached PA {pa:#x}. {self._last_tlbi(f)}")
        self._report(Violation(ViolationKind.STALE_TLB_USE, ci, cpu.cycles, va, e.asid, pa, f.range, story,
                               self.reproducer, self._ctx(ci), e.fill_cycle, e.speculative, str(now)), None)

    # ------------------------------------------------------------------ faults
    def note_fault(self, cpu, thread, pc: int, va: int, fsc: int, retired: int | None = None) -> None:
        """The kernel's fault handler took a fault for `thread` (any hashable name)."""
        key = (pc, va, fsc)
        st = self._faults.get(thread)
        if st is None or st[0] != key or (retired is not None and st[2] != retired):
            self._faults[thread] = [key, 1, retired, False]
            return
        st[1] += 1
        if st[1] < self.livelock_after or st[3]:
            return
        st[3] = True
        ci = cpu.index
        root0 = self._root[ci][0]
        story = (f"Thread {thread} on {self._cpu_str(ci)} took the same {_fsc_str(fsc)} on VA {va:#x} at pc {pc:#x} "
                 f"{st[1]} times in a row without retiring an instruction: the fault handler returns to the "
                 f"instruction and the hardware faults again, so the thread never makes progress. ")
        if root0 is not None and root0.kind is FrameKind.ZERO:
            story += (f"cpu{ci}'s TTBR0 points at the kernel zero page (an all-invalid L1 table): every walk of a "
                      f"user VA faults at level 1 whatever the vp tables hold, so no fixup can help. pm_pt0pa was "
                      f"switched to the zero page while this thread could still return to userland (pmap_purge or "
                      f"pmap_exit run for a thread other than the last one).")
        else:
            story += (f"cpu{ci}'s TTBR0 points at {root0 or 'an unmanaged table'}: the mapping the fault handler "
                      f"installs is not the one this CPU walks, or it is removed again before the retry.")
        self._report(Violation(ViolationKind.LIVELOCK, ci, cpu.cycles, va, cpu.regime.asid, None,
                               KERNEL if va >> 55 & 1 else USER, story, self.reproducer, self._ctx(ci),
                               count=st[1]), None)

    # ------------------------------------------------------------------ housekeeping
    def _sweep(self) -> None:
        """Drop the records of entries no TLB holds any more (refs == 0)."""
        self._by_frame = {fr: live for fr, fills in self._by_frame.items()
                          if (live := [f for f in fills if f.e.refs > 0])}
        self._by_id = {k: f for k, f in self._by_id.items() if f.e.refs > 0}
        self._big = [f for f in self._big if f.e.refs > 0]
        self._stale = [f for f in self._stale if f.e.refs > 0]
        held = set()
        for c in self.machine.cpus:
            for w in c.tlb.walk_cache:
                held.add((c.index, w.level, w.va_base >> _RSHIFT[w.level], w.asid))
        self._wc = {k: v for k, v in self._wc.items() if k in held}
        self._fills = 0
        self._sweep_at = max(8192, 2 * len(self._by_id))

    def to_dicts(self) -> list[dict]:
        return [v.to_dict() for v in self.violations]
