"""The compiled by-VA and by-ASID TLBIs (emu/_fast_tlbi.c) against the Python they mirror
(tlb.invalidate_va, tlb.invalidate_asid).

Two machines are built identically, one with the pure Python paths (Machine(fast=False)) and
one with the compiled ones (fast=True); the same seeded random lookups fill their TLBs (4 KB
pages, global pages, 2 MB and 1 GB blocks that A53/A72/A76 keep as slices, user and kernel
VAs, 8- and 16-bit ASIDs, LRU and random replacement), then the same by-VA and by-ASID TLBIs + DSBs run
on both. After each, everything either path touches must be identical: every set's keys in
order, the entries (and their refs), by_tag, shift_count, shifts, slices, statistics, the
walk caches, the order of on_remove calls, and what the CPUs did about Unicorn's TLB. The
return value is compared on direct calls of Machine.invalidate_va and invalidate_asid.
"""
from __future__ import annotations

import random
from dataclasses import asdict, replace

import pytest

from emu import fastpath, tlb
from emu.cores import load_preset
from emu.descriptors import AP_RW_ALL, OA_MASK, block_desc, level_index
from emu.machine import Machine
from emu.pagetables import UserTables
from emu.sysregs import SysReg, make_ttbr
from emu.tlbi import Scope, TLBIOp, tlbi_asid, tlbi_operand, tlbi_va
from emu.walker import Access

needs_built = pytest.mark.skipif(not fastpath.built(), reason="the compiled fast paths are not built")

PRESETS = ("cortex-a53", "cortex-a72", "cortex-a76", "neoverse-n1")
BY_VA_OPS = [op for op in TLBIOp if op.by_va]
BY_ASID_OPS = [op for op in TLBIOp if op.scope is Scope.ASID]       # ASIDE1, ASIDE1IS
DATA = 0x1000000              # 4 KB pages, some global
CODE = 0x400000               # executable pages (the ITLB)
BLK2M = 0x4000000             # a 2 MB block
BLK1G = 0x40000000            # a 1 GB block
KVA = 0xFFFF_FF80_0020_0000   # kernel (TTBR1) pages: keys wider than 64 bits
NPAGES = 12
PAGE_VAS = [DATA + i * 0x1000 for i in range(NPAGES)]
FILL_VAS = (PAGE_VAS + [CODE + i * 0x1000 for i in range(4)] + [KVA + i * 0x1000 for i in range(4)]
            + [BLK2M + off for off in (0, 0x1000, 0x100000, 0x1FF000)]
            + [BLK1G + off for off in (0, 0x3000, 0x200000, 0x20000000)])
TLBI_VAS = FILL_VAS + [DATA + 0x7F000000, BLK2M + 0x180000, BLK1G + 0x3FFFF000, KVA + 0x40000]


def core(rnd: random.Random):
    """A preset with its own block slicing and ASID width, TLBs small enough to evict, or not."""
    p = load_preset(rnd.choice(PRESETS))
    repl = rnd.choice(["lru", "random"])
    if rnd.random() < 0.3:
        return replace(p, l2=replace(p.l2, replacement=repl))
    return replace(p, asid_bits=rnd.choice([8, 16]),
                   l1i=replace(p.l1i, entries=4, ways=2), l1d=replace(p.l1d, entries=4, ways=4),
                   l2=replace(p.l2, entries=16, ways=4, replacement=repl),
                   walk_cache=replace(p.walk_cache, entries=8, ways=2, replacement=repl))


def build(seed: int, preset, ncpus: int, fast: bool) -> Machine:
    """One machine and its tables, from `seed` alone (the two machines must be equal)."""
    rnd = random.Random(seed)
    m = Machine(ncpus=ncpus, mem_size=16 << 20, core=preset, seed=seed, fast=fast)
    user, kern = UserTables(m.mem, m.frames, "user"), UserTables(m.mem, m.frames, "kernel")
    for va in PAGE_VAS:
        user.map(va, ng=rnd.random() < 0.7)                 # some global user pages
    for i in range(4):
        user.map(CODE + i * 0x1000, ap=0b11, uxn=False, pxn=True)
        kern.map(KVA + i * 0x1000, ng=rnd.random() < 0.3)
    user.leaf_slot(BLK2M)                                    # the L2 table exists
    l2 = m.mem.read64(user.l1 + level_index(BLK2M, 1) * 8) & OA_MASK
    m.mem.write64(l2 + level_index(BLK2M, 2) * 8, block_desc(12 << 20, 2, ap=AP_RW_ALL, uxn=True, pxn=True))
    m.mem.write64(user.l1 + level_index(BLK1G, 1) * 8,
                  block_desc(0, 1, ap=AP_RW_ALL, uxn=True, pxn=True, ng=rnd.random() < 0.5))
    m.test_tables = (user, kern)
    return m


def switch(m: Machine, cpu: int, asid: int) -> None:
    user, kern = m.test_tables
    c = m.cpus[cpu]
    c.msr(SysReg.TTBR1_EL1, make_ttbr(kern.l1, asid))
    c.msr(SysReg.TTBR0_EL1, make_ttbr(user.l1))


def record_removals(m: Machine) -> list:
    """Wrap every leaf TLB's on_remove so that the calls and their order are logged."""
    log = []
    for ci, h in enumerate(m.tlbs):
        for name, t in zip(("itb", "dtb", "l2"), h._leaf_tlbs):
            def on_remove(e, orig=t.on_remove, where=(ci, name)):
                log.append((where, e.__class__.__name__, e.va_base, e.size, e.asid))
                orig(e)
            t.on_remove = on_remove
    return log


def entry(e) -> tuple:
    return (e.__class__.__name__, e.va, e.va_base, e.pa_base, e.size, e.asid, e.refs)


def leaf_state(t) -> dict:
    return {
        "sets": [[(k, entry(e)) for k, e in s.items()] for s in t.sets],
        "by_tag": [(tag, list(d)) for tag, d in t.by_tag.items()],
        "shift_count": list(t.shift_count),
        "shifts": t.shifts, "shifts_is_only_4k": t.shifts is tlb._ONLY_4K,
        "slices": [(sid, list(d)) for sid, d in t.slices.items()],
        "slice_blocks": list(t.slice_blocks.items()),
        "stats": asdict(t.stats),
    }


def walk_state(w) -> dict:
    return {
        "sets": [[(k, asdict(e)) for k, e in s.items()] for s in w.sets],
        "by_asid": [(a, list(d)) for a, d in w.by_asid.items()],
        "level_count": list(w.level_count), "levels": w.levels, "stats": asdict(w.stats),
    }


def state(m: Machine) -> list:
    return [{"itb": leaf_state(c.tlb.itlb), "dtb": leaf_state(c.tlb.dtlb), "l2": leaf_state(c.tlb.l2),
             "walk": walk_state(c.tlb.walk_cache), "lost": c.tlb.lost, "uc_stale": c._uc_stale,
             "cycles": c.cycles, "events": dict(c.events)}
            for c in m.cpus]


class Pair:
    """The same machine twice, Python and compiled, driven by the same calls."""

    def __init__(self, seed: int):
        rnd = random.Random(seed)
        preset, ncpus = core(rnd), rnd.choice([1, 2, 4])
        self.py, self.c = build(seed, preset, ncpus, False), build(seed, preset, ncpus, True)
        assert self.py.invalidate_va is tlb.invalidate_va
        assert isinstance(self.c.invalidate_va, fastpath.Invalidator)
        self.logs = (record_removals(self.py), record_removals(self.c))
        self.rnd = rnd
        self.as16 = preset.asid_bits == 16
        self.asids = rnd.sample(range(1, 256), 3)

    def both(self, fn):
        return fn(self.py), fn(self.c)

    def fill(self, n: int) -> None:
        rnd = self.rnd
        for _ in range(n):
            cpu, asid, va = rnd.randrange(len(self.py.cpus)), rnd.choice(self.asids), rnd.choice(FILL_VAS)
            access = Access.FETCH if CODE <= va < CODE + 0x4000 else rnd.choice([Access.READ, Access.WRITE])
            el = 1 if va >= KVA else rnd.choice([0, 1])
            if access is Access.FETCH:
                el = 0

            def one(m):
                switch(m, cpu, asid)
                return repr(m.cpus[cpu].lookup(va, access, el))
            a, b = self.both(one)
            assert a == b

    def operand(self):
        rnd = self.rnd
        op, va = rnd.choice(BY_VA_OPS + BY_ASID_OPS), rnd.choice(TLBI_VAS) + rnd.randrange(0x1000)
        asid = rnd.choice(self.asids + [rnd.randrange(1 << 16)])
        xt = tlbi_operand(va=va, asid=asid)
        if not self.as16:
            xt |= rnd.randrange(256) << 56             # garbage above an 8-bit ASID
        return op, xt

    def check(self, what: str) -> None:
        assert self.logs[0] == self.logs[1], what
        sp, sc = state(self.py), state(self.c)
        for i, (a, b) in enumerate(zip(sp, sc)):
            for key in a:
                assert a[key] == b[key], f"{what}: cpu{i} {key}"


def scenario(seed: int) -> Pair:
    p = Pair(seed)
    rnd = p.rnd
    p.fill(rnd.randrange(0, 60))
    p.check(f"seed {seed}: after the fills")
    for step in range(12):
        op, xt = p.operand()
        cpu = rnd.randrange(len(p.py.cpus))
        if rnd.random() < 0.7:
            # NSH completes the local effect only: the rest waits for a later DSB ISH/SY,
            # which then reaches the other CPUs alone
            dsb = rnd.choice(["ish", "ish", "sy", "nsh"])
            p.both(lambda m: (m.cpus[cpu].tlbi(op, xt), m.cpus[cpu].dsb(dsb)))
            p.check(f"seed {seed} step {step}: cpu{cpu} TLBI {op.name}, {xt:#x}; DSB {dsb}")
        elif op.by_va:
            va, asid = tlbi_va(xt), tlbi_asid(xt, p.as16)
            a, b = p.both(lambda m: m.invalidate_va(m.tlbs, op, va, asid))
            assert a == b, f"seed {seed} step {step}: invalidate_va({op.name}, {va:#x}, {asid}) returned {a} and {b}"
            p.check(f"seed {seed} step {step}: invalidate_va({op.name}, {va:#x}, {asid})")
        else:
            asid = tlbi_asid(xt, p.as16)
            a, b = p.both(lambda m: m.invalidate_asid(m.tlbs, op, asid))
            assert a == b, f"seed {seed} step {step}: invalidate_asid({op.name}, {asid}) returned {a} and {b}"
            p.check(f"seed {seed} step {step}: invalidate_asid({op.name}, {asid})")
        p.fill(rnd.randrange(0, 8))
    return p


@needs_built
@pytest.mark.parametrize("seed", range(40))
def test_compiled_invalidate_va_matches_python(seed):
    scenario(seed)


@needs_built
def test_scenarios_reach_every_case():
    """The random scenarios above do exercise what the C handles itself and what it hands to
    the Python: removals of 4 KB entries and walk-cache entries, the unrolled 4 KB case and
    the fallbacks (blocks, slices, VAA scope), global entries, kernel VAs."""
    seen = set()
    for seed in range(40):
        p = scenario(seed)
        for c in p.c.cpus:
            for t in c.tlb._leaf_tlbs:
                if t.stats.flushed_entries:
                    seen.add("leaf flushed")
                if t.slice_blocks:
                    seen.add("slices held")
                if any(sh != 12 for sh in t.shifts):
                    seen.add("blocks held")
            if c.tlb.walk_cache.stats.flushed_entries:
                seen.add("walk flushed")
        for where, cls, va_base, size, asid in p.logs[1]:
            seen.add("global removed" if asid is None else "non-global removed")
            if cls == "BlockSlice":
                seen.add("slice removed")
            if size > 0x1000:
                seen.add("block removed")
            if va_base >= KVA:
                seen.add("kernel VA removed")
    assert seen >= {"leaf flushed", "walk flushed", "slices held", "blocks held", "global removed",
                    "non-global removed", "slice removed", "block removed", "kernel VA removed"}, seen


@needs_built
def test_empty_structures_and_unusual_operands():
    """Empty TLBs (every structure skipped), and operands the C hands to the Python whole:
    a VA of 64 bits or more, a negative one, an ASID wider than the tag (no TLBI makes them;
    the Python defines what they do)."""
    p = Pair(1000)
    for op in BY_VA_OPS:
        for va, asid in ((DATA, 5), (KVA, 0xFFFF), (1 << 64 | DATA, 5), (-0x1000, 5), (DATA, 1 << 17 | 5)):
            a, b = p.both(lambda m: m.invalidate_va(m.tlbs, op, va, asid))
            assert a == b == 0
            p.check(f"empty: {op.name} {va:#x} {asid}")
    p.fill(40)
    for op in BY_VA_OPS:
        for va in (1 << 64 | DATA, 1 << 64 | BLK2M, 1 << 70 | KVA):
            a, b = p.both(lambda m: m.invalidate_va(m.tlbs, op, va, p.asids[0]))
            assert a == b
            p.check(f"unusual: {op.name} {va:#x}")


@needs_built
def test_bad_arguments_raise_typed_errors():
    m = Machine(ncpus=1, fast=True)
    with pytest.raises(TypeError):
        m.invalidate_va(m.tlbs, TLBIOp.VAE1IS, DATA)
    with pytest.raises(AttributeError):         # not one of its machine's TLBs: the Python's own error
        m.invalidate_va([object()], TLBIOp.VAE1IS, DATA, 5)


def test_machine_uses_the_compiled_path_by_default_when_built(monkeypatch):
    monkeypatch.delenv(fastpath.PURE_ENV, raising=False)
    m = Machine(ncpus=1)
    if fastpath.built():
        assert m.fast and isinstance(m.invalidate_va, fastpath.Invalidator)
        assert type(m.invalidate_va).__module__ == "emu._fast_tlbi"
    else:
        assert not m.fast and m.invalidate_va is tlb.invalidate_va
    monkeypatch.setenv(fastpath.PURE_ENV, "1")
    m = Machine(ncpus=1)
    assert not m.fast and m.invalidate_va is tlb.invalidate_va
    assert Machine(ncpus=1, fast=False).invalidate_va is tlb.invalidate_va


@needs_built
@pytest.mark.parametrize("order", ["own", "reversed", "other machine", "mixed"])
def test_any_hierarchies_in_any_order(order):
    """A machine's invalidator is given the hierarchies a TLBI reaches: its own in any order
    and number (found by a cursor), or another machine's (those go to the Python whole)."""
    preset = load_preset("cortex-a72")
    py_a, py_b = build(3, preset, 4, False), build(4, preset, 4, False)
    c_a, c_b = build(3, preset, 4, True), build(4, preset, 4, True)
    for m in (py_a, py_b, c_a, c_b):
        for i, cpu in enumerate(m.cpus):
            switch(m, i, 5)
            for va in PAGE_VAS:
                cpu.lookup(va, Access.READ, 0)
    pick = {"own": lambda a, b: a.tlbs, "reversed": lambda a, b: a.tlbs[::-1],
            "other machine": lambda a, b: b.tlbs, "mixed": lambda a, b: [a.tlbs[2], b.tlbs[1], a.tlbs[0]]}[order]
    for va in PAGE_VAS[:4]:
        want = py_a.invalidate_va(pick(py_a, py_b), TLBIOp.VAE1IS, va, 5)
        got = c_a.invalidate_va(pick(c_a, c_b), TLBIOp.VAE1IS, va, 5)
        assert got == want and want > 0
        assert state(c_a) == state(py_a) and state(c_b) == state(py_b)


@needs_built
def test_more_cpus_than_the_stack_holds():
    """(the compiled call keeps up to 16 CPUs' TLBs on the stack, more on the heap)"""
    preset = load_preset("cortex-a72")
    py, c = build(5, preset, 20, False), build(5, preset, 20, True)
    for m in (py, c):
        for i, cpu in enumerate(m.cpus):
            switch(m, i, 7)
            for va in PAGE_VAS[:3]:
                cpu.lookup(va, Access.READ, 0)
    assert py.invalidate_va(py.tlbs, TLBIOp.VAE1IS, PAGE_VAS[1], 7) == c.invalidate_va(c.tlbs, TLBIOp.VAE1IS,
                                                                                        PAGE_VAS[1], 7) > 20
    assert py.invalidate_asid(py.tlbs, TLBIOp.ASIDE1IS, 7) == c.invalidate_asid(c.tlbs, TLBIOp.ASIDE1IS, 7) > 20
    assert state(c) == state(py)
