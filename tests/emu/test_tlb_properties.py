"""Stateful property tests: random fills, guest accesses at EL0 and EL1, table edits (pages,
2 MB and 1 GB blocks), TLBIs one at a time and in batches, TTBR and TCR writes (TBI on and
off, tagged VAs) on a small two-CPU machine built on every core preset (its block slicing,
8- or 16-bit ASIDs), with these invariants after every step:

- a TLB entry always matches what the page tables held when it was filled;
- no entry holds a tagged or non-canonical VA; slices lie inside their block;
- each structure's indexes agree with its sets;
- a completed TLBI removed exactly the entries in its scope (a slice counts with its whole
  block) on every CPU it reaches, and nothing else anywhere (the least the architecture
  guarantees); a TTBR write invalidates nothing;
- Unicorn never uses a translation the model does not hold: every guest data access (seen
  by a memory hook, which reports physical addresses) lands in a frame that some entry of
  the model, usable with the current ASID, maps.
"""
from dataclasses import replace

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE

from emu.cores import load_preset
from emu.cpu import StopKind
from emu.descriptors import AP_RO_ALL, AP_RW_ALL, OA_MASK, block_desc, level_index, page_desc, table_desc
from emu.frames import FrameKind
from emu.machine import Machine
from emu.sysregs import SysReg, make_ttbr
from emu.tlb import BlockSlice
from emu.tlbi import Scope, TLBIOp, tlbi_operand
from emu.walker import Access, Fault
from guest.asm import assemble

from .tables import Tables

PRESETS = ("cortex-a53", "cortex-a72", "cortex-a76", "neoverse-n1")
CODE = 0x400000               # EL0 code
KCODE = 0x600000              # EL1 code
DATA = 0x1000000
BLK2M = 0x4000000             # a 2 MB block (L2 index 32)
BLK1G = 0x40000000            # a 1 GB block (L1 index 1), onto PA 0: read-only
BLOCK_PA = (12 << 20, 14 << 20)   # each space's 2 MB block frame range
NPAGES = 8
ASIDS = (3, 4)
VAS = ([DATA + i * 0x1000 for i in range(NPAGES)]
       + [BLK2M + off for off in (0, 0x1000, 0x100000, 0x1FF000)]
       + [BLK1G + off for off in (0, 0x3000, 0x200000, 0x2000000, 0x20000000)])
TCR_TBI0 = 1 << 37


def small_core(name, asid8, replacement):
    """The preset with tiny TLBs (evictions all the time) and its own block slicing."""
    p = load_preset(name)
    return replace(p, asid_bits=8 if asid8 else p.asid_bits,
                   l1i=replace(p.l1i, entries=2, ways=2), l1d=replace(p.l1d, entries=2, ways=2),
                   l2=replace(p.l2, entries=8, ways=2, replacement=replacement),
                   walk_cache=replace(p.walk_cache, entries=4, ways=2, replacement=replacement))


def block_of(e):
    return e.block if e.__class__ is BlockSlice else e


def leaf_in_scope(e, op, va, asid):
    b = block_of(e)
    covers = b.va_base <= va < b.va_base + b.size
    scope = op.scope
    return (scope is Scope.ALL or (scope is Scope.ASID and e.asid == asid)
            or (scope is Scope.VA and covers and (e.asid is None or e.asid == asid))
            or (scope is Scope.VAA and covers))


def table_in_scope(w, op, va, asid):
    if op.last_level:
        return False
    covers = w.va_base <= va < w.va_base + (1 << (12 + 9 * (4 - w.level)))
    scope = op.scope
    return (scope is Scope.ALL or (scope is Scope.ASID and w.asid == asid)
            or (scope is Scope.VA and covers and w.asid == asid) or (scope is Scope.VAA and covers))


class TLBMachine(RuleBasedStateMachine):
    @initialize(preset=st.sampled_from(PRESETS), asid8=st.booleans(), replacement=st.sampled_from(["lru", "random"]))
    def build(self, preset, asid8, replacement):
        self.m = Machine(ncpus=2, mem_size=16 << 20, core=small_core(preset, asid8, replacement), seed=1)
        self.as16 = not asid8
        # two address spaces over the same VAs, with disjoint frames (the 1 GB block is shared)
        self.spaces = [Tables(self.m, owner=f"as{i}") for i in range(2)]
        prog = assemble("_start:\n ldr x1, [x0]\n svc #0\n", CODE)
        kprog = assemble("_start:\n ldr x1, [x0]\n svc #0\n", KCODE)
        for t in self.spaces:
            t.map_code(CODE, prog.code)
            t.map_code(KCODE, kprog.code, el=1)
        self.history = {}                     # descriptor slot PA -> [(time, value)]
        self.time = 0
        for si, t in enumerate(self.spaces):
            for va in VAS:
                self._write(t, va, self._desc(si, t, va, "rw"))
        assert max(self.m.frames._info) << 12 < BLOCK_PA[0]
        self.cur = [None, None]               # (space, asid) per CPU
        for i, cpu in enumerate(self.m.cpus):
            self._switch(i, 0, ASIDS[0])
            cpu.set_el(0)
            cpu.uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, self._mem_hook, cpu)
        self.bad_access = None
        self.filled = {}                      # id(entry) -> (entry, logical time of its fill)
        self.m.walk_observers.append(self._on_walk)
        self.expect = None                    # what the last TLBI or TTBR write must have left

    # -- helpers
    def _slot(self, t, va):
        """PA of the descriptor that maps va: L1 (1 GB block), L2 (2 MB block) or L3."""
        if BLK1G <= va < BLK1G + (1 << 30):
            return t.l1 + level_index(va, 1) * 8
        if BLK2M <= va < BLK2M + (2 << 20):
            t.leaf_slot(DATA)                                   # the L2 table exists
            l2 = self.m.mem.read64(t.l1 + level_index(va, 1) * 8) & OA_MASK
            return l2 + level_index(va, 2) * 8
        return t.leaf_slot(va)

    def _desc(self, si, t, va, kind):
        if kind == "unmap":
            return 0
        ap = AP_RO_ALL if kind == "ro" else AP_RW_ALL
        if BLK1G <= va < BLK1G + (1 << 30):
            return block_desc(0, 1, ap=AP_RO_ALL, uxn=True, pxn=True)
        if BLK2M <= va < BLK2M + (2 << 20):
            return block_desc(BLOCK_PA[si], 2, ap=ap, uxn=True, pxn=True)
        old = self.m.mem.read64(t.leaf_slot(va))
        pa = old & OA_MASK if old & 1 else self.m.frames.alloc(FrameKind.USER, t.owner)
        return page_desc(pa, ap=ap, uxn=True, pxn=True)

    def _write(self, t, va, value):
        slot = self._slot(t, va)
        self.time += 1
        self.history.setdefault(slot, []).append((self.time, value))
        self.m.mem.write64(slot, value)

    def _value_at(self, slot, time):
        v = 0
        for t, val in self.history.get(slot, ()):
            if t <= time:
                v = val
        return v

    def _switch(self, cpu_i, space, asid):
        cpu = self.m.cpus[cpu_i]
        cpu.msr(SysReg.TTBR1_EL1, make_ttbr(0, asid))
        cpu.msr(SysReg.TTBR0_EL1, make_ttbr(self.spaces[space].l1))
        self.cur[cpu_i] = (space, asid)

    def _on_walk(self, cpu, va, r, speculative):
        if r.__class__ is not Fault:
            self.filled[id(r)] = (r, self.time)     # keeps r alive, so ids are not reused

    def _mem_hook(self, uc, access, pa, size, value, cpu):
        frame = pa & ~0xFFF
        usable = [e for e in cpu.tlb.entries() if (e.asid is None or e.asid == cpu.asid)
                  and e.pa_base <= frame < e.pa_base + e.size]
        if not usable:
            self.bad_access = (cpu.index, hex(pa))

    def _tagged(self, cpu, va, tag):
        return va | tag << 56 if cpu.regime.tcr.tbi0 else va

    def _held(self):
        """Per CPU and structure, the entries held (by identity)."""
        return [{name: {id(e): e for e in t} for name, t in
                 (("itb", c.tlb.itlb), ("dtb", c.tlb.dtlb), ("l2", c.tlb.l2), ("walk", c.tlb.walk_cache))}
                for c in self.m.cpus]

    def _operand(self, op, va, asid, garbage):
        xt = tlbi_operand(va=va, asid=asid)
        return xt | garbage << 56 if not self.as16 and op.scope in (Scope.VA, Scope.ASID) else xt

    # -- rules
    @rule(cpu=st.integers(0, 1), va=st.sampled_from(VAS), write=st.booleans(), el=st.integers(0, 1),
          tag=st.integers(0, 255))
    def fill(self, cpu, va, write, el, tag):
        c = self.m.cpus[cpu]
        r = c.lookup(self._tagged(c, va, tag), Access.WRITE if write else Access.READ, el)
        if r.__class__ is not Fault:
            assert r.va_base <= va < r.va_base + r.size
            assert r.asid is None or r.asid == c.asid
        self.time += 1

    @rule(cpu=st.integers(0, 1), va=st.sampled_from(VAS), tag=st.integers(0, 255))
    def guest_load(self, cpu, va, tag):
        c = self.m.cpus[cpu]
        c.set_reg(0, self._tagged(c, va, tag))
        stop = c.run(10, pc=KCODE if c.el == 1 else CODE)
        assert stop.kind in (StopKind.SVC, StopKind.FAULT, StopKind.BUS_ERROR), stop
        self.time += 1

    @rule(cpu=st.integers(0, 1), el=st.integers(0, 1))
    def switch_el(self, cpu, el):
        self.m.cpus[cpu].set_el(el)

    @rule(cpu=st.integers(0, 1), on=st.booleans())
    def tbi(self, cpu, on):
        c = self.m.cpus[cpu]
        c.msr(SysReg.TCR_EL1, c.tcr | TCR_TBI0 if on else c.tcr & ~TCR_TBI0)

    @rule(space=st.integers(0, 1), va=st.sampled_from(VAS), kind=st.sampled_from(["unmap", "ro", "rw"]))
    def edit_table(self, space, va, kind):
        t = self.spaces[space]
        self._write(t, va, self._desc(space, t, va, kind))

    @rule(cpu=st.integers(0, 1), op=st.sampled_from(list(TLBIOp)), va=st.sampled_from(VAS),
          asid=st.sampled_from(ASIDS), garbage=st.integers(0, 255))
    def tlbi(self, cpu, op, va, asid, garbage):
        c = self.m.cpus[cpu]
        held = self._held()
        c.tlbi(op, self._operand(op, va, asid, garbage))
        c.dsb("ish")
        self.expect = ("tlbi", held, [(op, va, asid, self.m.cpus if op.broadcast else [c])])
        self.time += 1

    @rule(cpu=st.integers(0, 1), ops=st.lists(st.tuples(st.sampled_from(list(TLBIOp)), st.sampled_from(VAS),
                                                       st.sampled_from(ASIDS)), min_size=1, max_size=4))
    def tlbi_batch(self, cpu, ops):
        c = self.m.cpus[cpu]
        held = self._held()
        c.tlbi_flush_batch([(op, self._operand(op, va, asid, 0)) for op, va, asid in ops])
        self.expect = ("tlbi", held, [(op, va, asid, self.m.cpus if op.broadcast else [c]) for op, va, asid in ops])
        self.time += 1

    @rule(cpu=st.integers(0, 1), space=st.integers(0, 1), asid=st.sampled_from(ASIDS))
    def ttbr_write(self, cpu, space, asid):
        held = self._held()
        self._switch(cpu, space, asid)
        self.expect = ("ttbr", held, [])
        self.time += 1

    # -- invariants
    @invariant()
    def entries_match_tables_at_fill_time(self):
        for cpu in self.m.cpus:
            for e in cpu.tlb.entries():
                if e.va_base < DATA:
                    continue
                held = self._value_at(e.desc_pa, self.filled[id(block_of(e))][1])
                assert held == e.desc, (f"cpu{cpu.index} entry for {e.va_base:#x} holds {e.desc:#x} but the "
                                        f"table held {held:#x} when it was filled")

    @invariant()
    def entries_are_untagged_and_slices_inside_their_block(self):
        for cpu in self.m.cpus:
            for t in (cpu.tlb.itlb, cpu.tlb.dtlb, cpu.tlb.l2):
                for e in t:
                    assert e.va_base >> 56 in (0, 0xFF) and (e.va_base >> 55 & 1) == (e.va_base >> 63), hex(e.va_base)
                    assert (e.asid is None) == (not e.ng)
                    assert e.size <= 1 << t.max_block_shift
                    b = block_of(e)
                    assert b.va_base <= e.va_base and e.va_base + e.size <= b.va_base + b.size
                    assert e.pa_base - b.pa_base == e.va_base - b.va_base
            for w in cpu.tlb.walk_cache:
                assert w.va_base >> 56 in (0, 0xFF)

    @invariant()
    def indexes_agree_with_sets(self):
        for cpu in self.m.cpus:
            for t in (cpu.tlb.itlb, cpu.tlb.dtlb, cpu.tlb.l2):
                keys = {k for s in t.sets for k in s}
                assert keys == {k for d in t.by_tag.values() for k in d} and all(t.by_tag.values())
                sizes = sorted({(k >> 17) & 63 for k in keys})
                assert list(t.shifts) == sizes
                assert {k for d in t.slices.values() for k in d} == \
                    {k for s in t.sets for k, e in s.items() if e.__class__ is BlockSlice}
                assert all(len(s) <= t.ways for s in t.sets)
            w = cpu.tlb.walk_cache
            keys = {k for s in w.sets for k in s}
            assert keys == {k for d in w.by_asid.values() for k in d}
            assert set(w.levels) == {(k >> 17) & 63 for k in keys}

    @invariant()
    def maintenance_removed_exactly_its_scope(self):
        if self.expect is None:
            return
        kind, before, ops = self.expect
        self.expect = None
        after = self._held()
        for ci, cpu in enumerate(self.m.cpus):
            for name in ("itb", "dtb", "l2", "walk"):
                gone = set(before[ci][name]) - set(after[ci][name])
                assert set(after[ci][name]) <= set(before[ci][name]), f"{kind} filled cpu{ci} {name}"
                in_scope = (leaf_in_scope if name != "walk" else table_in_scope)
                want = {i for i, e in before[ci][name].items()
                        if any(cpu in targets and in_scope(e, op, va, asid) for op, va, asid, targets in ops)}
                assert gone == want, (f"{kind} {[(o.name, hex(v), a) for o, v, a, _ in ops]} on cpu{ci} {name}: "
                                      f"removed {len(gone)}, in scope {len(want)}")

    @invariant()
    def unicorn_uses_only_model_translations(self):
        assert self.bad_access is None, f"Unicorn used a translation the model does not hold: {self.bad_access}"


TestTLBStateful = TLBMachine.TestCase
TestTLBStateful.settings = settings(max_examples=150, stateful_step_count=50, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])
