"""TLB structures on their own: what a fill holds and exactly what a TLBI removes.

Expected contents follow the Arm ARM's TLBI scopes (DDI 0487, TLBI VAE1 / VALE1 / VAAE1 /
ASIDE1 / VMALLE1 descriptions): a by-VA TLBI removes the entries whose page or block
contains the VA, of that ASID or global (VAAE1: any ASID), and nothing else; geometries are
the core presets' (A72 L1: 1 MB slices of 2 MB blocks; A53 L2: 512 MB slices of 1 GB; A76 L1I
32 MB, L1D 512 MB).
"""
import copy
import random

import pytest

from emu.cores import load_preset
from emu.tlb import BlockSlice, SetAssocTLB, TLBHierarchy, TLBIRun, WalkCache
from emu.tlbi import Scope, TLBIOp
from emu.walker import Translation

MB, GB = 1 << 20, 1 << 30
BASE = 0x40000000                      # 1 GB aligned
PAGE = 0x1000


def tr(va_base, size=PAGE, asid=5, pa=0x8000000, va=None):
    """A leaf translation as the walker returns it (asid None: a global entry)."""
    level = {PAGE: 3, 2 * MB: 2, GB: 1}[size]
    return Translation(va_base if va is None else va, va_base, pa, level, size, 0b011011, asid is not None,
                       asid, 0, 0, [], [])


def structure(preset, which):
    g = getattr(load_preset(preset), which)
    return SetAssocTLB(which, g.entries, g.ways, g.replacement, g.max_block_shift, random.Random(1))


def hierarchy(preset="cortex-a72"):
    p = load_preset(preset)
    mk = lambda n, g: SetAssocTLB(n, g.entries, g.ways, g.replacement, g.max_block_shift, random.Random(1))
    return TLBHierarchy(mk("itb", p.l1i), mk("dtb", p.l1d), mk("l2", p.l2),
                        WalkCache(p.walk_cache.entries, p.walk_cache.ways, random.Random(1), p.walk_cache.replacement))


def contents(t):
    return sorted((e.va_base, e.size, e.asid if e.asid is not None else -1) for e in t)


# ---------------------------------------------------------------- block slices (defect 1)

def test_l2_hit_cuts_the_l1_slice_around_the_va_translated():
    """Touch every page of one 2 MB block on an A72: the L1D (1 MB entries) misses once per
    MB, the second miss is an L2 hit whose refill covers the second MB, and no entry is lost
    (so Unicorn is never flushed). Cutting around the original fill VA gave 1 + 256 misses:
    every page of the second MB missed and refilled the first MB's slice."""
    h = hierarchy("cortex-a72")
    block = tr(BASE, 2 * MB, va=BASE + 0x10000)
    h.l2.insert(block, BASE + 0x10000)
    h.dtlb.insert(block, BASE + 0x10000)
    misses = l2_hits = 0
    for va in range(BASE, BASE + 2 * MB, PAGE):
        if h.dtlb.lookup(va, 5) is None:
            misses += 1
            e = h.l2.lookup(va, 5)
            assert e is block
            l2_hits += 1
            h.dtlb.insert(e, va)
    assert (misses, l2_hits, h.lost) == (1, 1, False)
    assert contents(h.dtlb) == [(BASE, MB, 5), (BASE + MB, MB, 5)]
    for s in h.dtlb:
        assert s.__class__ is BlockSlice and s.block is block
        assert s.pa_base - block.pa_base == s.va_base - block.va_base


@pytest.mark.parametrize("preset,which,block_size,slice_size", [
    ("cortex-a72", "l1d", 2 * MB, MB),
    ("cortex-a72", "l1i", GB, MB),
    ("cortex-a53", "l2", GB, 512 * MB),
    ("cortex-a53", "l1d", 2 * MB, MB),
    ("cortex-a76", "l1i", GB, 32 * MB),
    ("cortex-a76", "l1d", GB, 512 * MB),
    ("neoverse-n1", "l1d", GB, 512 * MB),
])
@pytest.mark.parametrize("where", ["first", "last", "middle"])
def test_by_va_tlbi_anywhere_in_a_block_removes_every_slice(preset, which, block_size, slice_size, where):
    t = structure(preset, which)
    assert 1 << t.max_block_shift == slice_size
    block = tr(BASE, block_size, pa=0)
    held = [BASE, BASE + block_size - PAGE]          # slices of the first and the last part
    for va in held:
        t.insert(block, va)
    assert contents(t) == [(BASE, slice_size, 5), (BASE + block_size - slice_size, slice_size, 5)]
    # a VA inside the block in neither slice (or in one of them)
    va = {"first": BASE + 0x3000, "last": BASE + block_size - 0x5000,
          "middle": BASE + block_size // 2 - PAGE if block_size // slice_size > 2 else BASE + 0x7000}[where]
    assert t.invalidate(Scope.VA, va, 5) == 2
    assert len(t) == 0 and t.stats.flushed_entries == 2
    assert t.slices == {} and t.slice_blocks == {} and t.shifts == ()


def test_slices_of_a_slice_remember_the_original_block():
    """A53: the L2 keeps 512 MB of a 1 GB block, the L1 (1 MB) is refilled from that L2
    slice: a TLBI in the other 512 MB of the block still removes the L1 slice."""
    h = hierarchy("cortex-a53")
    block = tr(BASE, GB, pa=0)
    h.l2.insert(block, BASE + 5 * MB)
    l2_slice = h.l2.lookup(BASE + 5 * MB, 5)
    assert l2_slice.size == 512 * MB and l2_slice.block is block
    h.dtlb.insert(l2_slice, BASE + 5 * MB)
    l1_slice = h.dtlb.probe(BASE + 5 * MB, 5)
    assert l1_slice.size == MB and l1_slice.va_base == BASE + 5 * MB and l1_slice.block is block
    assert h.invalidate(TLBIOp.VALE1, BASE + 700 * MB, 5) == 2
    assert h.entries() == []


# ---------------------------------------------------------------- exact scope (defect 9)

def test_vale1_of_one_page_keeps_its_neighbours_when_a_block_is_present():
    """Five 4 KB pages of one 2 MB region and a 2 MB block elsewhere in a fully associative
    L1: a VALE1 of the first page removes that page only (the old match on `va_base >> 21`
    dropped all five)."""
    t = structure("cortex-a72", "l1d")
    t.max_block_shift = 21               # hold the 2 MB block natively
    t._possible_shifts = (12, 21)
    for i in range(5):
        t.insert(tr(BASE + i * PAGE), BASE + i * PAGE)
    t.insert(tr(BASE + 64 * MB, 2 * MB), BASE + 64 * MB)
    assert t.invalidate(Scope.VA, BASE, 5) == 1
    assert contents(t) == [(BASE + i * PAGE, PAGE, 5) for i in range(1, 5)] + [(BASE + 64 * MB, 2 * MB, 5)]
    assert t.stats.flushed_entries == 1 and t.stats.flush_ops == 1


def test_l2_set_neighbours_survive_a_page_tlbi():
    """Set-associative L2 (A72, 256 sets): the 4 KB page at BASE + 512 pages * ... shares
    the set and the 2 MB region index of the VA; only the VA's own entries go."""
    t = structure("cortex-a72", "l2")
    va = BASE + 0x5000
    # a page in the same 2 MB region and in the set that `va >> 21` indexes
    same_set = BASE + (((va >> 21) & t.set_mask) << 12)
    assert same_set >> 21 == va >> 21 and same_set != va
    t.insert(tr(same_set), same_set)
    t.insert(tr(va), va)
    t.insert(tr(BASE + 512 * MB, 2 * MB), BASE + 512 * MB)
    assert t.invalidate(Scope.VA, va, 5) == 1
    assert t.probe(same_set, 5) is not None and t.probe(va, 5) is None


@pytest.mark.parametrize("scope,asid,removed", [
    (Scope.VA, 5, {"global", "asid5"}),          # VAE1 with ASID 5: that ASID and the global entry
    (Scope.VA, 7, {"global"}),                   # another ASID: the global entry only
    (Scope.VAA, 0, {"global", "asid5", "asid6"}),
    (Scope.ASID, 6, {"asid6", "asid6-other-va"}),  # ASIDE1: non-global entries of ASID 6, every VA
    (Scope.ALL, 0, {"global", "asid5", "asid6", "asid6-other-va"}),
])
def test_tlbi_scopes(scope, asid, removed):
    t = structure("cortex-a72", "l2")
    va = 0xFFFF_FF80_0020_3000            # a kernel-half VA: scopes do not depend on the half
    entries = {"global": tr(va, asid=None, pa=0x1000), "asid5": tr(va, asid=5, pa=0x2000),
               "asid6": tr(va, asid=6, pa=0x3000), "asid6-other-va": tr(va + PAGE, asid=6, pa=0x4000)}
    for e in entries.values():
        t.insert(e, e.va_base)
    assert t.invalidate(scope, va, asid) == len(removed)
    left = {name for name, e in entries.items() if any(x is e for x in t)}
    assert left == set(entries) - removed
    assert len(t) == 4 - len(removed) and t.stats.flushed_entries == len(removed)


def test_asid_index_follows_evictions():
    """ASIDE1 after capacity evictions removes what is held, and counts exactly."""
    t = SetAssocTLB("t", 8, 2, max_block_shift=30)
    for i in range(40):
        t.insert(tr(BASE + i * PAGE, asid=i % 3), BASE + i * PAGE)
    held = [e for e in t if e.asid == 1]
    assert t.stats.evictions == 32 and len(t) == 8
    assert t.invalidate(Scope.ASID, 0, 1) == len(held)
    assert all(e.asid != 1 for e in t) and len(t) == 8 - len(held)


# ---------------------------------------------------------------- walk cache

def test_walk_cache_honours_random_replacement():
    """Five tables in one 4-way set: LRU always evicts the oldest; random picks among all."""
    def victim(replacement, seed):
        w = WalkCache(4, 4, random.Random(seed), replacement)
        for i in range(5):
            w.insert(BASE + i * 2 * MB, 3, 0x1000 * (i + 1), 0, 5)
        return [i for i in range(4) if w.lookup(BASE + i * 2 * MB, 5, (3,)) is None]
    assert {tuple(victim("lru", s)) for s in range(20)} == {(0,)}
    rnd = {tuple(victim("random", s)) for s in range(20)}
    assert len(rnd) > 1 and all(len(v) == 1 for v in rnd)


def test_walk_cache_random_lookup_keeps_order():
    w = WalkCache(4, 4, random.Random(0), "random")
    for i in range(4):
        w.insert(BASE + i * 2 * MB, 3, 0x1000, 0, 5)
    order = list(w.sets[0])
    w.lookup(BASE, 5, (3,))
    assert list(w.sets[0]) == order


KVA = 0xFFFF_FF80_0040_0000              # a kernel VA (TTBR1)


def _wc():
    w = WalkCache(64, 4)
    for asid in (0, 5):
        w.insert(KVA, 3, 0x10000 + asid, 0, asid)        # the L3 table for KVA's 2 MB
        w.insert(KVA, 2, 0x20000 + asid, 0, asid)        # the L2 table for its 1 GB
        w.insert(KVA + 64 * MB, 3, 0x30000 + asid, 0, asid)   # another 2 MB region
    return w


def wc_contents(w):
    return sorted((e.level, e.va_base, e.asid) for e in w)


def test_walk_cache_vae1_keeps_other_asids_table_entries():
    """TLBI VAE1 with ASID 0 for a kernel VA: the table entries of ASID 0 covering the VA go
    (both levels); ASID 5's stay (the Arm ARM requires only entries that match the ASID);
    ASID 0's entry for another region stays."""
    w = _wc()
    assert w.invalidate(Scope.VA, KVA + 0x3000, 0) == 2
    assert wc_contents(w) == sorted([(3, KVA, 5), (2, KVA & ~(GB - 1), 5), (3, KVA + 64 * MB, 0),
                                     (3, KVA + 64 * MB, 5)])
    assert w.stats.flushed_entries == 2


def test_walk_cache_vaae1_and_aside1():
    w = _wc()
    assert w.invalidate(Scope.VAA, KVA, 0) == 4
    assert wc_contents(w) == [(3, KVA + 64 * MB, 0), (3, KVA + 64 * MB, 5)]
    w = _wc()
    assert w.invalidate(Scope.ASID, 0, 5) == 3
    assert {e.asid for e in w} == {0} and len(w) == 3
    assert w.invalidate(Scope.ALL) == 3 and len(w) == 0 and w.levels == ()


def test_walk_cache_lookup_is_per_asid():
    w = _wc()
    assert w.lookup(KVA, 5).table_pa == 0x10005
    assert w.lookup(KVA, 0).table_pa == 0x10000
    assert w.lookup(KVA, 6) is None


def test_last_level_tlbi_leaves_the_walk_cache():
    h = hierarchy()
    h.walk_cache.insert(KVA, 3, 0x1000, 0, 0)
    h.l2.insert(tr(KVA, asid=None), KVA)
    assert h.invalidate(TLBIOp.VAALE1IS, KVA, 0) == 1
    assert len(h.walk_cache) == 1 and h.walk_cache.stats.flush_ops == 0
    assert h.invalidate(TLBIOp.VAAE1IS, KVA, 0) == 1
    assert len(h.walk_cache) == 0


# ---------------------------------------------------------------- runs (the batch API)

def _random_hierarchy(rng, preset, sizes=(PAGE,) * 8 + (2 * MB, GB)):
    h = hierarchy(preset)
    for _ in range(rng.randrange(0, 400)):
        size = rng.choice(sizes)
        asid = rng.choice([None, 1, 2, 3])
        va = BASE + rng.randrange(0, 8 * GB) & ~(size - 1)
        e = tr(va, size, asid)
        at = va + rng.randrange(0, size) & ~(PAGE - 1)
        h.l2.insert(e, at)
        rng.choice([h.itlb, h.dtlb]).insert(e, at)
        h.walk_cache.insert(at, rng.choice([2, 3]), 0x1000, 0, rng.choice([1, 2, 3]))
    return h


def _state(h):
    out = []
    for t in (h.itlb, h.dtlb, h.l2):
        out.append((contents(t), t.stats.flushed_entries, t.stats.flush_ops, t.shifts, len(t)))
    w = h.walk_cache
    out.append((wc_contents(w), w.stats.flushed_entries, w.stats.flush_ops, w.levels))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_a_run_removes_what_one_op_at_a_time_removes(seed):
    rng = random.Random(seed)
    preset = ["cortex-a72", "cortex-a53", "cortex-a76", "neoverse-n1"][seed % 4]
    h = _random_hierarchy(rng, preset)
    ops = []
    pool = list(h.l2)
    for _ in range(rng.choice([1, 3, 50, 2000])):
        op = rng.choice([TLBIOp.VAE1IS, TLBIOp.VALE1IS, TLBIOp.VAAE1IS, TLBIOp.VAALE1IS, TLBIOp.VAE1]
                        * 20 + [TLBIOp.ASIDE1IS, TLBIOp.VMALLE1IS])
        held = rng.choice(pool) if pool and rng.random() < 0.5 else None
        va = held.va_base + rng.randrange(0, held.size) if held else BASE + rng.randrange(0, 8 * GB)
        ops.append((op, va & ~(PAGE - 1), rng.choice([1, 2, 3])))
    one = copy.deepcopy(h)
    n_one = sum(one.invalidate(op, va, asid) for op, va, asid in ops)
    n_run = h.invalidate_run(TLBIRun(ops), TLBIRun([o for o in ops if not o[0].last_level]))
    assert n_run == n_one and (n_one > 0 or len(ops) < 3)
    assert _state(h) == _state(one)


@pytest.mark.parametrize("seed", range(8))
def test_a_run_of_va_ops_on_pages_removes_what_one_op_at_a_time_removes(seed):
    """The keyed paths of a run (only 4 KB entries held, no VAA op): global entries and
    walk-cache entries too."""
    rng = random.Random(seed)
    h = _random_hierarchy(rng, ["cortex-a72", "cortex-a53"][seed % 2], sizes=(PAGE,))
    pool = list(h.l2)
    ops = []
    for _ in range(rng.choice([3, 50, 2000])):
        op = rng.choice([TLBIOp.VAE1IS, TLBIOp.VALE1IS, TLBIOp.VAE1] * 10 + [TLBIOp.ASIDE1IS])
        held = rng.choice(pool) if pool and rng.random() < 0.7 else None
        va = held.va_base if held else BASE + rng.randrange(0, 8 * GB)
        ops.append((op, va & ~(PAGE - 1), held.asid if held and held.asid and rng.random() < 0.5
                    else rng.choice([1, 2, 3])))
    one = copy.deepcopy(h)
    n_one = sum(one.invalidate(op, va, asid) for op, va, asid in ops)
    n_run = h.invalidate_run(TLBIRun(ops), TLBIRun([o for o in ops if not o[0].last_level]))
    assert n_run == n_one and (n_one > 0 or not pool)
    assert _state(h) == _state(one)
    assert any(e.asid is None for e in pool) == bool(pool)          # global entries were in play


def test_a_slice_shares_its_blocks_stale_mark():
    """The checker marks the walk result (the block) stale; a TLB hit on a slice must see it."""
    t = structure("cortex-a72", "l1d")
    block = tr(BASE, 2 * MB)
    t.insert(block, BASE + MB + 0x5000)
    s = t.probe(BASE + MB, 5)
    assert s.__class__ is BlockSlice and not s.stale and s.refs == 1 and block.refs == 0
    block.stale = True
    assert s.stale
    assert repr(s).startswith("BlockSlice(")
