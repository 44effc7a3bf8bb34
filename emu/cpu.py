"""One CPU: a Unicorn instance in virtual-TLB mode whose every translation is served
by our TLB model (docs/hardware.md; docs/unicorn.md).

Unicorn's own TLB is only a cache of the model's: the fill hook asks the model (hit, or
walk and fill) and Unicorn's TLB is flushed whenever the model loses an entry Unicorn
was given (eviction, TLBI) or the ASID/tables in use change, so Unicorn never translates
with something the model does not hold. Unicorn gets only the rights of the access side.

The same entry points serve guest instructions and the OS layer calling from Python:
msr(), tlbi(), dsb(), isb(), at(). TLBI, AT and MSR are trapped by Unicorn's SYS/MSR
hooks (UNDEFINED at EL0); DSB, ISB and ERET, which no Unicorn hook sees, by decoding
every code frame Unicorn fetches from. The model's EL follows PSTATE. Everything is
counted and costed on this CPU's cycle clock. Unicorn's internals: unicorn_boundary.py.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from enum import Enum

from unicorn import UC_HOOK_CODE, UC_HOOK_INSN, UC_HOOK_INTR, UC_HOOK_MEM_WRITE, UC_PROT_ALL, UC_TLB_VIRTUAL, Uc
import numpy as np
from capstone import CS_ARCH_ARM64, CS_MODE_ARM, Cs
from unicorn import UC_ARCH_ARM64, UC_MODE_ARM
from unicorn import arm64_const as A

from . import fastpath
from . import unicorn_boundary as ucb
from .sysregs import SCTLR_M, SysReg, openbsd_tcr
from .tlb import (_ONLY_4K, _TAG_BITS, GLOBAL_TAG, SetAssocTLB, TLBHierarchy, TLBIRun, TLBStats, WalkCache,
                  WalkCacheEntry)
from .tlbi import DSB_OPTION_SCOPE, VA_FIELD_MASK, Scope, TLBIOp, dsb_option, tlbi_asid, tlbi_va
from .trace import Ev
from .descriptors import ATTR_AF, ATTR_nG, OA_MASK
# (the walker's permission memo and its key bits, shared with the walk inlined in Cpu._build_translate)
from .walker import (_LEAF_PERM_BITS as LEAF_PERM_BITS, _WXN_KEY as WXN_KEY, _leaf_perms_cached as leaf_perms_cached,
                     _perm_memo as perm_memo, Access, Fault, FaultKind, Regime, Translation, untagged, walk,
                     walk_l3)

SENTINEL = ucb.SENTINEL                # emu_start's `until` (see unicorn_boundary)
SENTINEL_PAGE = ucb.SENTINEL_PAGE

# Speculative walks per 1000 cycles for each speculation setting.
SPECULATION_RATES = {"off": 0.0, "default": 1.0, "aggressive": 20.0}

_X_REGS = [getattr(A, f"UC_ARM64_REG_X{i}") for i in range(29)] + [A.UC_ARM64_REG_X29, A.UC_ARM64_REG_X30]

UC_HOLDS_LIMIT = 1 << 14              # entries handed to Unicorn before the next run starts with a flush

PAGE_AF = ATTR_AF | 3                  # an L3 page descriptor (bits[1:0] = 11) with the access flag set

# Unicorn CP_REG tuple (crn, crm, op0, op1, op2) of SPSR_EL1: the target of a guest ERET
_SPSR_EL1 = (4, 0, 3, 0, 0)

# PSTATE as Unicorn reads/writes it: EL1h (DAIF masked, SPSel = 1) and EL0t; the flags
PSTATE_EL1H, PSTATE_EL0T = 0x3C5, 0x0
PSTATE_SPSEL = 1
PSTATE_NZCV = 0xF000_0000


@dataclass(slots=True)
class UserContext:
    """A thread's saved registers (Cpu.save_context): opaque, restored by Cpu.restore_context."""
    state: object                        # a unicorn UcContext


class StopKind(Enum):
    QUANTUM = "quantum"          # instruction count used up
    SVC = "svc"
    FAULT = "fault"              # data/instruction abort from the MMU model
    UNDEF = "undef"
    BRK = "brk"
    BUS_ERROR = "bus-error"      # a translation to a PA with no memory behind it
    ERROR = "error"


# Stops that are synchronous exceptions to EL1: the CPU is charged cost.exception_entry
EXCEPTION_STOPS = frozenset({StopKind.SVC, StopKind.FAULT, StopKind.UNDEF, StopKind.BRK, StopKind.BUS_ERROR})


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


# ---------------------------------------------------------------- instruction words the model must see
# Unicorn's instruction hooks do not see barriers or ERET (docs/unicorn.md §Flushing Unicorn's TLB): they are found by
# decoding the words of every code frame Unicorn fetches from (Arm ARM C6.2: DSB, ISB, ERET).
DSB_MASK, DSB_BITS = 0xFFFFF0FF, 0xD503309F      # DSB <option>: CRm in bits [11:8]
ISB_MASK, ISB_BITS = 0xFFFFF0FF, 0xD50330DF
ERET = 0xD69F03E0
# DSB option (CRm) -> the name dsb() takes; CRm 0000/0100 are SSBB/PSSBB, not DSBs
DSB_OPTIONS = {0b1111: "sy", 0b1110: "st", 0b1101: "ld", 0b1011: "ish", 0b1010: "ishst", 0b1001: "ishld",
               0b0111: "nsh", 0b0110: "nshst", 0b0101: "nshld", 0b0011: "osh", 0b0010: "oshst",
               0b0001: "oshld", 0b1000: "sy", 0b1100: "sy"}   # reserved options execute as DSB SY


def decode_special(word: int) -> str | None:
    """'dsb <option>', 'isb' or 'eret' for the words the model must act on, else None."""
    if word & DSB_MASK == DSB_BITS:
        opt = DSB_OPTIONS.get((word >> 8) & 0xF)
        return None if opt is None else "dsb " + opt
    if word & ISB_MASK == ISB_BITS:
        return "isb"
    if word == ERET:
        return "eret"
    return None


def special_offsets(words: np.ndarray) -> list[int]:
    """Byte offsets of DSB/ISB/ERET words in one code frame (1024 words)."""
    m = (((words & DSB_MASK) == DSB_BITS) | ((words & ISB_MASK) == ISB_BITS) | (words == ERET))
    return [int(i) * 4 for i in np.flatnonzero(m) if decode_special(int(words[i])) is not None]


def is_literal_load(word: int) -> bool:
    """LDR/LDRSW (literal), GPR or SIMD: a PC-relative data read with no '[' in its text;
    PRFM (literal) (opc 11, V 0) is a hint and accesses nothing."""
    return word & 0x3B000000 == 0x18000000 and not (word >> 30 == 3 and not word >> 26 & 1)


# Instrumented mode: what an instruction word needs from the model before it executes
_OTHER, _MEMORY, _SPECIAL = 0, 1, 2
_WORD_KIND: dict[int, int] = {}       # word -> kind: a pure function of the word, shared by every CPU
_CS = Cs(CS_ARCH_ARM64, CS_MODE_ARM)


def _classify(word: int) -> int:
    """_SPECIAL (DSB/ISB/ERET), _MEMORY (a load or store, incl. literal loads and DC) or _OTHER."""
    if decode_special(word) is not None:
        return _SPECIAL
    if is_literal_load(word):
        return _MEMORY
    for insn in _CS.disasm(word.to_bytes(4, "little"), 0, 1):
        return _MEMORY if "[" in insn.op_str or insn.mnemonic == "dc" else _OTHER
    return _MEMORY                       # undecodable: be safe, let its access reach the model


# ---------------------------------------------------------------- AT (address translation instructions)
# SYS #0, C7, C8, #op2: S1E1R, S1E1W, S1E0R, S1E0W -> (access, EL of the permission check)
AT_OPS = {0: ("S1E1R", Access.READ, 1), 1: ("S1E1W", Access.WRITE, 1),
          2: ("S1E0R", Access.READ, 0), 3: ("S1E0W", Access.WRITE, 0)}
PAR_F = 1                    # PAR_EL1.F: the translation aborted
PAR_RES1 = 1 << 11
PAR_SH_OUTER = 0b10


def par_from(r: Translation | Fault, mair: int) -> int:
    """PAR_EL1 after an AT (Arm ARM D13.2.102): on success the PA, the memory attributes
    (MAIR byte of AttrIndx) and SH (reported as Outer Shareable for Device and Normal
    Non-cacheable memory); on a fault F=1 and FST = the fault status code."""
    if r.__class__ is Fault:
        return PAR_RES1 | r.fsc << 1 | PAR_F
    attr = (mair >> (8 * r.attrindx)) & 0xFF
    sh = r.sh
    if attr >> 4 == 0 or attr == 0x44:            # Device, or Normal Inner+Outer Non-cacheable
        sh = PAR_SH_OUTER
    return attr << 56 | (r.pa & 0xFFFF_FFFF_F000) | PAR_RES1 | sh << 7


def counter_offset() -> int | None:
    """Offset of Unicorn's executed-instruction counter (see unicorn_boundary)."""
    return ucb.counter_offset()


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
        # Unicorn's TLB must never hold a translation the model lost, but flushing it is only
        # needed when the entry that left was handed to Unicorn since its last flush
        self._uc_holds: dict[int, Translation] = {}     # id -> entry, handed out since the last flush
        self._uc_stale = False               # an entry in _uc_holds left the model
        for t in (self.tlb.itlb, self.tlb.dtlb, self.tlb.l2):
            t.on_remove = self._entry_left
        self.cycles = 0
        self.insns = 0
        self.el = 1                          # PSTATE.EL, followed through set_el, guest ERETs and Cpu.run
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
        self._tbi = False                    # TCR.TBI0 or TBI1: tags are stripped before the TLBs
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
        self._intr: int | None = None
        self._probed = False                 # Unicorn probed the sentinel page in this run
        self._bus_error: tuple[int, int] | None = None   # (access 0/1/2, PA) of a bus error in this run
        self._redecode = False               # this CPU wrote its code: decode its frames again
        self._in_guest = False               # inside emu_start: Unicorn's TLB is in use right now
        # code frames: VA page -> frame of this CPU's last fetch fill there, so that a hooked
        # address is decoded from the word actually executed (not from a VA of another program)
        self._code_pa: dict[int, int] = {}
        self._special_hooks: dict[int, int] = {}        # VA -> code hook on a DSB/ISB/ERET seen there
        self._words = memoryview(self.mem.buf).cast("I")
        self._translate = self._build_translate()
        if machine.fast:
            self._translate = self._compiled_translate(self._translate)
        self._setup_unicorn()

    # ------------------------------------------------------------------ Unicorn
    def _setup_unicorn(self) -> None:
        uc = self.uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        uc.ctl_set_page_size(4096)                      # must come first (docs/unicorn.md §Setup)
        uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        uc.mem_map_ptr(0, self.mem.size, UC_PROT_ALL, self.mem.address)
        self._raw = ucb.Raw(uc)
        self._counter = self._raw.counter
        if self.machine.fast and not self.instrument:
            # the compiled twin of _build_fill_hook's fill (instrumented runs keep the Python:
            # their cost is the code hook's)
            self._raw.add_compiled_tlb_fill_hook(fastpath.FillHook(
                translate=self._translate, cpu=self, holds=self._uc_holds, code_pa=self._code_pa,
                code_fetch=self._code_fetch, hook_failed=ucb.hook_failed, uc=uc, sentinel_page=SENTINEL_PAGE,
                mem_size=self.mem.size))
        else:
            self._raw.add_tlb_fill_hook(self._build_fill_hook())
        uc.hook_add(UC_HOOK_INTR, self._intr_hook)
        uc.hook_add(UC_HOOK_INSN, self._sys_hook, None, 1, 0, A.UC_ARM64_INS_SYS)
        uc.hook_add(UC_HOOK_INSN, self._msr_hook, None, 1, 0, A.UC_ARM64_INS_MSR)
        if self.instrument:
            uc.hook_add(UC_HOOK_CODE, self._code_hook)
        self._code_write_hooks: dict[int, int] = {}
        self._sync_sysregs()

    def _uc_flush(self) -> None:
        """Drop every translation Unicorn caches (it refills from the model)."""
        self._raw.tlb_flush()
        self.uc_flushes += 1
        self.tlb.lost = False
        self._uc_stale = False
        self._uc_holds.clear()

    def _entry_left(self, e: Translation) -> None:
        # an entry left every TLB structure (eviction, TLBI): `lost` says so (the TLBI paths
        # flush on it); the miss path flushes only if Unicorn may hold a page of it
        self.tlb.lost = True
        if id(e) in self._uc_holds:
            self._uc_stale = True

    def _sync_sysregs(self) -> None:
        for reg, v in ((SysReg.TTBR0_EL1, self.ttbr0), (SysReg.TTBR1_EL1, self.ttbr1),
                       (SysReg.TCR_EL1, self.tcr), (SysReg.MAIR_EL1, self.mair)):
            self.uc.reg_write(A.UC_ARM64_REG_CP_REG, reg.cp_reg + (v,))

    def drop_code(self) -> None:
        """Forget all translated code (a code frame was written or reused); code pages are
        fetched through the fill hook again, so their frames are decoded again."""
        self.uc.ctl_flush_tb()
        self._raw.tlb_flush()
        self._code_pa.clear()

    def redecode_code(self) -> None:
        """This CPU wrote into one of its code frames: QEMU retranslates the code by itself,
        but the frame's barriers must be decoded again. Called from inside the store's
        memory hook, where flushing Unicorn's TLB would free the entry the store is using:
        the flush waits for the next run (the architecture needs an ISB before the new
        code is guaranteed to run anyway)."""
        self._code_pa.clear()
        self._redecode = True

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
        (refilling L1), or walk and fill; then the permission check. Charges cycles.
        Returns the TLB entry used, shared by every VA of its page or block (its `va` and
        `pa` are those of the walk that filled it): the PA of this access is
        `entry.pa_of(va)`. Or the Fault."""
        return self._translate(va, int(access), el)

    def _build_translate(self):
        """The one translation path (fill hook, instrumented fetches, Cpu.lookup), as a
        closure over this CPU's TLBs: plain ints for the access kind (0 read, 1 write,
        2 fetch); names bound as locals, it runs for every Unicorn TLB miss."""
        cpu = self
        machine = self.machine
        tlb = self.tlb
        itlb, dtlb, l2 = tlb.itlb, tlb.dtlb, tlb.l2
        l1_hit_cycles, l2_hit_cycles = self.cost.l1_tlb_hit, self.cost.l2_tlb_hit
        walk_and_fill, account = self._walk, self._account
        wc = tlb.walk_cache
        wc_sets, wc_mask, wc_stats, wc_lru = wc.sets, wc.set_mask, wc.stats, wc.lru
        walk_observers = machine.walk_observers
        q = self.mem.q
        nwords = len(q)
        descriptor_read, walk_cache_hit = self._descriptor_read, self._walk_cache_hit
        recent = self.recent
        holds = self._uc_holds
        tag_bits, global_tag, tag_mask = _TAG_BITS, GLOBAL_TAG, (1 << _TAG_BITS) - 1
        PERMISSION = FaultKind.PERMISSION
        # what the inlined lookups and fills use of each TLB: objects that live as long as it
        # (sets, the per-ASID index, the stats) and its geometry
        parts = {t: (t, t.sets, t.set_mask, t.ways, t.lru, t.stats, t.by_tag) for t in (itlb, dtlb, l2)}
        l2_sets, l2_mask, l2_lru, l2_stats = l2.sets, l2.set_mask, l2.lru, l2.stats
        fills = {itlb: (parts[l2], parts[itlb]), dtlb: (parts[l2], parts[dtlb])}
        itlb_parts = (itlb, itlb.sets, itlb.set_mask, itlb.lru, itlb.stats)
        dtlb_parts = (dtlb, dtlb.sets, dtlb.set_mask, dtlb.lru, dtlb.stats)
        only_4k = _ONLY_4K
        new_translation = Translation.__new__

        def translate(va: int, acc: int, el: int) -> Translation | Fault:
            regime = cpu.regime
            if cpu._tbi:
                va = untagged(regime, va)
            asid = regime.asid
            if acc == 2:
                l1, l1_sets, l1_mask, l1_lru, l1_stats = itlb_parts
            else:
                l1, l1_sets, l1_mask, l1_lru, l1_stats = dtlb_parts
            vpn12 = va >> 12
            key12 = (vpn12 << 6 | 12) << tag_bits          # the 4 KB key, shared by both lookups and the fills
            # NOTE: inlined from SetAssocTLB.lookup for speed (L1 of the access side)
            e = None
            shifts = l1.shifts
            if shifts is only_4k:
                s = l1_sets[vpn12 & l1_mask]
                k = key12 | asid
                e = s.get(k)
                if e is None:
                    k = key12 | global_tag
                    e = s.get(k)
                if e is not None and l1_lru:
                    del s[k]
                    s[k] = e
            else:
                for shift in shifts:
                    vpn = va >> shift
                    s = l1_sets[vpn & l1_mask]
                    key = (vpn << 6 | shift) << tag_bits
                    k = key | asid
                    e = s.get(k)
                    if e is None:
                        k = key | global_tag
                        e = s.get(k)
                    if e is not None:
                        if l1_lru:
                            del s[k]
                            s[k] = e
                        break
            if e is not None:
                l1_stats.hits += 1
                cpu.cycles += l1_hit_cycles
                if e.stale and machine.checker is not None:
                    machine.checker.stale_use(cpu, va, e, Access(acc), el)
            else:
                l1_stats.misses += 1
                # NOTE: inlined from SetAssocTLB.lookup for speed (L2)
                shifts = l2.shifts
                if shifts is only_4k:
                    s = l2_sets[vpn12 & l2_mask]
                    k = key12 | asid
                    e = s.get(k)
                    if e is None:
                        k = key12 | global_tag
                        e = s.get(k)
                    if e is not None and l2_lru:
                        del s[k]
                        s[k] = e
                else:
                    for shift in shifts:
                        vpn = va >> shift
                        s = l2_sets[vpn & l2_mask]
                        key = (vpn << 6 | shift) << tag_bits
                        k = key | asid
                        e = s.get(k)
                        if e is None:
                            k = key | global_tag
                            e = s.get(k)
                        if e is not None:
                            if l2_lru:
                                del s[k]
                                s[k] = e
                            break
                if e is not None:
                    l2_stats.hits += 1
                    l1.insert(e, va)
                    cpu.cycles += l2_hit_cycles
                    if e.stale and machine.checker is not None:
                        machine.checker.stale_use(cpu, va, e, Access(acc), el)
                    if cpu._uc_stale:
                        cpu._uc_flush()
                else:
                    l2_stats.misses += 1
                    # NOTE: inlined from Cpu._walk and WalkCache.lookup for speed: a demand miss
                    # whose L3 table is in the walk cache (the common case) walks one level
                    we = None
                    if not regime.epd[(va >> 55) & 1]:
                        vpn = va >> 21
                        s = wc_sets[vpn & wc_mask]
                        k = ((vpn << 6 | 3) << tag_bits) | asid
                        we = s.get(k)
                    if we is not None:
                        if wc_lru:
                            del s[k]
                            s[k] = we
                        wc_stats.hits += 1
                        # NOTE: inlined from walker.walk_l3 for speed: a valid page with AF set
                        dpa = we.table_pa + ((va >> 9) & 0xFF8)
                        desc = q[dpa >> 3] if dpa >> 3 < nwords else 0
                        oa = desc & OA_MASK
                        if desc & PAGE_AF == PAGE_AF and not oa >> regime.pa_bits:
                            pkey = (desc & LEAF_PERM_BITS) | we.tattrs | (WXN_KEY if regime.wxn else 0)
                            perms = perm_memo.get(pkey)
                            if perms is None:
                                perms = leaf_perms_cached(desc, we.tattrs, regime.wxn)
                            ng = bool(desc & ATTR_nG)
                            # NOTE: inlined from Cpu._account for speed (a demand walk of one read)
                            cpu.walks += 1
                            cpu.walk_reads += 1
                            cycles = cpu.cycles = cpu.cycles + descriptor_read + walk_cache_hit
                            # NOTE: inlined from Translation.__init__ for speed (slots stored directly,
                            # every field, in its order: a call with 15 arguments costs twice as much)
                            e = new_translation(Translation)
                            e.va = va
                            e.va_base = va & ~0xFFF
                            e.pa_base = oa
                            e.level = 3
                            e.size = 4096
                            e.perms = perms
                            e.ng = ng
                            e.asid = asid if ng else None
                            e.desc = desc
                            e.desc_pa = dpa
                            e.reads = [(dpa, desc, 3)]
                            e.tables = []
                            e.refs = 0
                            e.speculative = False
                            e.fill_cycle = cycles
                            e.stale = False
                            if walk_observers:
                                for fn in walk_observers:
                                    fn(cpu, va, e, False)
                            # NOTE: inlined from SetAssocTLB.insert for speed: a 4 KB Translation
                            # whose key both lookups above just missed, into L2 and then L1
                            tag = asid if ng else global_tag
                            k = key12 | tag
                            for t, sets, mask, ways, lru, stats, by_tag in fills[l1]:
                                s = sets[vpn12 & mask]
                                counted = False             # a same-size eviction keeps shift_count
                                if len(s) >= ways:
                                    evk = next(iter(s)) if lru else list(s)[t.rng.randrange(len(s))]
                                    ev = s.pop(evk)
                                    stats.evictions += 1
                                    if (evk >> tag_bits) & 63 == 12 and ev.__class__ is Translation:
                                        evtag = evk & tag_mask
                                        d = by_tag[evtag]
                                        del d[evk]
                                        if not d:
                                            del by_tag[evtag]
                                        ev.refs -= 1
                                        if ev.refs == 0:
                                            # NOTE: inlined from Cpu._entry_left (every TLB's on_remove)
                                            tlb.lost = True
                                            if id(ev) in holds:
                                                cpu._uc_stale = True
                                        counted = True
                                    else:
                                        t._dropped(evk, ev)
                                s[k] = e
                                e.refs += 1
                                stats.inserts += 1
                                d = by_tag.get(tag)
                                if d is None:
                                    d = by_tag[tag] = {}
                                d[k] = e
                                if not counted:
                                    n = t.shift_count[12]
                                    t.shift_count[12] = n + 1
                                    if n == 0:
                                        t._update_shifts()
                            recent[cpu._recent_i & 15] = va
                            cpu._recent_i += 1
                            trace = machine.trace
                            if trace is not None:
                                trace.add(cpu.cycles, cpu.index, Ev.FILL, va=e.va_base, pa=oa, size=4096,
                                          asid=asid if ng else "global", level=3, walk=e.reads, wc_hit=True)
                            if cpu._uc_stale:
                                cpu._uc_flush()
                        else:                                  # a fault, or no memory behind the table
                            e = account(va, walk_l3(cpu.mem, regime, va, we.table_pa, we.tattrs), True, acc == 2)
                    else:
                        e = walk_and_fill(va, acc == 2)        # EPD, a cold or shallower walk
                    if e.__class__ is Fault:
                        e.access, e.el = Access(acc), el
                        return e
            if e.perms >> (acc + (3 if el == 0 else 0)) & 1:          # perm_bit(access, el)
                return e
            f = Fault(PERMISSION, e.level, va, Access(acc), el)
            trace = machine.trace
            if trace is not None:
                trace.add(cpu.cycles, cpu.index, Ev.PERM_FAULT, va=va, asid=asid, access=f.access.name.lower(),
                          el=el, level=e.level)
            return f

        return translate

    def _compiled_translate(self, python):
        """The compiled twin of the closure (emu/_fast_translate.c, see emu/fastpath.py): the
        same objects and constants, and the closure itself for every case it leaves to Python."""
        cost = self.cost
        return fastpath.Translator(
            python=python, cpu=self, machine=self.machine, tlb=self.tlb, itlb=self.tlb.itlb, dtlb=self.tlb.dtlb,
            l2=self.tlb.l2, walk_cache=self.tlb.walk_cache, q=self.mem.q, walk_observers=self.machine.walk_observers,
            recent=self.recent, holds=self._uc_holds, perm_memo=perm_memo, leaf_perms_cached=leaf_perms_cached,
            translation=Translation, fault=Fault, access=tuple(Access), permission=FaultKind.PERMISSION,
            account=self._account, walk_l3=walk_l3, walk_and_fill=self._walk, only_4k=_ONLY_4K,
            l1_hit_cycles=cost.l1_tlb_hit, l2_hit_cycles=cost.l2_tlb_hit, descriptor_read=self._descriptor_read,
            walk_cache_hit=self._walk_cache_hit, oa_mask=OA_MASK, page_af=PAGE_AF, leaf_perm_bits=LEAF_PERM_BITS,
            wxn_key=WXN_KEY, ng_bit=ATTR_nG, global_tag=GLOBAL_TAG, tag_bits=_TAG_BITS, stats_type=TLBStats,
            regime_type=Regime, walk_cache_entry=WalkCacheEntry)

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
        return self._account(va, r, wc is not None, fetch, speculative)

    def _account(self, va: int, r: Translation | Fault, wc_hit: bool, fetch: bool | None,
                 speculative: bool = False) -> Translation | Fault:
        """A walk's statistics, cycles, observers and trace; fills for a translation."""
        tlb = self.tlb
        if speculative:
            self.spec_walks += 1
        else:
            nreads = len(r.reads)
            self.walks += 1
            self.walk_reads += nreads
            self.cycles += nreads * self._descriptor_read + (self._walk_cache_hit if wc_hit else 0)
        machine = self.machine
        if machine.walk_observers:
            for fn in machine.walk_observers:
                fn(self, va, r, speculative)
        trace = machine.trace
        if r.__class__ is Fault:
            if trace is not None and not speculative:
                trace.add(self.cycles, self.index, Ev.WALK_FAULT, va=va, asid=self.regime.asid,
                          fault=r.kind.value, level=r.level)
            return r
        if r.tables:
            asid = self.regime.asid
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
                      pa=r.pa_base, size=r.size, asid=r.asid if r.ng else "global", level=r.level,
                      walk=r.reads, wc_hit=wc_hit)
        if self._uc_stale:
            self._uc_flush()
        return r

    def _build_fill_hook(self):
        """UC_HOOK_TLB_FILL: Unicorn missed in its own TLB; answer from the model. Unicorn
        gets only the rights of the access side (X for a fetch, R/W for data), so that a
        data read of a code page (a literal pool) still reaches the DTLB, and a fetch from
        a data page the ITLB."""
        cpu = self
        translate = self._translate
        instrument = self.instrument
        code_pa = self._code_pa
        code_fetch = self._code_fetch
        entry_at = ucb.entry_at
        sentinel_page = SENTINEL_PAGE
        mem_size = self.mem.size
        holds = self._uc_holds
        last_address, last_entry = 0, None     # Unicorn passes the same stack slot: one object for it

        def fill(uch, va: int, access: int, entry: int, ud) -> bool:
            nonlocal last_address, last_entry
            # called by Unicorn through ctypes: nothing may escape (ucb.hook_failed re-raises it later)
            try:
                if va == sentinel_page:
                    # Unicorn's probe at the end of every run (or a guest fetch in the hole, which
                    # Cpu.run recognises by the PC): not a translation the model is asked for
                    cpu._probed = True
                    return False
                acc = access - 16                   # UC_MEM_READ/WRITE/FETCH -> 0/1/2
                el = cpu.el
                if acc == 2 and instrument:
                    # this lookup stands for the next instruction's fetch: its code hook skips its own
                    cpu._fetch_looked_up = va
                e = translate(va, acc, el)
                if e.__class__ is Fault:
                    cpu._fault = e
                    cpu.faults += 1
                    return False
                paddr = e.pa_base | (va & (e.size - 1))
                if paddr >= mem_size:
                    # no memory behind the PA the model gave: a bus error (an external abort).
                    # Refused, so that Unicorn keeps no entry for it (a memory hook would see
                    # it too, but any such hook slows every access down by half)
                    cpu._bus_error = (acc, paddr)
                    return False
                holds[id(e)] = e                    # (bounded by Cpu.run)
                if entry != last_address:
                    last_address, last_entry = entry, entry_at(entry)
                ent = last_entry
                ent.paddr = paddr
                perms = e.perms >> 3 if el == 0 else e.perms
                if acc == 2:
                    ent.perms = perms & 4
                    if code_pa.get(va & ~0xFFF) != paddr & ~0xFFF:
                        code_fetch(va, paddr)
                else:
                    ent.perms = perms & 3
                return True
            except BaseException as exc:            # noqa: BLE001
                ucb.hook_failed(cpu.uc, exc)
                return False

        return fill

    def _code_fetch(self, va: int, paddr: int) -> None:
        """A code page got a new frame: watch the frame for writes and, in fast mode, hook
        the addresses of its barriers and ERETs (decoded from the frame's words)."""
        page, frame = va & ~0xFFF, paddr & ~0xFFF
        self._code_pa[page] = frame
        self.machine.code_fetched(frame)
        if not self.instrument:
            hooks = self._special_hooks
            for off in self.machine.special_offsets(frame):
                a = page | off
                if a not in hooks:
                    hooks[a] = self.uc.hook_add(UC_HOOK_CODE, self._special_hook, None, a, a)

    def _code_word(self, va: int) -> int:
        """The instruction word executed at va now (through this CPU's last code fill)."""
        frame = self._code_pa.get(va & ~0xFFF)
        if frame is None:
            return int.from_bytes(self._read_code(va), "little")
        return self._words[(frame | (va & 0xFFF)) >> 2]

    def _special_hook(self, uc, address, size, ud) -> None:
        # a code hook on an address where some fetched frame had a DSB/ISB/ERET: act only if
        # the word executed now is one (another program may have other code at this VA)
        what = decode_special(self._code_word(address))
        if what is not None:
            self._special(what)

    def _special(self, what: str) -> None:
        if what == "isb":
            self.isb()
        elif what == "eret":
            self._eret()
        else:
            self.dsb(what[4:])

    def _eret(self) -> None:
        """A guest ERET, seen just before it executes: the model's EL follows SPSR_EL1.M.
        At EL0 ERET is UNDEFINED (QEMU raises it); an illegal return keeps the EL."""
        if self.el == 0:
            return
        spsr = self.uc.reg_read(A.UC_ARM64_REG_CP_REG, _SPSR_EL1)
        target = (spsr >> 2) & 3
        if spsr & 0x10 or target > 1:
            return
        self.el = target
        self.cycles += self.cost.exception_return
        self.events["eret"] += 1

    def _code_hook(self, uc, address, size, ud) -> None:
        # Instrumented mode: every instruction looks up the ITLB, and before an instruction
        # that accesses memory Unicorn's TLB is emptied so that its data access reaches the model.
        self.insns += 1
        self.cycles += self.cost.base_cpi
        if self._fetch_looked_up == address & ~0xFFF:
            self._fetch_looked_up = None
        else:
            self._translate(address, 2, self.el)
        word = self._code_word(address)
        kind = _WORD_KIND.get(word)
        if kind is None:
            kind = _WORD_KIND[word] = _classify(word)
        if kind == _MEMORY:
            self._raw.tlb_flush()
        elif kind == _SPECIAL:
            self._special(decode_special(word))

    def _intr_hook(self, uc, intno, ud) -> None:
        self._intr = intno
        uc.emu_stop()
    # ------------------------------------------------------------------ system instructions
    def _sys_hook(self, uc, reg, cp, ud) -> int:
        # Runs before QEMU's own access check (docs/unicorn.md §Flushing Unicorn's TLB): at EL0, TLBI/AT/DC/IC go
        # to QEMU, which raises UNDEFINED (or allows the EL0-permitted DC/IC forms).
        if cp.op0 != 1:
            return 0
        if cp.crn == 7 and cp.crm in (1, 5):           # IC IALLUIS / IALLU / IVAU (IVAU may run at EL0)
            self.machine.drop_code_others(self)
            return 0
        if self._raw.el() == 0:
            return 0
        op = TLBIOp.from_sys(cp.op1, cp.crn, cp.crm, cp.op2)
        if op is not None:
            self.tlbi(op, cp.val)
            return 1                                   # the model does it; skip QEMU's own
        if cp.op1 == 0 and cp.crn == 7 and cp.crm == 8 and cp.op2 in AT_OPS:
            # QEMU would walk with its MMU view, not the model's (PAR = the VA): serve AT here
            self.uc.reg_write(A.UC_ARM64_REG_CP_REG, SysReg.PAR_EL1.cp_reg + (self.at(cp.op2, cp.val),))
            return 1
        return 0

    def _msr_hook(self, uc, reg, cp, ud) -> int:
        r = SysReg.from_encoding(cp.op0, cp.op1, cp.crn, cp.crm, cp.op2)
        if r in (SysReg.TTBR0_EL1, SysReg.TTBR1_EL1, SysReg.TCR_EL1, SysReg.SCTLR_EL1, SysReg.MAIR_EL1):
            if self._raw.el() == 0:
                return 0                               # EL1 registers: UNDEFINED at EL0 (QEMU raises it)
            self.msr(r, cp.val)
            return 1
        return 0

    def at(self, op2: int, va: int) -> int:
        """AT S1E1R/S1E1W/S1E0R/S1E0W (op2 0..3) of va: a stage-1 walk of the tables as they
        are now (no TLB lookup or fill), checked for that access and EL; returns PAR_EL1."""
        name, access, el = AT_OPS[op2]
        regime = self.regime
        va &= (1 << 64) - 1
        r = walk(self.mem, regime, untagged(regime, va))
        self.cycles += len(r.reads) * self._descriptor_read
        self.events[f"at.{name}"] += 1
        if r.__class__ is not Fault and not r.perms >> (access + (3 if el == 0 else 0)) & 1:
            r = Fault(FaultKind.PERMISSION, r.level, va, access, el)
        return par_from(r, self.mair)
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
        self._tbi = 55 in self.regime.top_bit
        if reg is not SysReg.SCTLR_EL1:
            self.uc.reg_write(A.UC_ARM64_REG_CP_REG, reg.cp_reg + (value,))
        self._uc_flush()
        if self.machine.checker is not None and reg is not SysReg.MAIR_EL1:
            self.machine.checker.sysreg_written(self)      # new walk roots, ASID handovers
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
        other CPUs (IS forms) at the next DSB ISH/OSH/SY (see dsb). Xt: VA[55:12] in bits
        [43:0], the ASID in [63:48] ([55:48] only with 8-bit ASIDs, TCR.AS = 0)."""
        va = tlbi_va(xt) if op.by_va else 0
        asid = tlbi_asid(xt, self.regime.tcr.as16) if op.by_asid else 0
        self.pending.append([op, va, asid, False])      # [op, va, asid, done on this CPU]
        self.events[op.event] += 1
        # NOTE: inlined from _tlbi_cost for speed
        cost = self.cost
        if op.broadcast:
            self.cycles += cost.tlbi_broadcast + (cost.tlbi_vmalle1is_extra if op.all_entries else 0)
        else:
            self.cycles += cost.tlbi_local
        if self.machine.trace is not None:
            self._trace_tlbi(op, va, asid)

    def _tlbi_cost(self, op: TLBIOp) -> int:
        cost = self.cost
        if not op.broadcast:
            return cost.tlbi_local
        return cost.tlbi_broadcast + (cost.tlbi_vmalle1is_extra if op.all_entries else 0)

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
        domain, full = DSB_OPTION_SCOPE.get(kind) or dsb_option(kind)
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
            for p in pending:
                if p[0].broadcast:
                    self.cycles += self._dsb_ish_cost()
                    break
            else:
                self.cycles += cost.dsb_local
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
        if self._in_guest and self.tlb.lost:
            self._uc_flush()
        if trace is not None:
            trace.add(self.cycles, self.index, Ev.TLBI_DONE, ops=n, reach="local")

    def complete_tlbis(self) -> None:
        """Apply every pending TLBI of this CPU to every TLB it reaches (what a DSB ISH does;
        also the architecture's "eventually", applied at the end of a quantum)."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        everywhere = self.machine.tlbs
        for op, va, asid, done_here in pending:
            if op.broadcast:
                reach = [t for t in everywhere if t is not self.tlb] if done_here else everywhere
            elif done_here:
                continue
            else:
                reach = (self.tlb,)
            if op.by_va:
                self.machine.invalidate_va(reach, op, va, asid)   # the keys computed once for every CPU
            elif op.scope is Scope.ASID:
                self.machine.invalidate_asid(reach, op, asid)
            else:
                for t in reach:
                    t.invalidate(op, va, asid)
        # Unicorn's TLB only holds what the model holds: it must forget what the model lost,
        # at once if this CPU is running guest code, else before it next runs (Cpu.run)
        if self._in_guest and self.tlb.lost:
            self._uc_flush()
        trace = self.machine.trace
        if trace is not None:
            trace.add(self.cycles, self.index, Ev.TLBI_DONE, ops=len(pending))

    def tlbi_flush_batch(self, flushes) -> None:
        """Issue, for each (op, xt) of `flushes`, the whole sequence of OpenBSD's cpufunc
        TLB flush helpers (cpu_tlb_flush_asid and friends, arm64 cpufunc_asm.S):

            DSB ISHST ; TLBI op, xt ; DSB ISH ; ISB

        with exactly the events, cycles, TLB statistics, TLB contents and trace records of
        calling dsb/tlbi/dsb/isb once per flush, but applied in one sweep per CPU (nothing
        runs between the sequences: the OS layer calls from Python) and with at most one
        Unicorn flush per CPU for the whole batch (`uc_flushes` is not part of stats()). The first DSB ISH also completes whatever was pending.
        For the exit path's scale: a pmap_remove of many pages, two flushes per page."""
        flushes = list(flushes)
        if not flushes:
            return
        cost = self.cost
        trace = self.machine.trace
        ish = self._dsb_ish_cost()
        earlier, self.pending = self.pending, []
        ops = []
        per_event = {}
        as16 = self.regime.tcr.as16
        local_seq = cost.dsb_ishst + cost.tlbi_local + cost.dsb_local + cost.isb
        broadcast_seq = cost.dsb_ishst + cost.tlbi_broadcast + ish + cost.isb
        cycles = 0
        asid_mask = 0xFFFF if as16 else 0xFF
        for op, xt in flushes:
            # NOTE: inlined from tlbi(), tlbi_va and tlbi_asid for speed (a teardown's 500,000 flushes)
            if op.by_va:
                va = (xt & VA_FIELD_MASK) << 12
                if va >> 55 & 1:
                    va |= 0xFF00_0000_0000_0000
            else:
                va = 0
            ops.append((op, va, (xt >> 48) & asid_mask if op.by_asid else 0))
        for op, n in Counter(o[0] for o in ops).items():
            # NOTE: inlined from _tlbi_cost, per op kind
            per_event[op.event] = n
            if op.broadcast:
                cycles += n * (broadcast_seq + (cost.tlbi_vmalle1is_extra if op.all_entries else 0))
            else:
                cycles += n * local_seq
        first_dsb_extra = 0
        if earlier and not ops[0][0].broadcast and any(p[0].broadcast for p in earlier):
            first_dsb_extra = ish - cost.dsb_local        # the first DSB ISH completes an earlier broadcast
        for event, n in per_event.items():
            self.events[event] += n
        if trace is None:
            self.cycles += cycles + first_dsb_extra
        else:
            for i, (op, va, asid) in enumerate(ops):
                self.cycles += cost.dsb_ishst
                trace.add(self.cycles, self.index, Ev.DSB, barrier="ishst", completes=0)
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
        for op, va, asid, done_here in earlier:
            for cpu in (self.machine.cpus if op.broadcast else (self,)):
                if not (cpu is self and done_here):
                    cpu.tlb.invalidate(op, va, asid)
        everywhere = [o for o in ops if o[0].broadcast]
        runs = {}
        for cpu in self.machine.cpus:
            mine = ops if cpu is self else everywhere
            if not mine:
                continue
            if len(mine) not in runs:          # two lists at most: all ops, the broadcast ones
                tables = [o for o in mine if not o[0].last_level]
                run = TLBIRun(mine)
                runs[len(mine)] = (run, run if len(tables) == len(mine) else TLBIRun(tables))
            cpu.tlb.invalidate_run(*runs[len(mine)])
        if self._in_guest and self.tlb.lost:
            self._uc_flush()                     # else each CPU flushes before it next runs (Cpu.run)

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
        """Switch the exception level Unicorn runs at (EL0t user code, EL1h kernel code) as
        an exception entry or return does, banking the SP: a PSTATE write through Unicorn
        does not (QEMU's aarch64_save_sp/aarch64_restore_sp run only on its own entries and ERETs)."""
        if el == self.el:
            return
        raw = self._raw                        # (raw register calls: the kernel model switches often)
        raw.set_reg(self._live_sp_bank(raw.reg(A.UC_ARM64_REG_PSTATE)), raw.reg(A.UC_ARM64_REG_SP))
        raw.set_reg(A.UC_ARM64_REG_PSTATE, PSTATE_EL1H if el == 1 else PSTATE_EL0T)
        raw.set_reg(A.UC_ARM64_REG_SP, raw.reg(A.UC_ARM64_REG_SP_EL1 if el == 1 else A.UC_ARM64_REG_SP_EL0))
        # a CP_REG write makes Unicorn rebuild its cached hflags (docs/unicorn.md §EL0)
        self.uc.reg_write(A.UC_ARM64_REG_CP_REG, (13, 0, 3, 3, 2, raw.reg(A.UC_ARM64_REG_TPIDR_EL0)))
        self.el = el

    def _live_sp_bank(self, pstate: int | None = None) -> int:
        """The banked register the live SP stands for: SP_EL1 at EL1h, else SP_EL0 (EL0, EL1t)."""
        if pstate is None:
            pstate = self.uc.reg_read(A.UC_ARM64_REG_PSTATE)
        return A.UC_ARM64_REG_SP_EL1 if (pstate >> 2) & 3 == 1 and pstate & PSTATE_SPSEL else A.UC_ARM64_REG_SP_EL0

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
        """The SP of the running EL (SP_EL0 at EL0, SP_EL1 at EL1): Unicorn's live SP."""
        return self.uc.reg_read(A.UC_ARM64_REG_SP)

    @sp.setter
    def sp(self, v: int) -> None:
        self.uc.reg_write(A.UC_ARM64_REG_SP, v & ((1 << 64) - 1))

    @property
    def sp_el0(self) -> int:
        """The user stack pointer, at either EL (live at EL0, banked at EL1)."""
        bank = self._live_sp_bank()
        return self.uc.reg_read(A.UC_ARM64_REG_SP if bank == A.UC_ARM64_REG_SP_EL0 else A.UC_ARM64_REG_SP_EL0)

    @sp_el0.setter
    def sp_el0(self, v: int) -> None:
        bank = self._live_sp_bank()
        self.uc.reg_write(A.UC_ARM64_REG_SP if bank == A.UC_ARM64_REG_SP_EL0 else A.UC_ARM64_REG_SP_EL0,
                          v & ((1 << 64) - 1))

    @property
    def nzcv(self) -> int:
        """PSTATE.{N,Z,C,V} in bits [31:28], as MRS NZCV reads them."""
        return self.uc.reg_read(A.UC_ARM64_REG_NZCV)

    @nzcv.setter
    def nzcv(self, v: int) -> None:
        self.uc.reg_write(A.UC_ARM64_REG_NZCV, v & PSTATE_NZCV)

    @property
    def tpidr_el0(self) -> int:
        return self.uc.reg_read(A.UC_ARM64_REG_TPIDR_EL0)

    @tpidr_el0.setter
    def tpidr_el0(self, v: int) -> None:
        self.uc.reg_write(A.UC_ARM64_REG_TPIDR_EL0, v & ((1 << 64) - 1))

    def save_context(self) -> "UserContext":
        """The running thread's register state, for a context switch or a trap: x0..x30,
        PC, SP_EL0, NZCV, TPIDR_EL0, ELR_EL1/SPSR_EL1 (and FP/SIMD), as one Unicorn context (a
        memcpy of the vCPU state, ~4 us, against ~120 us for the registers one by one)."""
        if self._live_sp_bank() == A.UC_ARM64_REG_SP_EL0:
            self.uc.reg_write(A.UC_ARM64_REG_SP_EL0, self.uc.reg_read(A.UC_ARM64_REG_SP))   # banked, where restore reads it
        return UserContext(self.uc.context_save())

    def restore_context(self, ctx: "UserContext") -> None:
        """Make a saved thread state this CPU's (saved on any CPU, at either EL). What a
        Unicorn context also carries of the CPU and moment it was saved is put back to this
        CPU's own: its EL and SP_EL1 (PSTATE but NZCV), and its TTBRs/TCR/MAIR (the model's
        are the truth). Unicorn's TLB is this CPU's and stays valid."""
        uc = self.uc
        pstate = uc.reg_read(A.UC_ARM64_REG_PSTATE)
        bank = self._live_sp_bank(pstate)
        sp_el1 = uc.reg_read(A.UC_ARM64_REG_SP if bank == A.UC_ARM64_REG_SP_EL1 else A.UC_ARM64_REG_SP_EL1)
        uc.context_restore(ctx.state)
        uc.reg_write(A.UC_ARM64_REG_PSTATE, uc.reg_read(A.UC_ARM64_REG_PSTATE) & PSTATE_NZCV | pstate & ~PSTATE_NZCV)
        uc.reg_write(A.UC_ARM64_REG_SP_EL1, sp_el1)
        uc.reg_write(A.UC_ARM64_REG_SP, sp_el1 if bank == A.UC_ARM64_REG_SP_EL1 else uc.reg_read(A.UC_ARM64_REG_SP_EL0))
        self._sync_sysregs()                 # (its CP_REG writes also rebuild Unicorn's hflags)

    def run(self, count: int, pc: int | None = None) -> Stop:
        """Run up to `count` (> 0) guest instructions from pc (default: where it stopped).

        A synchronous exception (SVC, abort, undefined instruction, BRK, bus error) ends
        the run and is charged cost.exception_entry; `executed` counts the instructions
        retired (an aborted or undefined instruction is not; a branch whose target
        aborts on fetch is)."""
        if count <= 0:
            raise ValueError(f"instruction count must be positive, not {count}")   # Unicorn: 0 = no limit
        raw = self._raw
        if pc is None:
            pc = raw.pc()
        self._fault = None
        self._intr = None
        self._probed = False
        self._bus_error = None
        start_insns = self.insns
        kind = StopKind.QUANTUM
        detail = ""
        self.el = raw.el()                  # PSTATE is the truth, whatever changed it
        if self._redecode:
            self._redecode = False
            self._uc_flush()
        elif self.tlb.lost or len(self._uc_holds) > UC_HOLDS_LIMIT:
            # a TLBI removed entries while this CPU was stopped; or the record of what Unicorn
            # was given grew long (a flush is always safe, and resets it)
            self._uc_flush()
        self._in_guest = True
        status = raw.emu_start(pc, count)
        self._in_guest = False
        hx = raw.take_hook_exception()
        if hx is not None:
            raise hx
        new_pc = raw.pc()
        if status != ucb.UC_ERR_OK:
            if self._fault is not None:
                kind = StopKind.FAULT
            elif self._bus_error is not None:
                access, pa = self._bus_error
                what = ("read", "write", "fetch")[access]
                kind, detail = StopKind.BUS_ERROR, f"{what} of unmapped PA {pa:#x}"
            elif status == ucb.UC_ERR_EXCEPTION and new_pc & ~0xFFF == SENTINEL_PAGE:
                # the guest fetched from the sentinel page, which the fill hook does not give
                # to the model: ask it now (a VA in the hole: a level-0 translation fault)
                self._fault = self._translate(new_pc, int(Access.FETCH), self.el)
                self.faults += 1
                kind = StopKind.FAULT
            elif not (status == ucb.UC_ERR_EXCEPTION and self._probed):
                kind, detail = StopKind.ERROR, ucb.strerror(status)
            # else: only Unicorn's end-of-run probe of the sentinel page was refused
        if kind is StopKind.QUANTUM and self._intr is not None:
            kind = {2: StopKind.SVC, 1: StopKind.UNDEF, 7: StopKind.BRK}.get(self._intr, StopKind.ERROR)
            if kind is StopKind.ERROR:
                detail = f"unexpected exception {self._intr}"
        # instructions retired in this call: an instruction abort on fetch happens before
        # the instruction is counted; a data abort, UNDEF or BRK after
        fetch_abort = (kind is StopKind.FAULT and self._fault.access is Access.FETCH) or (
            kind is StopKind.BUS_ERROR and self._bus_error[0] == int(Access.FETCH))
        not_retired = kind in EXCEPTION_STOPS and kind is not StopKind.SVC and not fetch_abort
        if self.instrument:
            executed = self.insns - start_insns
            if not_retired and executed:
                executed -= 1                   # the code hook counted the instruction that did not retire
                self.insns -= 1
                self.cycles -= self.cost.base_cpi
        else:
            if self._counter is not None:
                c = self._counter.value
                executed = min(c, count)
                if not_retired and c <= count:
                    executed = max(0, c - 1)
            else:
                executed = count if kind is StopKind.QUANTUM else 0
            self.insns += executed
            self.cycles += executed * self.cost.base_cpi
        if kind in EXCEPTION_STOPS:
            self.cycles += self.cost.exception_entry
        svc = None
        trace = self.machine.trace
        if kind is StopKind.SVC:
            insn = int.from_bytes(self._read_code(new_pc - 4), "little")
            svc = (insn >> 5) & 0xFFFF
            if trace is not None:
                trace.add(self.cycles, self.index, Ev.SVC, imm=svc, x8=self.reg(8), pc=new_pc - 4)
        elif kind is StopKind.UNDEF:
            self.events["undef"] += 1
            if trace is not None:
                trace.add(self.cycles, self.index, Ev.UNDEF, pc=new_pc, insn=f"{self._code_word(new_pc):08x}",
                          el=self.el)
        if self.pending:
            self.complete_tlbis()               # hardware completes them eventually; at the latest here
        if self.spec_rate:
            self.speculate()
        self.el = raw.el()
        return Stop(kind, new_pc, executed, svc, self._fault, detail)

    def _read_code(self, va: int) -> bytes:
        """Read an instruction word without disturbing TLB state or statistics."""
        va = untagged(self.regime, va)
        e = self.tlb.probe(va, self.regime.asid)
        if e is None:
            e = walk(self.mem, self.regime, va)
            if e.__class__ is Fault:
                return b"\0\0\0\0"
        return self.mem.read(e.pa_base | (va & (e.size - 1)), 4)
    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, int]:
        """This CPU's statistics under the names emu/stats.py declares (with descriptions)."""
        from .stats import cpu_stats
        return cpu_stats(self)
