"""Per-CPU TLB model: L1 instruction TLB, L1 data TLB, unified L2 TLB and a walk cache.

Each structure is set-associative; a set is a dict whose insertion order is the LRU
order (oldest first). Entries are the walker's Translation objects themselves (no copy
on fill). A key packs (vpn, size shift, ASID tag) into one int so that a lookup does
no allocation. Statistics are named after gem5's ArmTLB/TableWalker stats.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

from .tlbi import Scope, TLBIOp
from .walker import Translation

GLOBAL_TAG = 0x10000            # ASID tag of global entries: outside any 16-bit ASID
_TAG_BITS = 17


def _key(vpn: int, shift: int, tag: int) -> int:
    return ((vpn << 6 | shift) << _TAG_BITS) | tag


@dataclass(slots=True)
class TLBStats:
    hits: int = 0
    misses: int = 0
    inserts: int = 0
    evictions: int = 0
    flushed_entries: int = 0     # removed by TLBI
    flush_ops: int = 0           # TLBI operations that reached this structure


class SetAssocTLB:
    """One set-associative TLB structure holding leaf translations of any size."""

    def __init__(self, name: str, entries: int, ways: int, replacement: str = "lru",
                 max_block_shift: int = 30, rng: random.Random | None = None):
        if entries % ways:
            raise ValueError(f"{name}: {ways} ways do not divide {entries} entries")
        self.name = name
        self.entries = entries
        self.ways = ways
        self.nsets = entries // ways
        if self.nsets & (self.nsets - 1):
            raise ValueError(f"{name}: {self.nsets} sets is not a power of two")
        self.set_mask = self.nsets - 1
        self.replacement = replacement
        # "plru" is modelled as true LRU: no core publishes its tree layout
        self.lru = replacement != "random"
        self.max_block_shift = max_block_shift
        self.rng = rng or random.Random(0)
        self.sets: list[dict[int, Translation]] = [{} for _ in range(self.nsets)]
        self.shift_count = [0] * 31                    # entries per size shift, to skip absent sizes
        self._possible_shifts = tuple(sorted({12, 21, 30, max_block_shift} - {s for s in (21, 30) if s > max_block_shift}))
        self.shifts: tuple = ()                        # sizes present, smallest first
        self.stats = TLBStats()
        self.on_remove = None                          # fn(entry) when an entry leaves this TLB

    def _set_of(self, vpn: int) -> dict:
        return self.sets[vpn & self.set_mask]

    def lookup(self, va: int, asid: int) -> Translation | None:
        """Entry translating va for this ASID (or global); updates LRU and hit/miss stats."""
        sets, mask = self.sets, self.set_mask
        for shift in self.shifts:
            vpn = va >> shift
            s = sets[vpn & mask]
            k = ((vpn << 6 | shift) << _TAG_BITS) | asid
            e = s.get(k)
            if e is None:
                k = ((vpn << 6 | shift) << _TAG_BITS) | GLOBAL_TAG
                e = s.get(k)
            if e is not None:
                if self.lru:
                    del s[k]
                    s[k] = e
                self.stats.hits += 1
                return e
        self.stats.misses += 1
        return None

    def probe(self, va: int, asid: int) -> Translation | None:
        """Lookup without touching LRU state or stats (checker, tests)."""
        for shift in self.shifts:
            vpn = va >> shift
            s = self._set_of(vpn)
            e = s.get(((vpn << 6 | shift) << _TAG_BITS) | asid) or s.get(((vpn << 6 | shift) << _TAG_BITS) | GLOBAL_TAG)
            if e is not None:
                return e
        return None

    def insert(self, e: Translation) -> None:
        shift = e.size.bit_length() - 1
        if shift > self.max_block_shift:
            e, shift = self._split(e)
        vpn = e.va_base >> shift
        k = ((vpn << 6 | shift) << _TAG_BITS) | (GLOBAL_TAG if e.asid is None else e.asid)
        s = self.sets[vpn & self.set_mask]
        old = s.pop(k, None)
        if old is not None:
            self._dropped(old)
        elif len(s) >= self.ways:
            ev = s.pop(next(iter(s)) if self.lru else list(s)[self.rng.randrange(len(s))])
            self.stats.evictions += 1
            if ev.size == e.size:
                # the common case, inlined: same size out and in, the per-size counts do not change
                ev.refs -= 1
                if ev.refs == 0 and self.on_remove is not None:
                    self.on_remove(ev)
                s[k] = e
                e.refs += 1
                self.stats.inserts += 1
                return
            self._dropped(ev)
        s[k] = e
        e.refs += 1
        self.stats.inserts += 1
        n = self.shift_count[shift]
        self.shift_count[shift] = n + 1
        if n == 0:
            self._update_shifts()

    def _split(self, e: Translation) -> tuple[Translation, int]:
        """This TLB cannot hold the block size natively: keep the slice that covers e.va."""
        shift = self.max_block_shift
        size = 1 << shift
        off = e.va & (e.size - 1) & ~(size - 1)
        return replace(e, va_base=e.va_base + off, pa_base=e.pa_base + off, size=size, refs=0), shift

    def _update_shifts(self) -> None:
        sc = self.shift_count
        self.shifts = tuple(x for x in self._possible_shifts if sc[x])

    def _dropped(self, e: Translation) -> None:
        shift = e.size.bit_length() - 1
        n = self.shift_count[shift] - 1
        self.shift_count[shift] = n
        if n == 0:
            self._update_shifts()
        e.refs -= 1
        if e.refs == 0 and self.on_remove is not None:
            self.on_remove(e)

    def invalidate(self, scope: Scope, va: int = 0, asid: int = 0) -> int:
        """Remove every entry in the TLBI scope; returns how many."""
        self.stats.flush_ops += 1
        n = 0
        if scope is Scope.VA or scope is Scope.VAA:
            for shift in self.shifts:
                vpn = va >> shift
                s = self._set_of(vpn)
                for k in [k for k, e in s.items() if e.va_base >> shift == vpn
                          and (scope is Scope.VAA or e.asid is None or e.asid == asid)]:
                    self._dropped(s.pop(k))
                    n += 1
        else:
            for s in self.sets:
                if not s:
                    continue
                if scope is Scope.ALL:
                    victims = list(s)
                else:
                    victims = [k for k, e in s.items() if e.asid == asid]
                for k in victims:
                    self._dropped(s.pop(k))
                    n += 1
        self.stats.flushed_entries += n
        return n

    def __iter__(self):
        for s in self.sets:
            yield from s.values()

    def __len__(self) -> int:
        return sum(len(s) for s in self.sets)


@dataclass(slots=True)
class WalkCacheEntry:
    level: int           # level of the table this entry points at (2 or 3 for 3-level walks)
    va_base: int         # start of the VA region that table covers
    table_pa: int
    tattrs: int          # table attributes accumulated above it
    asid: int            # ASID of the walk that filled it


class WalkCache:
    """Cached table descriptors: (level, VA region, ASID) -> next-level table.

    A hit lets the walker start at the deepest cached level instead of the TTBR.
    Entries are tagged with the ASID of the walk that filled them. A by-VA TLBI drops
    the entries covering the VA for its ASID (VAE1) or for every ASID (VAAE1) and no
    more: the least the architecture guarantees, so that software relying on
    over-invalidation is caught. Last-level TLBIs (VALE1, VAALE1) leave it alone.
    """

    def __init__(self, entries: int, ways: int, rng: random.Random | None = None, replacement: str = "lru"):
        self.tlb = SetAssocTLB("walk_cache", entries, ways, replacement, rng=rng)
        self.sets = self.tlb.sets
        self.stats = self.tlb.stats
        self.nsets = self.tlb.nsets

    @staticmethod
    def _region_shift(level: int) -> int:
        # a level-L table covers the VA region translated by the levels above it
        return 12 + 9 * (4 - level)

    def lookup(self, va: int, asid: int, levels: tuple = (3, 2, 1)) -> WalkCacheEntry | None:
        """Deepest cached table for va (L3 table first) among `levels`."""
        sets, mask = self.sets, self.nsets - 1
        for level in levels:
            vpn = va >> (12 + 9 * (4 - level))
            s = sets[vpn & mask]
            k = ((vpn << 6 | level) << _TAG_BITS) | asid
            e = s.get(k)
            if e is not None:
                del s[k]
                s[k] = e
                self.stats.hits += 1
                return e
        self.stats.misses += 1
        return None

    def insert(self, va: int, level: int, table_pa: int, tattrs: int, asid: int) -> None:
        shift = self._region_shift(level)
        vpn = va >> shift
        k = ((vpn << 6 | level) << _TAG_BITS) | asid
        s = self.sets[vpn & (self.nsets - 1)]
        if k in s:
            del s[k]
        elif len(s) >= self.tlb.ways:
            del s[next(iter(s))]
            self.stats.evictions += 1
        s[k] = WalkCacheEntry(level, vpn << shift, table_pa, tattrs, asid)
        self.stats.inserts += 1

    def invalidate(self, scope: Scope, va: int = 0, asid: int = 0) -> int:
        self.stats.flush_ops += 1
        n = 0
        for s in self.sets:
            if not s:
                continue
            if scope is Scope.ALL:
                victims = list(s)
            elif scope is Scope.ASID:
                victims = [k for k, e in s.items() if e.asid == asid]
            else:
                victims = [k for k, e in s.items()
                           if e.va_base <= va < e.va_base + (1 << self._region_shift(e.level))
                           and (scope is Scope.VAA or e.asid == asid)]
            for k in victims:
                del s[k]
            n += len(victims)
        self.stats.flushed_entries += n
        return n

    def __iter__(self):
        for s in self.sets:
            yield from s.values()

    def __len__(self) -> int:
        return sum(len(s) for s in self.sets)


class TLBHierarchy:
    """The TLBs of one CPU (the CPU's lookup order: L1 of the access side, L2, walk cache).
    Unicorn's own TLB is kept a subset of this: `lost` is set whenever an entry leaves
    every structure, so the CPU flushes Unicorn's copy."""

    def __init__(self, l1i: SetAssocTLB, l1d: SetAssocTLB, l2: SetAssocTLB, walk_cache: WalkCache):
        self.itlb, self.dtlb, self.l2, self.walk_cache = l1i, l1d, l2, walk_cache
        self.lost = False
        for t in (l1i, l1d, l2):
            t.on_remove = self._on_remove

    def _on_remove(self, e: Translation) -> None:
        self.lost = True                 # no structure holds e any more

    def probe(self, va: int, asid: int) -> Translation | None:
        return self.itlb.probe(va, asid) or self.dtlb.probe(va, asid) or self.l2.probe(va, asid)

    def invalidate(self, op: TLBIOp, va: int = 0, asid: int = 0) -> int:
        scope = op.scope
        n = self.itlb.invalidate(scope, va, asid) + self.dtlb.invalidate(scope, va, asid) \
            + self.l2.invalidate(scope, va, asid)
        if not op.last_level:
            n += self.walk_cache.invalidate(scope, va, asid)
        return n

    def entries(self):
        """Every distinct leaf entry held (an entry may sit in L1 and L2 at once)."""
        seen = {}
        for t in (self.itlb, self.dtlb, self.l2):
            for e in t:
                seen[id(e)] = e
        return list(seen.values())
