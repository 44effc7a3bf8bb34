"""One CPU: a Unicorn instance in virtual-TLB mode whose every translation is served
by our TLB model (docs/hardware.md; docs/unicorn.md).

Unicorn's own TLB is only a cache of the model's: the fill hook asks the model (hit, or
walk and fill) and Unicorn's TLB is flushed whenever the model loses an entry
(eviction, TLBI) or the ASID/tables in use change, so Unicorn never translates with
something the model does not hold.

The same entry points serve guest instructions (trapped through Unicorn's SYS/MSR
hooks and code hooks on barriers) and the OS layer calling from Python: msr(), tlbi(),
dsb(), isb(). Everything is counted and costed on this CPU's cycle clock.
"""
from __future__ import annotations

import ctypes
import random
from collections import Counter
from dataclasses import dataclass
from enum import Enum

from unicorn import (UC_ARCH_ARM64, UC_ERR_EXCEPTION, UC_ERR_FETCH_UNMAPPED, UC_ERR_READ_UNMAPPED,
                     UC_ERR_WRITE_UNMAPPED, UC_HOOK_CODE, UC_HOOK_INSN, UC_HOOK_INTR,
                     UC_HOOK_MEM_WRITE, UC_HOOK_TLB_FILL, UC_MODE_ARM, UC_PROT_ALL, UC_PROT_EXEC,
                     UC_TLB_VIRTUAL, Uc, UcError)
import numpy as np
from unicorn import arm64_const as A

from .sysregs import SCTLR_M, SysReg, openbsd_tcr
from .tlb import SetAssocTLB, TLBHierarchy, TLBIRun, WalkCache
from .tlbi import Scope, TLBIOp, dsb_option, tlbi_asid, tlbi_va
from .trace import Ev
from .walker import Access, Fault, FaultKind, Regime, Translation, walk, walk_l3

# emu_start's `until`: a VA in the hole between the ranges, never a real instruction.
# Unicorn translates the page of until-1 when emulation ends (docs/unicorn.md §Setup).
SENTINEL = 0x0001_0000_0000_0000
SENTINEL_PAGE = (SENTINEL - 1) & ~0xFFF

_UC_TLB_FLUSH = (1 << 30) | 11        # UC_CTL_TLB_FLUSH | UC_CTL_IO_WRITE for the raw uc_ctl call

# Speculative walks per 1000 cycles for each speculation setting.
SPECULATION_RATES = {"off": 0.0, "default": 1.0, "aggressive": 20.0}

_X_REGS = [getattr(A, f"UC_ARM64_REG_X{i}") for i in range(29)] + [A.UC_ARM64_REG_X29, A.UC_ARM64_REG_X30]


class StopKind(Enum):
    QUANTUM = "quantum"          # instruction count used up
    SVC = "svc"
    FAULT = "fault"              # data/instruction abort from the MMU model
    UNDEF = "undef"
    BRK = "brk"
    BUS_ERROR = "bus-error"      # a translation to a PA with no memory behind it
    SENTINEL = "jump-to-nothing" # the guest branched to the run sentinel
    ERROR = "error"


@dataclass(slots=True)
class Stop:
    kind: StopKind
    pc: int
    executed: int
    svc: int | None = None
    fault: Fault | None = None
    detail: str = ""

    def __str__(self) -> str:
        if self.kind is StopKind.FAULT:
            return f"{self.fault} at pc {self.pc:#x}"
        if self.kind is StopKind.SVC:
            return f"svc #{self.svc} at pc {self.pc - 4:#x}"
        return f"{self.kind.value} at pc {self.pc:#x}" + (f": {self.detail}" if self.detail else "")


def _emu_counter_offset() -> int | None:
    """Offset of uc_struct.emu_counter, found by calibration (None if not found).

    Unicorn counts executed instructions for emu_start(count=N) but does not export the
    counter; reading it gives an exact count when a quantum ends early (SVC, fault).
    """
    import mmap
    buf = mmap.mmap(-1, 0x4000, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    arr = np.frombuffer(buf, dtype=np.uint32)
    add, svc = 0x91000400, 0xD4000001                    # add x0, x0, #1 ; svc #0
    arr[0x1000 // 4: 0x1000 // 4 + 64] = add
    arr[0x1000 // 4 + 37] = svc
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_page_size(4096)
    uc.mem_map_ptr(0, 0x4000, UC_PROT_ALL, arr.ctypes.data)
    uc.hook_add(UC_HOOK_INTR, lambda uc, n, ud: uc.emu_stop())
    h = ctypes.cast(uc._uch, ctypes.c_void_p).value
    snaps = []
    for start, count in ((0x1000, 500), (0x1000 + 20, 777), (0x1000 + 4 * 40, 20)):
        uc.emu_start(start, 0x3000, count=count)
        snaps.append(np.frombuffer(ctypes.string_at(h, 2048), dtype=np.uint64).copy())  # (found at 1368 in 2.1.4)
    a, b, c = snaps
    for i in range(1, len(a)):
        if (a[i], b[i], c[i]) == (500, 777, 20) and (a[i - 1], b[i - 1], c[i - 1]) == (38, 33, 21):
            del uc
            return (i - 1) * 8
    return None


_COUNTER_OFFSET: int | None | bool = False


def counter_offset() -> int | None:
    global _COUNTER_OFFSET
    if _COUNTER_OFFSET is False:
        _COUNTER_OFFSET = _emu_counter_offset()
    return _COUNTER_OFFSET


class Cpu:
    def __init__(self, machine, index: int):
        self.machine = machine
        self.index = index
        self.mem = machine.mem
        core = machine.core
        self.cost = core.cost
        self._descriptor_read = core.cost.descriptor_read      # hot-path copies
        self._walk_cache_hit = core.cost.walk_cache_hit
        self.rng = random.Random(f"{machine.seed}/cpu{index}")
        geo = lambda name, g: SetAssocTLB(name, g.entries, g.ways, g.replacement, g.max_block_shift, self.rng)
        self.tlb = TLBHierarchy(geo("itb", core.l1i), geo("dtb", core.l1d), geo("l2_shared", core.l2),
                                WalkCache(core.walk_cache.entries, core.walk_cache.ways, self.rng,
                                          core.walk_cache.replacement))
        self.cycles = 0
        self.insns = 0
        self.el = 1
        self._el_set = False                 # Unicorn's PSTATE not yet written by set_el
        self.instrument = machine.instrument
        self.spec_rate = SPECULATION_RATES[machine.speculate] / 1000.0
        self._spec_credit = 0.0
        self._spec_at = 0
        self.recent: list[int] = [0] * 16    # ring of recently filled VAs: seeds for speculation
        self._recent_i = 0
        # system registers held by the model (the truth); mirrored into Unicorn for MRS
        self.ttbr0 = 0
        self.ttbr1 = 0
        self.tcr = openbsd_tcr(as16=core.asid_bits == 16).value
        self.sctlr = SCTLR_M
        self.mair = 0xFF
        self.regime = Regime(0, 0, self.tcr, self.sctlr, machine.parange_bits)
        self.pending: list[tuple[TLBIOp, int, int]] = []   # TLBIs waiting for a DSB
        # statistics (gem5-like names in stats())
        self.events = Counter()
        self.walks = 0
        self.walk_reads = 0
        self.spec_walks = 0
        self.faults = 0
        self.uc_flushes = 0
        self._fault: Fault | None = None
        self._fetch_looked_up: int | None = None
        self._accesses_memory: dict[int, bool] = {}     # instrumented mode: per-PC decode cache
        self._cs = None
        self._intr: int | None = None
        self._setup_unicorn()

    # ------------------------------------------------------------------ Unicorn
    def _setup_unicorn(self) -> None:
        uc = self.uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        uc.ctl_set_page_size(4096)                      # must come first (docs/unicorn.md §Setup)
        uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        uc.mem_map_ptr(0, self.mem.size, UC_PROT_ALL, self.mem.address)
        from unicorn.unicorn_py3.unicorn import uclib
        self._uclib = uclib
        self._uch = uc._uch
        self._h = ctypes.cast(uc._uch, ctypes.c_void_p).value
        off = counter_offset()
        self._counter = ctypes.c_uint64.from_address(self._h + off) if off is not None else None
        uc.hook_add(UC_HOOK_TLB_FILL, self._fill_hook)
        uc.hook_add(UC_HOOK_INTR, self._intr_hook)
        uc.hook_add(UC_HOOK_INSN, self._sys_hook, None, 1, 0, A.UC_ARM64_INS_SYS)
        uc.hook_add(UC_HOOK_INSN, self._msr_hook, None, 1, 0, A.UC_ARM64_INS_MSR)
        if self.instrument:
            uc.hook_add(UC_HOOK_CODE, self._code_hook)
        self._barrier_hooks: dict[int, int] = {}
        self._code_write_hooks: dict[int, int] = {}
        self._sync_sysregs()

    def _uc_flush(self) -> None:
        """Drop every translation Unicorn caches (it refills from the model)."""
        self._uclib.uc_ctl(self._uch, _UC_TLB_FLUSH)
        self.uc_flushes += 1
        self.tlb.lost = False

    def _sync_sysregs(self) -> None:
        for reg, v in ((SysReg.TTBR0_EL1, self.ttbr0), (SysReg.TTBR1_EL1, self.ttbr1),
                       (SysReg.TCR_EL1, self.tcr), (SysReg.MAIR_EL1, self.mair)):
            self.uc.reg_write(A.UC_ARM64_REG_CP_REG, reg.cp_reg + (v,))

    def add_barrier_hooks(self, barriers) -> None:
        """Trap DSB/ISB/DMB at these VAs: Unicorn's instruction hooks do not see them."""
        for va, mnemonic in barriers:
            if va in self._barrier_hooks:
                continue
            m = mnemonic.lower()
            kind = m.split()[1].strip() if " " in m else "sy"
            if m.startswith("dsb"):
                cb = (lambda k: lambda uc, addr, size, ud: self.dsb(k))(kind)
            elif m.startswith("isb"):
                cb = lambda uc, addr, size, ud: self.isb()
            else:
                continue
            self._barrier_hooks[va] = self.uc.hook_add(UC_HOOK_CODE, cb, None, va, va)

    def drop_code(self) -> None:
        """Forget all translated code (a code frame was written or reused)."""
        self.uc.ctl_flush_tb()
        self._accesses_memory.clear()

    def watch_code_frame(self, pa: int) -> None:
        """Trap writes to a frame holding code so that other CPUs drop their translations."""
        if pa not in self._code_write_hooks:
            self._code_write_hooks[pa] = self.uc.hook_add(
                UC_HOOK_MEM_WRITE, self._code_write_hook, None, pa, pa + 0xFFF)

    def unwatch_code_frame(self, pa: int) -> None:
        h = self._code_write_hooks.pop(pa, None)
        if h is not None:
            self.uc.hook_del(h)

    def _code_write_hook(self, uc, access, pa, size, value, ud) -> None:
        self.machine.code_written(self, pa & ~0xFFF)

    # ------------------------------------------------------------------ translation
    def lookup(self, va: int, access: Access, el: int) -> Translation | Fault:
        """Translate one access through the TLB model as the hardware would: L1 hit, L2 hit
        (refilling L1), or walk and fill; then the permission check. Charges cycles."""
        return self._translate(va, int(access), el)

    def _translate(self, va: int, acc: int, el: int) -> Translation | Fault:
        # The hot path under the fill hook: plain ints for the access kind (0 read, 1 write, 2 fetch).
        tlb = self.tlb
        asid = self.regime.asid
        l1 = tlb.itlb if acc == 2 else tlb.dtlb
        e = l1.lookup(va, asid)
        if e is not None:
            self.cycles += self.cost.l1_tlb_hit
        else:
            e = tlb.l2.lookup(va, asid)
            if e is not None:
                l1.insert(e, va)
                self.cycles += self.cost.l2_tlb_hit
                if tlb.lost:
                    self._uc_flush()
            else:
                e = self._walk(va, acc == 2)
                if e.__class__ is Fault:
                    e.access, e.el = Access(acc), el
                    return e
        if e.perms >> (acc + (3 if el == 0 else 0)) & 1:          # perm_bit(access, el)
            return e
        return Fault(FaultKind.PERMISSION, e.level, va, Access(acc), el)

    def _walk(self, va: int, fetch: bool | None, speculative: bool = False) -> Translation | Fault:
        """Walk (from the deepest walk-cache hit) and fill the TLBs: L2 always, and the L1 of
        the access side for a demand miss (fetch True/False); speculative fills go to L2 only."""
        regime = self.regime
        sel = (va >> 55) & 1
        if regime.epd[sel]:
            return Fault(FaultKind.TRANSLATION, 0, va)        # walks disabled: a miss faults
        asid = regime.asid
        tlb = self.tlb
        # (a VA in the hole cannot hit the walk cache: every entry's region is in range)
        wc = tlb.walk_cache.lookup(va, asid, regime.wc_levels[sel])
        if wc is None:
            r = walk(self.mem, regime, va)
        elif wc.level == 3:
            r = walk_l3(self.mem, regime, va, wc.table_pa, wc.tattrs)
        else:
            r = walk(self.mem, regime, va, (wc.level, wc.table_pa, wc.tattrs))
        if speculative:
            self.spec_walks += 1
        else:
            nreads = len(r.reads)
            self.walks += 1
            self.walk_reads += nreads
            self.cycles += nreads * self._descriptor_read + (self._walk_cache_hit if wc is not None else 0)
        machine = self.machine
        if machine.walk_observers:
            for fn in machine.walk_observers:
                fn(self, va, r, speculative)
        trace = machine.trace
        if r.__class__ is Fault:
            if trace is not None and not speculative:
                trace.add(self.cycles, self.index, Ev.WALK_FAULT, va=va, asid=asid, fault=r.kind.value,
                          level=r.level)
            return r
        if r.tables:
            for level, table_pa, tattrs in r.tables:
                tlb.walk_cache.insert(va, level, table_pa, tattrs, asid)
        r.fill_cycle = self.cycles
        tlb.l2.insert(r, va)
        if speculative:
            r.speculative = True
        else:
            (tlb.itlb if fetch else tlb.dtlb).insert(r, va)
            self.recent[self._recent_i & 15] = va
            self._recent_i += 1
        if trace is not None:
            trace.add(self.cycles, self.index, Ev.SPEC_FILL if speculative else Ev.FILL, va=r.va_base,
                      pa=r.pa_base, size=r.size, asid=r.asid if r.ng else "global", level=r.level)
        if tlb.lost:
            self._uc_flush()
        return r

    def _fill_hook(self, uc, va, access, entry, ud) -> bool:
        if va == SENTINEL_PAGE:
            entry.paddr = 0
            entry.perms = UC_PROT_EXEC
            return True
        acc = access - 16                         # UC_MEM_READ/WRITE/FETCH -> 0/1/2
        el = self.el
        if acc == 2 and self.instrument:
            # this lookup stands for the next instruction's fetch: its code hook skips its own
            self._fetch_looked_up = va
        e = self._translate(va, acc, el)
        if e.__class__ is Fault:
            self._fault = e
            self.faults += 1
            return False
        paddr = e.pa_base | (va & (e.size - 1))
        entry.paddr = paddr
        entry.perms = (e.perms >> (3 if el == 0 else 0)) & 7
        if acc == 2:
            self.machine.code_fetched(paddr)
        return True

    def _code_hook(self, uc, address, size, ud) -> None:
        # Instrumented mode: every instruction looks up the ITLB, and before an instruction
        # that accesses memory Unicorn's TLB is emptied so that its data access reaches the model.
        self.insns += 1
        self.cycles += self.cost.base_cpi
        if self._fetch_looked_up == address & ~0xFFF:
            self._fetch_looked_up = None
        else:
            self.lookup(address, Access.FETCH, self.el)
        mem = self._accesses_memory.get(address)
        if mem is None:
            mem = self._accesses_memory[address] = self._decode_accesses_memory(address)
        if mem:
            self._uclib.uc_ctl(self._uch, _UC_TLB_FLUSH)

    def _decode_accesses_memory(self, va: int) -> bool:
        """Does the instruction at va load or store (a memory operand, or DC ZVA)?"""
        from capstone import CS_ARCH_ARM64, CS_MODE_ARM, Cs
        if self._cs is None:
            self._cs = Cs(CS_ARCH_ARM64, CS_MODE_ARM)
        for insn in self._cs.disasm(self._read_code(va), va, 1):
            return "[" in insn.op_str or insn.mnemonic == "dc"
        return True                     # undecodable: be safe, let its access reach the model

    def _intr_hook(self, uc, intno, ud) -> None:
        self._intr = intno
        uc.emu_stop()

    # ------------------------------------------------------------------ system instructions
    def _sys_hook(self, uc, reg, cp, ud) -> int:
        op = TLBIOp.from_sys(cp.op1, cp.crn, cp.crm, cp.op2) if cp.op0 == 1 else None
        if op is not None:
            self.tlbi(op, cp.val)
            return 1                                   # the model does it; skip QEMU's own
        if cp.op0 == 1 and cp.crn == 7 and cp.crm in (1, 5):   # IC IALLUIS / IALLU / IVAU
            self.machine.drop_code_others(self)
        return 0

    def _msr_hook(self, uc, reg, cp, ud) -> int:
        r = SysReg.from_encoding(cp.op0, cp.op1, cp.crn, cp.crm, cp.op2)
        if r in (SysReg.TTBR0_EL1, SysReg.TTBR1_EL1, SysReg.TCR_EL1, SysReg.SCTLR_EL1, SysReg.MAIR_EL1):
            self.msr(r, cp.val)
            return 1
        return 0

    def msr(self, reg: SysReg, value: int) -> None:
        """Write a system register the MMU depends on. Nothing is invalidated (the
        architecture does not), but Unicorn's untagged TLB must forget the old context."""
        value &= (1 << 64) - 1
        cost = self.cost
        if reg is SysReg.TTBR0_EL1:
            self.ttbr0 = value
            self.events["ttbr_writes"] += 1
            self.cycles += cost.msr_ttbr
        elif reg is SysReg.TTBR1_EL1:
            self.ttbr1 = value
            self.events["ttbr_writes"] += 1
            self.cycles += cost.msr_ttbr
        elif reg is SysReg.TCR_EL1:
            self.tcr = value
            self.cycles += cost.msr_tcr
        elif reg is SysReg.SCTLR_EL1:
            self.sctlr = value
        elif reg is SysReg.MAIR_EL1:
            self.mair = value
        else:
            raise ValueError(f"{reg.name} is not modelled")
        self.events[f"msr.{reg.name}"] += 1
        self.regime = Regime(self.ttbr0, self.ttbr1, self.tcr, self.sctlr, self.machine.parange_bits)
        if reg is not SysReg.SCTLR_EL1:
            self.uc.reg_write(A.UC_ARM64_REG_CP_REG, reg.cp_reg + (value,))
        self._uc_flush()
        trace = self.machine.trace
        if trace is not None:
            trace.add(self.cycles, self.index, Ev.MSR, reg=reg.name, value=value)

    def mrs(self, reg: SysReg) -> int:
        return {SysReg.TTBR0_EL1: self.ttbr0, SysReg.TTBR1_EL1: self.ttbr1, SysReg.TCR_EL1: self.tcr,
                SysReg.SCTLR_EL1: self.sctlr, SysReg.MAIR_EL1: self.mair}[reg]

    @property
    def asid(self) -> int:
        """The ASID that tags this CPU's non-global fills right now."""
        return self.regime.asid

    def tlbi(self, op: TLBIOp, xt: int = 0) -> None:
        """Issue a TLBI. A TLBI is only guaranteed complete after a DSB of this CPU: its
        effect on this CPU's TLBs at the next full DSB (NSH or wider), its effect on the
        other CPUs (IS forms) at the next DSB ISH/OSH/SY (see dsb)."""
        va, asid = self._tlbi_operands(op, xt)
        self.pending.append([op, va, asid, False])      # [op, va, asid, done on this CPU]
        self.events[f"tlbi.{op.name}"] += 1
        self.cycles += self._tlbi_cost(op)
        if self.machine.trace is not None:
            self._trace_tlbi(op, va, asid)

    def _tlbi_operands(self, op: TLBIOp, xt: int) -> tuple[int, int]:
        """(VA, ASID) named by Xt; the ASID is Xt[55:48] with 8-bit ASIDs (TCR.AS = 0)."""
        scope = op.scope
        va = tlbi_va(xt) if scope is Scope.VA or scope is Scope.VAA else 0
        asid = tlbi_asid(xt, self.regime.tcr.as16) if scope is Scope.VA or scope is Scope.ASID else 0
        return va, asid

    def _tlbi_cost(self, op: TLBIOp) -> int:
        cost = self.cost
        if op is TLBIOp.VMALLE1IS:
            return cost.tlbi_broadcast + cost.tlbi_vmalle1is_extra
        return cost.tlbi_broadcast if op.broadcast else cost.tlbi_local

    def _trace_tlbi(self, op: TLBIOp, va: int, asid: int) -> None:
        scope = op.scope
        f = {"op": op.name}
        if scope in (Scope.VA, Scope.VAA):
            f["va"] = va
        if scope in (Scope.VA, Scope.ASID):
            f["asid"] = asid
        self.machine.trace.add(self.cycles, self.index, Ev.TLBI, **f)

    def _dsb_ish_cost(self) -> int:
        """A DSB of the Inner Shareable (or wider) domain completing a broadcast TLBI."""
        cost = self.cost
        return cost.dsb_ish_base + cost.dsb_ish_per_cpu * (len(self.machine.cpus) - 1)

    def dsb(self, kind: str = "sy") -> None:
        """DSB <kind>: completes this CPU's outstanding TLBIs, as far as its domain reaches.

        ISH, OSH, SY: every pending TLBI, on every CPU it reaches. NSH: only their effect on
        this CPU; an IS TLBI stays pending for the other CPUs until a later DSB ISH/OSH/SY
        of this CPU (or until complete_tlbis, the "eventually" at the end of a quantum), so
        `TLBI VAE1IS; DSB NSH` leaves the entry usable on the other CPUs. The LD/ST forms only
        order loads/stores and complete no TLBI. Cost: NSH the local cost, ISH/OSH/SY the
        broadcast cost when a broadcast TLBI completes."""
        domain, full = dsb_option(kind)
        self.events["dsb"] += 1
        cost = self.cost
        pending = self.pending
        local = None
        if not full or not pending:
            n = 0
            self.cycles += cost.dsb_ishst if kind.lower().endswith("st") else cost.dsb_idle
        elif domain == "nsh":
            local = [p for p in pending if not p[3]]
            n = len(local)
            self.cycles += cost.dsb_local if local else cost.dsb_idle
        else:
            n = len(pending)
            self.cycles += self._dsb_ish_cost() if any(p[0].broadcast for p in pending) else cost.dsb_local
        trace = self.machine.trace
        if trace is not None:
            trace.add(self.cycles, self.index, Ev.DSB, barrier=kind.lower(), completes=n)
        if not n:
            return
        if local is None:
            self.complete_tlbis()
            return
        for p in local:
            self.tlb.invalidate(p[0], p[1], p[2])
            p[3] = True
        self.pending = [p for p in pending if p[0].broadcast]
        self._uc_flush()
        if trace is not None:
            trace.add(self.cycles, self.index, Ev.TLBI_DONE, ops=n, reach="local")

    def complete_tlbis(self) -> None:
        """Apply every pending TLBI of this CPU to every TLB it reaches (what a DSB ISH does;
        also the architecture's "eventually", applied at the end of a quantum)."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        touched = {}
        for op, va, asid, done_here in pending:
            for cpu in (self.machine.cpus if op.broadcast else (self,)):
                if cpu is self and done_here:
                    continue
                cpu.tlb.invalidate(op, va, asid)
                touched[cpu.index] = cpu
        for cpu in touched.values():
            # QEMU's TLB has no ASIDs: over-flushing Unicorn is always safe, it refills from the model
            cpu._uc_flush()
        trace = self.machine.trace
        if trace is not None:
            trace.add(self.cycles, self.index, Ev.TLBI_DONE, ops=len(pending))

    def tlbi_flush_batch(self, flushes) -> None:
        """Issue, for each (op, xt) of `flushes`, the whole sequence of OpenBSD's cpufunc
        TLB flush helpers (cpu_tlb_flush_asid and friends, arm64 cpufunc_asm.S):

            DSB ISHST ; TLBI op, xt ; DSB ISH ; ISB

        with exactly the events, cycles, TLB statistics, TLB contents and trace records of
        calling dsb/tlbi/dsb/isb once per flush, but applied in one sweep per CPU (nothing
        runs between the sequences: the OS layer calls from Python) and with one Unicorn
        flush per CPU for the whole batch instead of one per sequence (so `uc_flushes`, not
        part of stats(), is lower). The first DSB ISH also completes whatever was pending.
        For the exit path's scale: a pmap_remove of many pages, two flushes per page."""
        flushes = list(flushes)
        if not flushes:
            return
        cost = self.cost
        trace = self.machine.trace
        ish = self._dsb_ish_cost()
        earlier, self.pending = self.pending, []
        ops = []
        per_op = Counter()
        for op, xt in flushes:
            va, asid = self._tlbi_operands(op, xt)
            ops.append((op, va, asid))
            per_op[op] += 1
        first_dsb_extra = 0
        if earlier and not ops[0][0].broadcast and any(p[0].broadcast for p in earlier):
            first_dsb_extra = ish - cost.dsb_local        # the first DSB ISH completes an earlier broadcast
        if trace is None:
            for op, n in per_op.items():
                self.events[f"tlbi.{op.name}"] += n
                self.cycles += n * (cost.dsb_ishst + self._tlbi_cost(op) + (ish if op.broadcast else cost.dsb_local)
                                    + cost.isb)
            self.cycles += first_dsb_extra
        else:
            for i, (op, va, asid) in enumerate(ops):
                self.cycles += cost.dsb_ishst
                trace.add(self.cycles, self.index, Ev.DSB, barrier="ishst", completes=0)
                self.events[f"tlbi.{op.name}"] += 1
                self.cycles += self._tlbi_cost(op)
                self._trace_tlbi(op, va, asid)
                done = 1 + (len(earlier) if i == 0 else 0)
                self.cycles += (ish if op.broadcast else cost.dsb_local) + (first_dsb_extra if i == 0 else 0)
                trace.add(self.cycles, self.index, Ev.DSB, barrier="ish", completes=done)
                trace.add(self.cycles, self.index, Ev.TLBI_DONE, ops=done)
                self.cycles += cost.isb
                trace.add(self.cycles, self.index, Ev.ISB)
        self.events["dsb"] += 2 * len(ops)
        self.events["isb"] += len(ops)
        # the invalidations: what each DSB ISH completes, in one sweep per CPU
        touched = {}
        for op, va, asid, done_here in earlier:
            for cpu in (self.machine.cpus if op.broadcast else (self,)):
                if not (cpu is self and done_here):
                    cpu.tlb.invalidate(op, va, asid)
                    touched[cpu.index] = cpu
        everywhere = [o for o in ops if o[0].broadcast]
        runs = {}
        for cpu in self.machine.cpus:
            mine = ops if cpu is self else everywhere
            if not mine:
                continue
            if len(mine) not in runs:          # two lists at most: all ops, the broadcast ones
                runs[len(mine)] = (TLBIRun(mine), TLBIRun([o for o in mine if not o[0].last_level]))
            cpu.tlb.invalidate_run(*runs[len(mine)])
            touched[cpu.index] = cpu
        for cpu in touched.values():
            cpu._uc_flush()

    def isb(self) -> None:
        self.events["isb"] += 1
        self.cycles += self.cost.isb
        trace = self.machine.trace
        if trace is not None:
            trace.add(self.cycles, self.index, Ev.ISB)

    def charge(self, cycles: int, what: str | None = None) -> None:
        """Kernel work done on this CPU (costs from the preset)."""
        self.cycles += cycles
        if what is not None:
            self.events[what] += 1

    # ------------------------------------------------------------------ speculation
    def speculate(self, nwalks: int | None = None, elapsed: int | None = None) -> int:
        """Speculative walks and fills, as the architecture permits at any time: near
        recently used VAs and at random valid entries reachable through enabled TTBRs.
        Without `nwalks`, the number follows the speculation rate over the cycles elapsed
        since the last call (or over `elapsed` cycles of another CPU for an idle one).
        Returns the number of entries filled."""
        if nwalks is None:
            if elapsed is None:
                elapsed = max(0, self.cycles - self._spec_at)
                self._spec_at = self.cycles
            self._spec_credit += self.spec_rate * elapsed
            nwalks = int(self._spec_credit)
            self._spec_credit -= nwalks
        filled = 0
        rng = self.rng
        for _ in range(nwalks):
            if self._recent_i and rng.random() < 0.5:
                seed = self.recent[rng.randrange(min(self._recent_i, 16))]
                va = (seed & ~0xFFF) + rng.randint(-4, 4) * 0x1000
            else:
                va = self._random_reachable_va()
                if va is None:
                    continue
            r = self._walk(va & ((1 << 64) - 1), None, speculative=True)
            if r.__class__ is Translation:
                filled += 1
        if filled:
            self.events["speculative_fills"] += filled
        return filled

    def _random_reachable_va(self) -> int | None:
        """A VA whose walk reaches a valid leaf, chosen by a random descent of the tables."""
        regime = self.regime
        sels = [s for s in (0, 1) if not regime.epd[s] and not regime.base_fault[s]]
        if not sels:
            return None
        sel = self.rng.choice(sels)
        level = regime.start[sel]
        table = regime.base[sel]
        ia = regime.ia[sel]
        va = 0
        u64 = self.mem.u64
        for _ in range(4):
            shift = 39 - 9 * level
            n = 1 << (ia - shift) if level == regime.start[sel] else 512
            if (table >> 3) + n > len(u64):
                return None
            words = u64[table >> 3:(table >> 3) + n]
            valid = np.flatnonzero(words & 1)
            if len(valid) == 0:
                return None
            idx = int(valid[self.rng.randrange(len(valid))])
            va |= idx << shift
            d = int(words[idx])
            if level < 3 and d & 3 == 3:
                table = d & 0xFFFF_FFFF_F000
                level += 1
                continue
            break
        if sel:
            va |= ~((1 << ia) - 1) & ((1 << 64) - 1)
        return va

    # ------------------------------------------------------------------ running guest code
    def set_el(self, el: int) -> None:
        """Switch the exception level Unicorn runs at (EL0 user code, EL1 kernel code)."""
        if el == self.el and self._el_set:
            return
        self.uc.reg_write(A.UC_ARM64_REG_PSTATE, 0x3C5 if el == 1 else 0x0)
        # a CP_REG write makes Unicorn rebuild its cached hflags (docs/unicorn.md §EL0)
        self.uc.reg_write(A.UC_ARM64_REG_CP_REG, (13, 0, 3, 3, 2, self.uc.reg_read(A.UC_ARM64_REG_TPIDR_EL0)))
        self.el = el
        self._el_set = True

    @property
    def pc(self) -> int:
        return self.uc.reg_read(A.UC_ARM64_REG_PC)

    @pc.setter
    def pc(self, v: int) -> None:
        self.uc.reg_write(A.UC_ARM64_REG_PC, v)

    def reg(self, n: int) -> int:
        return self.uc.reg_read(_X_REGS[n])

    def set_reg(self, n: int, v: int) -> None:
        self.uc.reg_write(_X_REGS[n], v & ((1 << 64) - 1))

    @property
    def sp(self) -> int:
        return self.uc.reg_read(A.UC_ARM64_REG_SP_EL0 if self.el == 0 else A.UC_ARM64_REG_SP)

    @sp.setter
    def sp(self, v: int) -> None:
        self.uc.reg_write(A.UC_ARM64_REG_SP_EL0 if self.el == 0 else A.UC_ARM64_REG_SP, v)

    def run(self, count: int, pc: int | None = None) -> Stop:
        """Run up to `count` guest instructions from pc (default: where it stopped)."""
        if pc is None:
            pc = self.uc.reg_read(A.UC_ARM64_REG_PC)
        self._fault = None
        self._intr = None
        start_insns = self.insns
        kind = StopKind.QUANTUM
        detail = ""
        try:
            self.uc.emu_start(pc, SENTINEL, count=count)
        except UcError as ex:
            hx = getattr(self.uc, "_hook_exception", None)
            if hx is not None:
                self.uc._hook_exception = None
                raise hx
            if self._fault is not None:
                kind = StopKind.FAULT
            elif ex.errno in (UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_UNMAPPED, UC_ERR_FETCH_UNMAPPED):
                kind, detail = StopKind.BUS_ERROR, str(ex)
            elif ex.errno == UC_ERR_EXCEPTION and self._intr is None:
                kind, detail = StopKind.ERROR, str(ex)
            else:
                kind, detail = StopKind.ERROR, str(ex)
        new_pc = self.uc.reg_read(A.UC_ARM64_REG_PC)
        if kind is StopKind.QUANTUM and self._intr is not None:
            kind = {2: StopKind.SVC, 1: StopKind.UNDEF, 7: StopKind.BRK}.get(self._intr, StopKind.ERROR)
            if kind is StopKind.ERROR:
                detail = f"unexpected exception {self._intr}"
        elif kind is StopKind.QUANTUM and new_pc == SENTINEL:
            kind = StopKind.SENTINEL
        # instructions retired in this call
        if self.instrument:
            executed = self.insns - start_insns
            if kind in (StopKind.FAULT, StopKind.UNDEF, StopKind.BRK, StopKind.BUS_ERROR) and executed:
                executed -= 1                   # the code hook counted the instruction that did not retire
                self.insns -= 1
                self.cycles -= self.cost.base_cpi
        else:
            if self._counter is not None:
                c = self._counter.value
                executed = min(c, count)
                if kind in (StopKind.FAULT, StopKind.UNDEF, StopKind.BRK, StopKind.BUS_ERROR) and c <= count:
                    executed = max(0, c - 1)
            else:
                executed = count if kind is StopKind.QUANTUM else 0
            self.insns += executed
            self.cycles += executed * self.cost.base_cpi
        svc = None
        if kind is StopKind.SVC:
            insn = int.from_bytes(self._read_code(new_pc - 4), "little")
            svc = (insn >> 5) & 0xFFFF
            trace = self.machine.trace
            if trace is not None:
                trace.add(self.cycles, self.index, Ev.SVC, imm=svc, x8=self.reg(8), pc=new_pc - 4)
        if self.pending:
            self.complete_tlbis()               # hardware completes them eventually; at the latest here
        if self.spec_rate:
            self.speculate()
        return Stop(kind, new_pc, executed, svc, self._fault, detail)

    def _read_code(self, va: int) -> bytes:
        """Read an instruction word without disturbing TLB state or statistics."""
        e = self.tlb.probe(va, self.regime.asid)
        if e is None:
            e = walk(self.mem, self.regime, va)
            if e.__class__ is Fault:
                return b"\0\0\0\0"
        return self.mem.read(e.pa_base | (va & (e.size - 1)), 4)

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, int]:
        out = {}
        for name, t in (("itb", self.tlb.itlb), ("dtb", self.tlb.dtlb), ("l2_shared", self.tlb.l2),
                        ("walk_cache", self.tlb.walk_cache)):
            s = t.stats
            for k in ("hits", "misses", "inserts", "evictions", "flushed_entries", "flush_ops"):
                out[f"cpu{self.index}.{name}.{k}"] = getattr(s, k)
        out[f"cpu{self.index}.walker.walks"] = self.walks
        out[f"cpu{self.index}.walker.descriptor_reads"] = self.walk_reads
        out[f"cpu{self.index}.walker.speculative_walks"] = self.spec_walks
        out[f"cpu{self.index}.faults"] = self.faults
        out[f"cpu{self.index}.insts"] = self.insns
        out[f"cpu{self.index}.cycles"] = self.cycles
        for k, v in self.events.items():
            out[f"cpu{self.index}.{k}"] = v
        return out
