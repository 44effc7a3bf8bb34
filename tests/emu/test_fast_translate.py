"""The compiled translation (emu/_fast_translate.c: Translator and FillHook) against the
Python closure it mirrors (Cpu._build_translate / _build_fill_hook), step by step.

Two machines are built the same way, one with the compiled paths and one without, and
driven by the same random steps: lookups of every access kind at EL0 and EL1 (user pages,
read-only, global, access-flag-clear and unmapped ones, 2 MB and 1 GB blocks, kernel VAs,
tagged VAs, the VA hole, a page with no memory behind it), guest loads, stores and
branches through Unicorn, ASID and address-space switches, TBI and EPD0 flips, TLBIs,
entries marked stale with a checker listening, and a walk observer. After every step the
whole model state must be the same: what the step returned, every set of every TLB and
the walk cache in LRU order, the per-ASID indexes, the size counts, every statistic, each
CPU's clocks and counters, and which entries Unicorn was handed.

Tiny TLBs (two-way L1s, an 8-entry L2) make evictions constant; every core preset (its
block slicing), LRU and random replacement, 8- and 16-bit ASIDs."""
from __future__ import annotations

import gc
import random
import weakref
from dataclasses import asdict, fields

import pytest

from emu import fastpath
from emu.checker import Checker
from emu.cpu import StopKind
from emu.descriptors import AP_RO_ALL, AP_RW_ALL, block_desc, level_index, page_desc
from emu.frames import FrameKind
from emu.machine import Machine
from emu.sysregs import SysReg, make_ttbr
from emu.tlb import BlockSlice
from emu.tlbi import TLBIOp, tlbi_operand
from emu.walker import Access, Fault, Translation
from guest.asm import assemble

from .tables import Tables
from .test_tlb_properties import PRESETS, small_core

pytestmark = pytest.mark.skipif(not fastpath.built(), reason="compiled fast paths not built")

CODE = 0x400000
KCODE = 0x600000
DATA = 0x1000000
BLK2M = 0x4000000
BLK1G = 0x40000000
NOMEM = 0x1800000            # mapped to a PA with no memory behind it (a bus error)
KVA = 0xFFFF_FF80_0010_0000  # a kernel (TTBR1) VA: a global page of the kernel tables
ASIDS = (3, 4, 200)
TCR_TBI0, TCR_EPD0 = 1 << 37, 1 << 7
NPAGES = 12
PAGE_KINDS = ("rw", "ro", "global", "noaf", "unmapped")
VAS = ([DATA + i * 0x1000 + off for i in range(NPAGES) for off in (0, 0x804)]
       + [BLK2M, BLK2M + 0x123000, BLK1G + 0x5000, NOMEM, KVA, KVA + 0x1000, 0x0000_8000_0000_0000 | 0x1000])
PROGRAMS = {"load": "_start:\n ldr x1, [x0]\n svc #0\n", "store": "_start:\n str x2, [x0]\n svc #0\n",
            "jump": "_start:\n br x0\n",
            # a data access, then a fetch of the same page: the fetch must reach the ITLB (the
            # data fill gave Unicorn no execute right)
            "load_jump": "_start:\n ldr x1, [x0]\n br x0\n"}


class Recorder:
    """Checker and walk observer: records what the model reports, in order (ids made canonical
    by the snapshot, so the two machines' records compare)."""

    def __init__(self):
        self.calls = []

    def stale_use(self, cpu, va, e, access, el):
        self.calls.append(("stale", cpu.index, va, e, access, el))

    def sysreg_written(self, cpu):
        self.calls.append(("sysreg", cpu.index))

    def walk(self, cpu, va, r, speculative):
        self.calls.append(("walk", cpu.index, va, r, speculative))


class Side:
    """One of the two machines, with its tables and programs."""

    def __init__(self, fast: bool, core, seed: int):
        self.m = Machine(ncpus=2, mem_size=16 << 20, core=core, seed=seed, fast=fast)
        self.rec = Recorder()
        self.m.walk_observers.append(self.rec.walk)
        self.spaces = [Tables(self.m, owner=f"as{i}") for i in range(2)]
        self.kernel = Tables(self.m, owner="kernel")
        for t in self.spaces:
            for name, src in PROGRAMS.items():
                base = CODE + 0x1000 * list(PROGRAMS).index(name)
                t.map_code(base, assemble(src, base).code)
                t.map_code(base + KCODE - CODE, assemble(src, base + KCODE - CODE).code, el=1)
        kpa = self.m.frames.alloc(FrameKind.KERNEL, "kernel")
        self.kernel.mem.write64(self.kernel.leaf_slot(KVA), page_desc(kpa, ng=False, uxn=True))
        self.kernel.mem.write64(self.kernel.leaf_slot(KVA + 0x1000), page_desc(kpa, ng=False, uxn=True, ap=AP_RO_ALL))
        for c in self.m.cpus:
            self.switch(c.index, 0, ASIDS[0])

    def switch(self, i, space, asid):
        c = self.m.cpus[i]
        c.msr(SysReg.TTBR1_EL1, make_ttbr(self.kernel.l1, asid))
        c.msr(SysReg.TTBR0_EL1, make_ttbr(self.spaces[space].l1))

    def set_page(self, space, i, kind):
        t = self.spaces[space]
        va = DATA + i * 0x1000
        slot = t.leaf_slot(va)
        old = self.m.mem.read64(slot)
        pa = old & 0xFFFF_FFFF_F000 if old & 1 else self.m.frames.alloc(FrameKind.USER, t.owner)
        self.m.mem.write64(pa, 0x1000 * space + i)     # what a load of the page's first word reads
        d = {"rw": page_desc(pa), "ro": page_desc(pa, ap=AP_RO_ALL), "global": page_desc(pa, ng=False),
             "noaf": page_desc(pa, af=False), "unmapped": 0}[kind]
        self.m.mem.write64(slot, d)

    def map_blocks(self, space):
        t = self.spaces[space]
        t.leaf_slot(DATA)                               # the L2 table exists
        l2 = self.m.mem.read64(t.l1 + level_index(DATA, 1) * 8) & 0xFFFF_FFFF_F000
        self.m.mem.write64(l2 + level_index(BLK2M, 2) * 8,
                           block_desc((10 + 2 * space) << 20, 2, ap=AP_RW_ALL, uxn=True, pxn=True))
        self.m.mem.write64(t.l1 + level_index(BLK1G, 1) * 8, block_desc(0, 1, ap=AP_RO_ALL, uxn=True, pxn=True))
        t.mem.write64(t.leaf_slot(NOMEM), page_desc(1 << 30))      # PA 1 GB: beyond the 16 MB


def entry_fields(e) -> tuple:
    b = e.block if e.__class__ is BlockSlice else None
    return (e.__class__.__name__, tuple(getattr(e, f.name) for f in fields(Translation)),
            None if b is None else tuple(getattr(b, f.name) for f in fields(Translation)))


def snapshot(side: Side, result=None) -> dict:
    """The whole model state, entries named by order of first appearance (identity shared
    between structures is part of the state: an entry in L1 and L2 is one object)."""
    names: dict[int, int] = {}

    def name(e):
        if e is None:
            return None
        n = names.setdefault(id(e), len(names))
        return (n, entry_fields(e))

    def value(r):
        if isinstance(r, Fault):
            return ("fault", r.kind, r.level, r.va, r.access, r.el, r.reads)
        if isinstance(r, Translation):
            return name(r)
        if isinstance(r, tuple):
            return tuple(value(x) for x in r)
        if hasattr(r, "__dataclass_fields__") and hasattr(r, "kind"):       # a Stop
            return tuple(value(getattr(r, f.name)) for f in fields(r))
        return r

    out = {"result": value(result)}
    for c in side.m.cpus:
        tl = c.tlb
        cpu = {"clock": (c.cycles, c.walks, c.walk_reads, c.spec_walks, c.faults, c.insns, c.el, dict(c.events)),
               "ring": (list(c.recent), c._recent_i), "flags": (c._uc_stale, tl.lost),
               "holds": sorted(name(e)[0] for e in c._uc_holds.values())}
        for t in (tl.itlb, tl.dtlb, tl.l2):
            cpu[t.name] = ([[(k, name(e)) for k, e in s.items()] for s in t.sets],
                           {tag: list(d) for tag, d in t.by_tag.items()}, list(t.shift_count), t.shifts,
                           asdict(t.stats), {sid: list(d) for sid, d in t.slices.items()}, dict(t.slice_blocks))
        w = tl.walk_cache
        cpu["walk"] = ([[(k, asdict(we)) for k, we in s.items()] for s in w.sets],
                       {a: list(d) for a, d in w.by_asid.items()}, list(w.level_count), w.levels, asdict(w.stats))
        out[f"cpu{c.index}"] = cpu
    out["records"] = [tuple(value(x) for x in call) for call in side.rec.calls]
    side.rec.calls.clear()
    return out


def step(side: Side, rng: random.Random):
    """One random step (the same rng state gives the same step on both sides)."""
    m = side.m
    what = rng.choice(("lookup", "lookup", "lookup", "lookup", "guest", "guest", "switch", "page", "tcr",
                       "tlbi", "stale", "el"))
    ci = rng.randrange(2)
    c = m.cpus[ci]
    if what == "lookup":
        va = rng.choice(VAS)
        if c.regime.tcr.tbi0 and va >> 48 == 0 and rng.random() < 0.5:
            va |= rng.randrange(1, 256) << 56
        return c.lookup(va, Access(rng.randrange(3)), rng.randrange(2))
    if what == "guest":
        prog = rng.choice(list(PROGRAMS))
        base = CODE + 0x1000 * list(PROGRAMS).index(prog) + (KCODE - CODE if c.el == 1 else 0)
        c.set_reg(0, rng.choice(VAS + [CODE, CODE + 0x1000, 0xDEAD000]))
        c.set_reg(2, rng.randrange(1 << 32))
        stop = c.run(8, pc=base)
        assert stop.kind in (StopKind.SVC, StopKind.FAULT, StopKind.BUS_ERROR, StopKind.QUANTUM, StopKind.UNDEF), stop
        return stop, c.reg(1)
    if what == "switch":
        side.switch(ci, rng.randrange(2), rng.choice(ASIDS))
    elif what == "page":
        side.set_page(rng.randrange(2), rng.randrange(NPAGES), rng.choice(PAGE_KINDS))
    elif what == "tcr":
        bits = rng.choice((0, TCR_TBI0, TCR_EPD0 if rng.random() < 0.3 else 0))
        c.msr(SysReg.TCR_EL1, (c.tcr & ~(TCR_TBI0 | TCR_EPD0)) | bits)
    elif what == "tlbi":
        op = rng.choice(list(TLBIOp))
        c.tlbi(op, tlbi_operand(va=rng.choice(VAS) & 0x00FF_FFFF_FFFF_FFFF, asid=rng.choice(ASIDS)))
        c.dsb(rng.choice(("ish", "ish", "nsh")))
    elif what == "stale":
        # the checker's mark on a frame that changed owner; with the checker listening or not
        m.checker = side.rec if rng.random() < 0.7 else None
        held = c.tlb.entries()
        if held:
            held.sort(key=lambda e: (e.va_base, e.size, e.asid or -1))
            rng.choice(held).stale = True
    elif what == "el":
        c.set_el(rng.randrange(2))
    return None


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("replacement", ["lru", "random"])
def test_compiled_translation_steps_like_the_python(preset, replacement):
    core = small_core(preset, asid8=replacement == "random", replacement=replacement)
    sides = [Side(fast, core, seed=5) for fast in (False, True)]
    assert not sides[0].m.fast and sides[1].m.fast
    for s in sides:
        for space in range(2):
            s.map_blocks(space)
            for i in range(NPAGES):
                s.set_page(space, i, PAGE_KINDS[i % len(PAGE_KINDS)])
    rngs = [random.Random(f"{preset}/{replacement}") for _ in sides]
    for n in range(400):
        results = [step(s, r) for s, r in zip(sides, rngs)]
        want, got = (snapshot(s, r) for s, r in zip(sides, results))
        assert got == want, f"step {n}: the compiled translation diverged from the Python"


def test_a_hook_exception_surfaces_from_the_compiled_fill_hook():
    """An exception inside the fill hook (here a walk observer's) stops the run and is
    raised by Cpu.run, in both modes, as the binding does for its own hooks."""
    for fast in (False, True):
        s = Side(fast, small_core("cortex-a72", False, "lru"), seed=1)
        s.set_page(0, 0, "rw")

        def boom(cpu, va, r, speculative):
            raise ZeroDivisionError("observer failed")
        s.m.walk_observers.append(boom)
        c = s.m.cpus[0]
        c.set_el(0)
        c.set_reg(0, DATA)
        with pytest.raises(ZeroDivisionError, match="observer failed"):
            c.run(8, pc=CODE)


@pytest.mark.parametrize("fast", [False, True], ids=["python", "compiled"])
def test_a_machine_with_a_checker_is_freed(fast):
    """The hazard checker and the machine refer to each other (its walk observer, machine.
    checker): the collector must free them once the run is over, or every seed of `armmu
    check` keeps its machine (16 MB of memory and two Unicorn instances here). The compiled
    objects must report every reference they hold for that."""
    s = Side(fast, small_core("cortex-a72", False, "lru"), seed=1)
    Checker(s.m)
    s.set_page(0, 0, "rw")
    c = s.m.cpus[0]
    c.set_el(0)
    c.set_reg(0, DATA)
    assert c.run(8, pc=CODE).kind is StopKind.SVC
    c.tlbi(TLBIOp.VAE1IS, tlbi_operand(va=DATA, asid=ASIDS[0]))
    c.tlbi(TLBIOp.ASIDE1IS, tlbi_operand(asid=ASIDS[0]))
    c.dsb("ish")
    ref = weakref.ref(s.m)
    del s, c
    gc.collect()
    assert ref() is None
