"""Per-CPU TLB model: L1 instruction TLB, L1 data TLB, unified L2 TLB and a walk cache.

Each structure is set-associative; a set is a dict whose insertion order is the LRU
order (oldest first). Entries are the walker's Translation objects themselves (no copy
on fill). A key packs (vpn, size shift, ASID tag) into one int so that a lookup does
no allocation. Statistics are named after gem5's ArmTLB/TableWalker stats.

Invalidation removes exactly what the architecture requires and no more (the least it
guarantees, so that software relying on over-invalidation is caught), and is keyed: a
by-VA TLBI computes the keys of the entries that can translate the VA (one per size
present, per ASID tag in scope) instead of scanning sets; a by-ASID TLBI walks a per-ASID
index. Both cost O(entries removed), not O(entries held).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, fields

from .tlbi import Scope, TLBIOp
from .walker import Translation

GLOBAL_TAG = 0x10000            # ASID tag of global entries: outside any 16-bit ASID
# the scopes as module constants: an enum class attribute costs a lookup on the TLBI path
_ALL, _ASID, _VA, _VAA = Scope.ALL, Scope.ASID, Scope.VA, Scope.VAA
_TAG_BITS = 17
_TAG_MASK = (1 << _TAG_BITS) - 1
_ONLY_4K = (12,)                 # SetAssocTLB.shifts when only 4 KB entries are held


def _span_id(base: int, shift: int) -> int:
    """Untagged id of a naturally aligned region (a block, or a walk-cache region)."""
    return (base >> shift) << 6 | shift


@dataclass(slots=True)
class TLBStats:
    hits: int = 0
    misses: int = 0
    inserts: int = 0
    evictions: int = 0
    flushed_entries: int = 0     # removed by TLBI
    flush_ops: int = 0           # TLBI operations that reached this structure


class BlockSlice(Translation):
    """The naturally aligned part of a block that a TLB holds when it cannot hold the
    block's size (A72 L1: 1 MB of a 2 MB block). It remembers the whole block, because a
    by-VA TLBI anywhere in the block must remove it (the TLBI names the block's VA range,
    not the slice's). It is an entry of its own (own `refs`: the structures holding it),
    but shares the block's `stale` mark (the checker marks the walk result)."""
    __slots__ = ("block",)

    @property
    def stale(self) -> bool:
        return self.block.stale

    @stale.setter
    def stale(self, value: bool) -> None:
        self.block.stale = value

    @classmethod
    def of(cls, block: Translation, va: int, shift: int) -> "BlockSlice":
        size = 1 << shift
        off = (va - block.va_base) & (block.size - 1) & ~(size - 1)
        f = {x.name: getattr(block, x.name) for x in fields(Translation)}
        f.update(va=va, va_base=block.va_base + off, pa_base=block.pa_base + off, size=size, refs=0)
        s = cls.__new__(cls)
        s.block = block                    # first: Translation.__init__ sets `stale` through it
        Translation.__init__(s, **f)
        return s


def _block_of(e: Translation) -> Translation:
    return e.block if e.__class__ is BlockSlice else e


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
        self.by_tag: dict[int, dict[int, Translation]] = {}       # ASID tag -> {key: entry}
        self.slices: dict[int, dict[int, BlockSlice]] = {}        # block span id -> {key: slice}
        self.slice_blocks: dict[int, int] = {}                    # block shift -> slices held
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

    def insert(self, e: Translation, va: int) -> None:
        """Fill with the translation of `va` (a walk result, or an entry of another TLB).
        A block larger than this TLB holds is cut to the slice around `va`."""
        shift = e.size.bit_length() - 1
        if shift > self.max_block_shift:
            shift = self.max_block_shift
            e = BlockSlice.of(_block_of(e), va, shift)
        vpn = e.va_base >> shift
        tag = GLOBAL_TAG if e.asid is None else e.asid
        k = ((vpn << 6 | shift) << _TAG_BITS) | tag
        s = self.sets[vpn & self.set_mask]
        old = s.pop(k, None)
        if old is not None:
            self._dropped(k, old)
        elif len(s) >= self.ways:
            evk = next(iter(s)) if self.lru else list(s)[self.rng.randrange(len(s))]
            ev = s.pop(evk)
            self.stats.evictions += 1
            if (evk >> _TAG_BITS) & 63 == shift and ev.__class__ is Translation and e.__class__ is Translation:
                # NOTE: inlined from _dropped for speed: same size out and in, the per-size
                # counts do not change
                evtag = evk & _TAG_MASK
                d = self.by_tag[evtag]
                del d[evk]
                if not d:
                    del self.by_tag[evtag]
                ev.refs -= 1
                if ev.refs == 0 and self.on_remove is not None:
                    self.on_remove(ev)
                s[k] = e
                e.refs += 1
                self.stats.inserts += 1
                d = self.by_tag.get(tag)
                if d is None:
                    d = self.by_tag[tag] = {}
                d[k] = e
                return
            self._dropped(evk, ev)
        s[k] = e
        e.refs += 1
        self.stats.inserts += 1
        d = self.by_tag.get(tag)
        if d is None:
            d = self.by_tag[tag] = {}
        d[k] = e
        if e.__class__ is BlockSlice:
            b = e.block
            bshift = b.size.bit_length() - 1
            self.slices.setdefault(_span_id(b.va_base, bshift), {})[k] = e
            self.slice_blocks[bshift] = self.slice_blocks.get(bshift, 0) + 1
        n = self.shift_count[shift]
        self.shift_count[shift] = n + 1
        if n == 0:
            self._update_shifts()

    def _update_shifts(self) -> None:
        sc = self.shift_count
        shifts = tuple(x for x in self._possible_shifts if sc[x])
        self.shifts = _ONLY_4K if shifts == _ONLY_4K else shifts      # one object: tested by identity

    def _dropped_4k(self, k: int, e: Translation) -> None:
        """_dropped for a 4 KB Translation (no slice), already popped from its set; counted
        as flushed (the TLBI paths)."""
        tag = k & _TAG_MASK
        d = self.by_tag[tag]
        del d[k]
        if not d:
            del self.by_tag[tag]
        self.stats.flushed_entries += 1
        n = self.shift_count[12] - 1
        self.shift_count[12] = n
        if n == 0:
            if self.shifts is _ONLY_4K:
                self.shifts = ()
            else:
                self._update_shifts()
        e.refs -= 1
        if e.refs == 0 and self.on_remove is not None:
            self.on_remove(e)

    def _dropped(self, k: int, e: Translation) -> None:
        """Bookkeeping for entry e (key k), already popped from its set."""
        tag = k & _TAG_MASK
        d = self.by_tag[tag]
        del d[k]
        if not d:
            del self.by_tag[tag]
        self._unlinked(k, e)

    def _unlinked(self, k: int, e: Translation) -> None:
        """Size counts, slice index and reference count of an entry that left its set
        and the per-ASID index."""
        shift = (k >> _TAG_BITS) & 63
        n = self.shift_count[shift] - 1
        self.shift_count[shift] = n
        if n == 0:
            self._update_shifts()
        if e.__class__ is BlockSlice:
            b = e.block
            bshift = b.size.bit_length() - 1
            sid = _span_id(b.va_base, bshift)
            d = self.slices[sid]
            del d[k]
            if not d:
                del self.slices[sid]
            c = self.slice_blocks[bshift] - 1
            if c:
                self.slice_blocks[bshift] = c
            else:
                del self.slice_blocks[bshift]
        e.refs -= 1
        if e.refs == 0 and self.on_remove is not None:
            self.on_remove(e)

    def _remove(self, k: int) -> bool:
        """Remove the entry with key k if present."""
        s = self.sets[(k >> (_TAG_BITS + 6)) & self.set_mask]
        e = s.pop(k, None)
        if e is None:
            return False
        self._dropped(k, e)
        return True

    def invalidate(self, scope: Scope, va: int = 0, asid: int = 0) -> int:
        """Remove every entry in the TLBI scope and nothing else; returns how many.

        VA / VAA: the entries whose page or block contains va (a slice counts with its
        whole block), of that ASID or global (VA) or of any ASID (VAA). ASID: the
        non-global entries of that ASID. ALL: everything."""
        self.stats.flush_ops += 1
        if scope is _ALL:
            n = self._clear()
        elif scope is _ASID:
            n = self._invalidate_asid(asid)
        else:
            n = self._invalidate_va(va, (asid, GLOBAL_TAG) if scope is _VA else None)
        self.stats.flushed_entries += n
        return n

    def _invalidate_va(self, va: int, tags: tuple | None) -> int:
        """Entries containing va whose tag is in `tags` (None: any tag)."""
        n = 0
        sets, mask = self.sets, self.set_mask
        for shift in self.shifts:
            vpn = va >> shift
            s = sets[vpn & mask]
            if not s:
                continue
            base = (vpn << 6 | shift) << _TAG_BITS
            for tag in (tags if tags is not None else list(self.by_tag)):
                e = s.pop(base | tag, None)
                if e is not None:
                    self._dropped(base | tag, e)
                    n += 1
        if self.slice_blocks:
            # slices of a block containing va that do not themselves contain it
            for bshift in list(self.slice_blocks):
                d = self.slices.get(_span_id(va, bshift))
                if d:
                    for k in [k for k in d if tags is None or k & _TAG_MASK in tags]:
                        n += self._remove(k)
        return n

    def _invalidate_asid(self, asid: int) -> int:
        d = self.by_tag.pop(asid, None)
        if not d:
            return 0
        sets, mask = self.sets, self.set_mask
        if self.slice_blocks:
            for k, e in d.items():
                del sets[(k >> (_TAG_BITS + 6)) & mask][k]
                self._unlinked(k, e)
            return len(d)
        # NOTE: inlined from _unlinked for speed (no slices held): an ASIDE1IS reaches every CPU
        sc, on_remove = self.shift_count, self.on_remove
        emptied = False
        for k, e in d.items():
            del sets[(k >> (_TAG_BITS + 6)) & mask][k]
            shift = (k >> _TAG_BITS) & 63
            n = sc[shift] - 1
            sc[shift] = n
            emptied |= not n
            e.refs -= 1
            if not e.refs and on_remove is not None:
                on_remove(e)
        if emptied:
            self._update_shifts()
        return len(d)

    def _clear(self) -> int:
        n = 0
        on_remove = self.on_remove
        for s in self.sets:
            if s:
                n += len(s)
                for e in s.values():
                    e.refs -= 1
                    if e.refs == 0 and on_remove is not None:
                        on_remove(e)
                s.clear()
        self.by_tag.clear()
        self.slices.clear()
        self.slice_blocks.clear()
        self.shift_count = [0] * 31
        self.shifts = ()
        return n

    def invalidate_run(self, run: "TLBIRun") -> int:
        """Apply a run of completed TLBIs with no fill in between: the same entries removed
        and the same statistics as invalidate() once per op, by keyed removal per op for a
        short run and by one pass over the entries held for a long one."""
        self.stats.flush_ops += len(run.ops)
        if run.flush_all:
            n = self._clear()
        else:
            n = 0
            for asid in run.asids:
                n += self._invalidate_asid(asid)
            if not self.shifts or not run.n_va:
                pass
            elif self.shifts is _ONLY_4K and not run.vaa and not self.slice_blocks:
                n += self._remove_4k_keys(run.leaf_keys_4k())
            elif run.n_va * 2 * len(self.shifts) <= len(self):
                for va, tags in run.va_ops():
                    n += self._invalidate_va(va, tags)
            else:
                n += self._sweep(run)
        self.stats.flushed_entries += n
        return n

    def _remove_4k_keys(self, keys_by_tag: dict) -> int:
        """Remove the entries whose keys are in keys_by_tag ({tag: keys}), when only 4 KB
        Translations are held: each tag's victims found by one set intersection with the
        per-ASID index (C speed, O(min(keys, entries of the tag)))."""
        n = 0
        by_tag, sets, mask, on_remove = self.by_tag, self.sets, self.set_mask, self.on_remove
        for tag, keys in keys_by_tag.items():
            d = by_tag.get(tag)
            if not d:
                continue
            victims = d.keys() & keys
            if not victims:
                continue
            for k in victims:
                e = sets[(k >> (_TAG_BITS + 6)) & mask].pop(k)
                del d[k]
                e.refs -= 1
                if not e.refs and on_remove is not None:
                    on_remove(e)
            if not d:
                del by_tag[tag]
            n += len(victims)
        if n:
            c = self.shift_count[12] - n
            self.shift_count[12] = c
            if not c:
                self.shifts = ()
        return n

    def _sweep(self, run: "TLBIRun") -> int:
        """Remove every entry that a by-VA op of the run covers, in one pass."""
        victims = []
        for s in self.sets:
            for k, e in s.items():
                if e.__class__ is BlockSlice:
                    b = e.block
                    bshift = b.size.bit_length() - 1
                    sid = _span_id(b.va_base, bshift)
                else:
                    sid = k >> _TAG_BITS
                    bshift = sid & 63
                if run.covers(sid, bshift, k & _TAG_MASK):
                    victims.append(k)
        remove = self._remove
        for k in victims:
            remove(k)
        return len(victims)

    def __iter__(self):
        for s in self.sets:
            yield from s.values()

    def __len__(self) -> int:
        return sum(len(d) for d in self.by_tag.values())



class TLBIRun:
    """TLBIs [(op, va, asid)] completed together with no fill in between (a batch of
    flush sequences). Removal is then the union of their scopes, whatever the order, so a
    structure may apply them per op or in one pass over what it holds."""

    def __init__(self, ops: list):
        self.ops = ops
        self.flush_all = False
        self.asids = set()                  # ASIDE1 operands
        self.va_asid = []                   # (va, asid) of VAE1/VALE1
        self.vaa = []                       # va of VAAE1/VAALE1
        for op, va, asid in ops:
            scope = op.scope
            if scope is _VA:
                self.va_asid.append((va, asid))
            elif scope is _VAA:
                self.vaa.append(va)
            elif scope is _ASID:
                self.asids.add(asid)
            else:
                self.flush_all = True
        self._leaf_keys: dict | None = None   # {tag: keys of 4 KB entries} the VA ops cover
        self._table_keys: dict[int, dict] = {}   # level -> {ASID: walk-cache keys} the VA ops cover
        self._any: dict[int, set] = {}       # shift -> span ids of VAA ops
        self._ids: dict[int, set] = {}       # shift -> span ids of VA ops (for global entries)
        self._keys: dict[int, set] = {}      # shift -> span id << _TAG_BITS | ASID of VA ops

    @property
    def n_va(self) -> int:
        return len(self.va_asid) + len(self.vaa)

    def leaf_keys_4k(self) -> dict:
        """{tag: keys}: the 4 KB TLB entries the VA ops cover (each op: its ASID and global)."""
        if self._leaf_keys is None:
            out = {}
            glob = out[GLOBAL_TAG] = set()
            for va, asid in self.va_asid:
                base = ((va >> 12) << 6 | 12) << _TAG_BITS
                keys = out.get(asid)
                if keys is None:
                    keys = out[asid] = set()
                keys.add(base | asid)
                glob.add(base | GLOBAL_TAG)
            self._leaf_keys = out
        return self._leaf_keys

    def table_keys(self, level: int) -> dict:
        """{ASID: keys}: the walk-cache entries of a table level the VA ops cover."""
        out = self._table_keys.get(level)
        if out is None:
            out = self._table_keys[level] = {}
            shift = _region_shift(level)
            for va, asid in self.va_asid:
                keys = out.get(asid)
                if keys is None:
                    keys = out[asid] = set()
                keys.add(((va >> shift) << 6 | level) << _TAG_BITS | asid)
        return out

    def va_ops(self):
        """(va, ASID tags in scope, None for any ASID) of the by-VA ops."""
        for va, asid in self.va_asid:
            yield va, (asid, GLOBAL_TAG)
        for va in self.vaa:
            yield va, None

    def covers(self, sid: int, shift: int, tag: int) -> bool:
        """Does a by-VA op of the run cover the entry for region `sid` (size shift) and tag?"""
        # NOTE: the set comprehensions inline _span_id for speed (a teardown's 500,000 VAs)
        a = self._any.get(shift)
        if a is None:
            a = self._any[shift] = {(va >> shift) << 6 | shift for va in self.vaa}
        if sid in a:
            return True
        if tag == GLOBAL_TAG:
            ids = self._ids.get(shift)
            if ids is None:
                ids = self._ids[shift] = {(va >> shift) << 6 | shift for va, _ in self.va_asid}
            return sid in ids
        keys = self._keys.get(shift)
        if keys is None:
            keys = self._keys[shift] = {((va >> shift) << 6 | shift) << _TAG_BITS | asid
                                        for va, asid in self.va_asid}
        return (sid << _TAG_BITS | tag) in keys


@dataclass(slots=True)
class WalkCacheEntry:
    level: int           # level of the table this entry points at (2 or 3 for 3-level walks)
    va_base: int         # start of the VA region that table covers
    table_pa: int
    tattrs: int          # table attributes accumulated above it
    asid: int            # ASID of the walk that filled it


# WalkCache.levels for each set of table levels present (bits: L3, L2, L1), deepest first
_LEVELS_PRESENT = [tuple(lv for lv, bit in ((3, 4), (2, 2), (1, 1)) if m & bit) for m in range(8)]


def _region_shift(level: int) -> int:
    # a level-L table covers the VA region translated by the levels above it
    return 12 + 9 * (4 - level)


class WalkCache:
    """Cached table descriptors: (level, VA region, ASID) -> next-level table.

    A hit lets the walker start at the deepest cached level instead of the TTBR.

    Entries are tagged with the ASID of the walk that filled them, also above global
    leaves: a table descriptor has no nG bit, and the Arm ARM associates the cached copy of
    an entry from a level above the final level with the ASID (DDI 0487, D8 "TLB maintenance
    instructions", instruction descriptions of TLBI VAE1 and TLBI ASIDE1, also in DDI 0595):
    TLBI VAE1 removes an entry that "would be used to translate the specified VA" and "is
    from a level of lookup above the final level and matches the specified ASID"; TLBI ASIDE1
    one that "would be used for the specified ASID" and "is from a level of lookup above the
    final level". The rule followed here, the least the architecture guarantees (so that
    software relying on over-invalidation is caught):

    - VAE1(IS) removes the entries covering the VA with that ASID and no other: a TLBI VAE1IS
      with ASID 0 for a kernel VA leaves ASID 5's cached table pointers for that VA (freeing a
      kernel table needs VAAE1, as Linux's __flush_tlb_kernel_pgtable does);
    - VAAE1(IS): the entries covering the VA, any ASID;
    - ASIDE1(IS): every entry of that ASID; VMALLE1(IS): everything;
    - VALE1 / VAALE1 (last level) leave it alone (TLBHierarchy.invalidate).
    """

    def __init__(self, entries: int, ways: int, rng: random.Random | None = None, replacement: str = "lru"):
        if entries % ways:
            raise ValueError(f"walk_cache: {ways} ways do not divide {entries} entries")
        self.entries = entries
        self.ways = ways
        self.nsets = entries // ways
        if self.nsets & (self.nsets - 1):
            raise ValueError(f"walk_cache: {self.nsets} sets is not a power of two")
        self.set_mask = self.nsets - 1
        self.replacement = replacement
        self.lru = replacement != "random"
        self.rng = rng or random.Random(0)
        self.sets: list[dict[int, WalkCacheEntry]] = [{} for _ in range(self.nsets)]
        self.by_asid: dict[int, dict[int, WalkCacheEntry]] = {}
        self.level_count = [0] * 5
        self.levels: tuple = ()                         # table levels present
        self.stats = TLBStats()

    def lookup(self, va: int, asid: int, levels: tuple = (3, 2, 1)) -> WalkCacheEntry | None:
        """Deepest cached table for va (L3 table first) among `levels`."""
        sets, mask = self.sets, self.set_mask
        for level in levels:
            vpn = va >> (12 + 9 * (4 - level))
            s = sets[vpn & mask]
            k = ((vpn << 6 | level) << _TAG_BITS) | asid
            e = s.get(k)
            if e is not None:
                if self.lru:
                    del s[k]
                    s[k] = e
                self.stats.hits += 1
                return e
        self.stats.misses += 1
        return None

    def insert(self, va: int, level: int, table_pa: int, tattrs: int, asid: int) -> None:
        shift = _region_shift(level)
        vpn = va >> shift
        k = ((vpn << 6 | level) << _TAG_BITS) | asid
        s = self.sets[vpn & self.set_mask]
        if k in s:
            del s[k]
            self._dropped(k)
        elif len(s) >= self.ways:
            evk = next(iter(s)) if self.lru else list(s)[self.rng.randrange(len(s))]
            del s[evk]
            self._dropped(evk)
            self.stats.evictions += 1
        e = s[k] = WalkCacheEntry(level, vpn << shift, table_pa, tattrs, asid)
        d = self.by_asid.get(asid)
        if d is None:
            d = self.by_asid[asid] = {}
        d[k] = e
        n = self.level_count[level]
        self.level_count[level] = n + 1
        if n == 0:
            self._update_levels()
        self.stats.inserts += 1

    def _update_levels(self) -> None:
        lc = self.level_count
        self.levels = _LEVELS_PRESENT[(lc[3] > 0) << 2 | (lc[2] > 0) << 1 | (lc[1] > 0)]

    def _dropped(self, k: int) -> None:
        asid = k & _TAG_MASK
        d = self.by_asid[asid]
        del d[k]
        if not d:
            del self.by_asid[asid]
        self._uncounted(k)

    def _uncounted(self, k: int) -> None:
        level = (k >> _TAG_BITS) & 63
        n = self.level_count[level] - 1
        self.level_count[level] = n
        if n == 0:
            self._update_levels()

    def _remove(self, k: int) -> bool:
        s = self.sets[(k >> (_TAG_BITS + 6)) & self.set_mask]
        if s.pop(k, None) is None:
            return False
        self._dropped(k)
        return True

    def invalidate(self, scope: Scope, va: int = 0, asid: int = 0) -> int:
        """Remove the entries in the TLBI's scope (see the class docstring); returns how many."""
        self.stats.flush_ops += 1
        if scope is _ALL:
            n = self._clear()
        elif scope is _ASID:
            n = self._invalidate_asid(asid)
        else:
            n = self._invalidate_va(va, (asid,) if scope is _VA else None)
        self.stats.flushed_entries += n
        return n

    def _invalidate_va(self, va: int, asids: tuple | None) -> int:
        n = 0
        sets, mask = self.sets, self.set_mask
        for level in self.levels:
            vpn = va >> (12 + 9 * (4 - level))                  # _region_shift(level)
            s = sets[vpn & mask]
            if not s:
                continue
            base = (vpn << 6 | level) << _TAG_BITS
            for asid in (asids if asids is not None else list(self.by_asid)):
                if s.pop(base | asid, None) is not None:
                    self._dropped(base | asid)
                    n += 1
        return n

    def _invalidate_asid(self, asid: int) -> int:
        d = self.by_asid.pop(asid, None)
        if not d:
            return 0
        sets, mask, lc = self.sets, self.set_mask, self.level_count
        for k in d:
            del sets[(k >> (_TAG_BITS + 6)) & mask][k]
            lc[(k >> _TAG_BITS) & 63] -= 1              # NOTE: inlined from _uncounted
        self._update_levels()
        return len(d)

    def _clear(self) -> int:
        n = len(self)
        for s in self.sets:
            s.clear()
        self.by_asid.clear()
        self.level_count = [0] * 5
        self.levels = ()
        return n

    def invalidate_run(self, run: TLBIRun) -> int:
        """As SetAssocTLB.invalidate_run (the run holds only non-last-level ops)."""
        self.stats.flush_ops += len(run.ops)
        if run.flush_all:
            n = self._clear()
        else:
            n = 0
            for asid in run.asids:
                n += self._invalidate_asid(asid)
            if not self.levels or not run.n_va:
                pass
            elif not run.vaa:
                n += self._remove_keys(run)
            elif run.n_va * len(self.levels) <= len(self):
                for va, tags in run.va_ops():
                    n += self._invalidate_va(va, tags[:1] if tags is not None else None)
            else:
                victims = []
                for s in self.sets:
                    for k, w in s.items():
                        shift = _region_shift(w.level)
                        if run.covers(_span_id(w.va_base, shift), shift, w.asid):
                            victims.append(k)
                for k in victims:
                    self._remove(k)
                n += len(victims)
        self.stats.flushed_entries += n
        return n

    def _remove_keys(self, run: TLBIRun) -> int:
        """Remove what the run's VAE1 ops cover (no VAA op in the run): per level held and
        ASID, one set intersection with the per-ASID index."""
        n = 0
        by_asid, sets, mask = self.by_asid, self.sets, self.set_mask
        for level in self.levels:
            for asid, keys in run.table_keys(level).items():
                d = by_asid.get(asid)
                if not d:
                    continue
                victims = d.keys() & keys
                if not victims:
                    continue
                for k in victims:
                    del sets[(k >> (_TAG_BITS + 6)) & mask][k]
                    del d[k]
                if not d:
                    del by_asid[asid]
                self.level_count[level] -= len(victims)
                n += len(victims)
        if n:
            self._update_levels()
        return n

    def __iter__(self):
        for s in self.sets:
            yield from s.values()

    def __len__(self) -> int:
        return sum(len(d) for d in self.by_asid.values())


class TLBHierarchy:
    """The TLBs of one CPU (the CPU's lookup order: L1 of the access side, L2, walk cache).
    Unicorn's own TLB is kept a subset of this: `lost` is set whenever an entry leaves
    every structure, so the CPU flushes Unicorn's copy."""

    def __init__(self, l1i: SetAssocTLB, l1d: SetAssocTLB, l2: SetAssocTLB, walk_cache: WalkCache):
        self.itlb, self.dtlb, self.l2, self.walk_cache = l1i, l1d, l2, walk_cache
        self.lost = False
        self._leaf_tlbs = (l1i, l1d, l2)
        for t in self._leaf_tlbs:
            t.on_remove = self._on_remove

    def _on_remove(self, e: Translation) -> None:
        self.lost = True                 # no structure holds e any more

    def probe(self, va: int, asid: int) -> Translation | None:
        return self.itlb.probe(va, asid) or self.dtlb.probe(va, asid) or self.l2.probe(va, asid)

    def invalidate(self, op: TLBIOp, va: int = 0, asid: int = 0) -> int:
        """Apply one completed TLBI to every structure in its reach; returns entries removed."""
        scope = op.scope
        if scope is not _VA and scope is not _VAA:
            n = self.itlb.invalidate(scope, va, asid) + self.dtlb.invalidate(scope, va, asid) \
                + self.l2.invalidate(scope, va, asid)
            if not op.last_level:
                n += self.walk_cache.invalidate(scope, va, asid)
            return n
        return invalidate_va((self,), op, va, asid)

    def invalidate_run(self, run: TLBIRun, table_run: TLBIRun) -> int:
        """Apply a run of TLBIs (`table_run`: its non-last-level ops, for the walk cache)
        exactly as invalidate() once per op would."""
        n = self.itlb.invalidate_run(run) + self.dtlb.invalidate_run(run) + self.l2.invalidate_run(run)
        if table_run.ops:
            n += self.walk_cache.invalidate_run(table_run)
        return n

    def entries(self):
        """Every distinct leaf entry held (an entry may sit in L1 and L2 at once)."""
        seen = {}
        for t in (self.itlb, self.dtlb, self.l2):
            for e in t:
                seen[id(e)] = e
        return list(seen.values())


def invalidate_asid(hierarchies, op: TLBIOp, asid: int) -> int:
    """Apply one completed by-ASID TLBI (ASIDE1, ASIDE1IS) to the TLBs of every CPU in
    `hierarchies`: TLBHierarchy.invalidate for each. Returns the entries removed."""
    n = 0
    for h in hierarchies:
        n += h.invalidate(op, 0, asid)
    return n


def invalidate_va(hierarchies, op: TLBIOp, va: int, asid: int) -> int:
    """Apply one completed by-VA TLBI (VA or VAA scope) to the TLBs of every CPU in
    `hierarchies`: TLBHierarchy.invalidate for each, the keys computed once. Returns the
    entries removed."""
    # NOTE: inlined from SetAssocTLB.invalidate / _invalidate_va / _dropped and the
    # WalkCache's, for speed: the by-VA TLBI of every page of a teardown reaches every CPU
    # (a VA-scope op on TLBs holding only 4 KB entries, the common case, is unrolled)
    by_asid = op.scope is _VA
    vpn12 = va >> 12
    base12 = (vpn12 << 6 | 12) << _TAG_BITS
    ka, kg = base12 | asid, base12 | GLOBAL_TAG
    keys = (ka, kg)
    tables = not op.last_level
    if tables and by_asid:
        v2, v3 = va >> 30, va >> 21                    # the L2- and L3-table regions: _region_shift
        wkeys = (None, None, (v2, (v2 << 6 | 2) << _TAG_BITS | asid), (v3, (v3 << 6 | 3) << _TAG_BITS | asid))
    n = 0
    for h in hierarchies:
        for t in h._leaf_tlbs:
            t.stats.flush_ops += 1
            shifts = t.shifts
            if not shifts:
                continue
            if shifts is not _ONLY_4K or not by_asid:
                m = t._invalidate_va(va, (asid, GLOBAL_TAG) if by_asid else None)
                if m:
                    t.stats.flushed_entries += m
                    n += m
                continue
            s = t.sets[vpn12 & t.set_mask]
            for k in keys:
                e = s.pop(k, None)
                if e is None:
                    continue
                # NOTE: inlined from SetAssocTLB._dropped_4k for speed
                by_tag = t.by_tag
                tag = k & _TAG_MASK
                d = by_tag[tag]
                del d[k]
                if not d:
                    del by_tag[tag]
                t.stats.flushed_entries += 1
                sc = t.shift_count
                c = sc[12] - 1
                sc[12] = c
                if c == 0:
                    if t.shifts is _ONLY_4K:
                        t.shifts = ()
                    else:
                        t._update_shifts()
                e.refs -= 1
                if e.refs == 0 and t.on_remove is not None:
                    t.on_remove(e)
                n += 1
        if tables:
            w = h.walk_cache
            w.stats.flush_ops += 1
            levels = w.levels
            if not levels:
                continue
            if by_asid and levels[-1] >= 2:
                sets, mask = w.sets, w.set_mask
                for level in levels:
                    vpn, k = wkeys[level]
                    if sets[vpn & mask].pop(k, None) is not None:
                        # NOTE: inlined from WalkCache._dropped and _uncounted for speed
                        index = w.by_asid
                        d = index[asid]
                        del d[k]
                        if not d:
                            del index[asid]
                        lc = w.level_count
                        c = lc[level] - 1
                        lc[level] = c
                        if c == 0:
                            w._update_levels()
                        w.stats.flushed_entries += 1
                        n += 1
            else:
                m = w._invalidate_va(va, (asid,) if by_asid else None)
                if m:
                    w.stats.flushed_entries += m
                    n += m
    return n
