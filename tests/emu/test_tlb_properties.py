"""Stateful property tests: random fills, guest accesses, table edits, TLBIs and TTBR
writes on a small two-CPU machine, checking after every step that

- a TLB entry always matches what the page tables held when it was filled;
- after a completed TLBI nothing in its scope remains on any CPU it reaches;
- Unicorn never uses a translation the model does not hold: every guest data access
  (seen by a memory hook, which reports physical addresses) lands in a frame that some
  entry of the model, usable with the current ASID, maps.
"""
import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE

from emu.cores import load_preset
from emu.cpu import StopKind
from emu.frames import FrameKind
from emu.descriptors import AP_RO_ALL, AP_RW_ALL, page_desc
from emu.machine import Machine
from emu.sysregs import SysReg, make_ttbr
from emu.tlbi import Scope, TLBIOp, tlbi_operand
from emu.walker import Access, Fault
from guest.asm import assemble

from .tables import Tables

CODE = 0x400000
DATA = 0x1000000
NPAGES = 12
ASIDS = (3, 4)
VAS = [DATA + i * 0x1000 for i in range(NPAGES)]


def small_core():
    """An A72 with tiny TLBs so that evictions happen all the time."""
    from dataclasses import replace
    p = load_preset("cortex-a72")
    return replace(p, l1i=replace(p.l1i, entries=2, ways=2), l1d=replace(p.l1d, entries=2, ways=2),
                   l2=replace(p.l2, entries=8, ways=2), walk_cache=replace(p.walk_cache, entries=4, ways=2))


class TLBMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.m = Machine(ncpus=2, mem_size=8 << 20, core=small_core(), seed=1)
        # two address spaces over the same VAs, with disjoint frames
        self.spaces = [Tables(self.m, owner=f"as{i}") for i in range(2)]
        prog = assemble("_start:\n ldr x1, [x0]\n svc #0\n", CODE)
        for t in self.spaces:
            t.map_code(CODE, prog.code)
        self.slots = {}                       # (space, va) -> slot PA
        self.history = {}                     # slot PA -> [(time, value)]
        self.time = 0
        for si, t in enumerate(self.spaces):
            for va in VAS:
                self._write(t, va, page_desc(self.m.frames.alloc(FrameKind.USER, t.owner),
                                             ap=AP_RW_ALL, uxn=True, pxn=True))
        self.cur = [None, None]               # (space, asid) per CPU
        for i, cpu in enumerate(self.m.cpus):
            self._switch(i, 0, ASIDS[0])
            cpu.set_el(0)
            cpu.uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, self._mem_hook, cpu)
        self.bad_access = None
        self.filled = {}                      # id(entry) -> (entry, logical time of its fill)
        self.m.walk_observers.append(self._on_walk)

    # -- helpers
    def _write(self, t, va, value):
        slot = t.leaf_slot(va)
        self.slots[(t.owner, va)] = slot
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

    # -- rules
    @rule(cpu=st.integers(0, 1), va=st.sampled_from(VAS), write=st.booleans())
    def fill(self, cpu, va, write):
        c = self.m.cpus[cpu]
        r = c.lookup(va, Access.WRITE if write else Access.READ, 0)
        if r.__class__ is not Fault:
            assert r.va_base <= va < r.va_base + r.size
            assert r.asid is None or r.asid == c.asid
        self.time += 1

    @rule(cpu=st.integers(0, 1), va=st.sampled_from(VAS))
    def guest_load(self, cpu, va):
        c = self.m.cpus[cpu]
        c.set_reg(0, va)
        stop = c.run(10, pc=CODE)
        assert stop.kind in (StopKind.SVC, StopKind.FAULT)
        assert self.bad_access is None, f"Unicorn used a translation the model does not hold: {self.bad_access}"
        self.time += 1

    @rule(space=st.integers(0, 1), va=st.sampled_from(VAS), kind=st.sampled_from(["unmap", "ro", "rw"]))
    def edit_table(self, space, va, kind):
        t = self.spaces[space]
        old = self.m.mem.read64(t.leaf_slot(va))
        pa = old & 0xFFFF_FFFF_F000 if old & 1 else self.m.frames.alloc(
            FrameKind.USER, t.owner)
        new = 0 if kind == "unmap" else page_desc(pa, ap=AP_RO_ALL if kind == "ro" else AP_RW_ALL,
                                                   uxn=True, pxn=True)
        self._write(t, va, new)

    @rule(cpu=st.integers(0, 1), op=st.sampled_from(list(TLBIOp)), va=st.sampled_from(VAS),
          asid=st.sampled_from(ASIDS))
    def tlbi(self, cpu, op, va, asid):
        c = self.m.cpus[cpu]
        c.tlbi(op, tlbi_operand(va=va, asid=asid))
        c.dsb("ish")
        targets = self.m.cpus if op.broadcast else [c]
        for other in targets:
            for e in other.tlb.entries():
                in_scope = (op.scope is Scope.ALL
                            or (op.scope is Scope.ASID and e.asid == asid)
                            or (op.scope is Scope.VA and e.va_base <= va < e.va_base + e.size
                                and (e.asid is None or e.asid == asid))
                            or (op.scope is Scope.VAA and e.va_base <= va < e.va_base + e.size))
                assert not in_scope, f"{op.name} left {e} on cpu{other.index}"
            if not op.last_level:
                for w in other.tlb.walk_cache:
                    covers = w.va_base <= va < w.va_base + (1 << (12 + 9 * (4 - w.level)))
                    assert not (op.scope is Scope.ALL or (op.scope is Scope.ASID and w.asid == asid)
                                or (op.scope is Scope.VA and covers and w.asid == asid)
                                or (op.scope is Scope.VAA and covers))
        self.time += 1

    @rule(cpu=st.integers(0, 1), space=st.integers(0, 1), asid=st.sampled_from(ASIDS))
    def ttbr_write(self, cpu, space, asid):
        before = len(self.m.cpus[cpu].tlb.entries())
        self._switch(cpu, space, asid)
        assert len(self.m.cpus[cpu].tlb.entries()) == before      # a TTBR write invalidates nothing
        self.time += 1

    # -- invariants
    @invariant()
    def entries_match_tables_at_fill_time(self):
        for cpu in self.m.cpus:
            for e in cpu.tlb.entries():
                if e.va_base < DATA:
                    continue
                held = self._value_at(e.desc_pa, self.filled[id(e)][1])
                assert held == e.desc, (f"cpu{cpu.index} entry for {e.va_base:#x} holds {e.desc:#x} but the "
                                        f"table held {held:#x} when it was filled")


TestTLBStateful = TLBMachine.TestCase
TestTLBStateful.settings = settings(max_examples=200, stateful_step_count=50, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])
