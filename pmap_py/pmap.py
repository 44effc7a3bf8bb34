"""OpenBSD arm64 pmap (sys/arch/arm64/arm64/pmap.c 1.113, 1.111, 1.58) on real page tables.

Reference: docs/openbsd-exit-path.md (its pmap sections and §Counts). Function names are
OpenBSD's; each takes the Cpu of the calling thread first (``curcpu()``), and every
TTBR write, TLBI, DSB and ISB is issued on that Cpu so it is counted in
``cpu.events`` and costed. Kernel work (descriptor writes, table-page allocation and
freeing, lock acquisitions, cache maintenance, spin-wait iterations) is charged with
``cpu.charge`` from the core preset's cost table.

Model
-----
* A vp table (``PmapVp``) is one PAGE_TABLE frame holding the 512 hardware
  descriptors the MMU walks, owned by its pmap with its level, plus a Python dict for
  the software half (OpenBSD's second page: pointers to the next vp or to pteds).
  User pmaps are 3-level (T0SZ = 25): L1 -> L2 -> L3.
* ``PmapSystem`` holds the globals of one Machine: pmap_kernel() (ASID 0,
  pm_active 1, privileged, pm_pt0pa = the zero page), the zero page (an all-invalid
  L1 table frame of kind ZERO), the kernel's TTBR1 L1 table, pmap_tramp, the ASID
  allocator (asid.py), per-CPU ``ci_curpm`` and the pmap bits of each vm_page
  (``pg_flags``: PG_PMAP_REF/MOD/EXE).
* Managed pages: PHYS_TO_VM_PAGE(pa) is non-NULL for memory uvm manages. Here that is a
  frame the allocator handed out as USER or KERNEL; the zero page, page-table frames and
  never-allocated frames are unmanaged (no ref/mod emulation, no icache tracking).
  A freed frame loses its pg_flags (uvm frees it through pmap_page_protect(PROT_NONE),
  which clears PG_PMAP_EXE).
* Userland ASID: OpenBSD runs EL0 with TTBR1 = trampoline table and ASID|ASID_USER
  (trampoline.S flips TTBR1 bit 48 and the table base on every EL0 entry/return).
  ``pmap_userret(cpu)`` / ``pmap_kernel_entry(cpu)`` model exactly that flip (TTBR1
  write + ISB, and the Cpu's exception level), so fills made while a guest runs are
  tagged with the odd ASID and fills made in the kernel with the even one: both can
  hold entries, which is why every flush is issued for both.
* Revisions are policy data: ``POLICIES[revision]`` is one ``RevisionPolicy`` and the
  code asks it what to do, never which revision it is.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Iterator

from emu.descriptors import (AP_SHIFT, ATTR_AF, ATTR_GP, ATTR_nG, ATTR_PXN, ATTR_UXN,
                             ATTRINDX_SHIFT, SH_INNER, SH_SHIFT, table_desc)
from emu.frames import FrameKind, OutOfFrames
from emu.physmem import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE
from emu.sysregs import SysReg, make_ttbr, openbsd_tcr
from emu.tlbi import TLBIOp
from emu.trace import Ev

from .asid import ASID_USER, PMAP_ASID_MASK, AsidAllocator, AsidError, RandomAsidAllocator
from .cpufunc import (MASK64, cpu_flush_bp, cpu_setttb, cpu_tlb_flush, cpu_tlb_flush_asid_all,
                      tlb_flush_seq)

# uvm_extern.h / pmap.h
PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
PROT_MASK = PROT_READ | PROT_WRITE | PROT_EXEC
PMAP_WIRED = 0x10
PMAP_CANFAIL = 0x20
ENOMEM = 12

# the pmap bits of struct vm_page's pg_flags (arm64 pmap.h: PG_PMAP0..2)
PG_PMAP_MOD, PG_PMAP_REF, PG_PMAP_EXE = 1, 2, 4

USER_SPACE_BITS = 39
VM_MIN_ADDRESS = 0
VM_MAXUSER_ADDRESS = (1 << USER_SPACE_BITS) - 0x8000
VM_MIN_KERNEL_ADDRESS = MASK64 & ~((1 << USER_SPACE_BITS) - 1)   # 0xffffff8000000000
# `zero_page`: one kernel VA per CPU (zero_page + cpu_number() * PAGE_SIZE) that
# pmap_zero_page and pmap_icache_sync_page map a frame at; inside the first GB of kernel
# VA, whose tables pmap_bootstrap preallocates. The last MB of that GB is used here.
PMAP_ZERO_PAGE_VA = VM_MIN_KERNEL_ADDRESS + (1 << 30) - (1 << 20)
MAXCPUS = 256

L3_P = 0b11                                    # page descriptor
PTE_ATTR_WB = 0                                # MAIR index 0: normal write-back
_ATTR_WB = ATTR_nG | PTE_ATTR_WB << ATTRINDX_SHIFT | SH_INNER << SH_SHIFT
_VA44 = (1 << 44) - 1


def ATTR_AP(x: int) -> int:
    return x << AP_SHIFT


# ap_bits_user[] / ap_bits_kern[] of pmap.c 1.113, indexed by the currently enabled PROT bits
ap_bits_user = {
    PROT_NONE: 0,
    PROT_READ: ATTR_PXN | ATTR_UXN | ATTR_AF | ATTR_AP(3),
    PROT_WRITE: ATTR_PXN | ATTR_UXN | ATTR_AF | ATTR_AP(1),
    PROT_WRITE | PROT_READ: ATTR_PXN | ATTR_UXN | ATTR_AF | ATTR_AP(1),
    PROT_EXEC: ATTR_PXN | ATTR_AF | ATTR_AP(2),
    PROT_EXEC | PROT_READ: ATTR_PXN | ATTR_AF | ATTR_AP(3),
    PROT_EXEC | PROT_WRITE: ATTR_PXN | ATTR_AF | ATTR_AP(1),
    PROT_EXEC | PROT_WRITE | PROT_READ: ATTR_PXN | ATTR_AF | ATTR_AP(1),
}
ap_bits_kern = {
    PROT_NONE: 0,
    PROT_READ: ATTR_PXN | ATTR_UXN | ATTR_AF | ATTR_AP(2),
    PROT_WRITE: ATTR_PXN | ATTR_UXN | ATTR_AF | ATTR_AP(0),
    PROT_WRITE | PROT_READ: ATTR_PXN | ATTR_UXN | ATTR_AF | ATTR_AP(0),
    PROT_EXEC: ATTR_UXN | ATTR_AF | ATTR_AP(2),
    PROT_EXEC | PROT_READ: ATTR_UXN | ATTR_AF | ATTR_AP(2),
    PROT_EXEC | PROT_WRITE: ATTR_UXN | ATTR_AF | ATTR_AP(0),
    PROT_EXEC | PROT_WRITE | PROT_READ: ATTR_UXN | ATTR_AF | ATTR_AP(0),
}
HELD_FLUSHES_MAX = 8192          # flushes_batched issues its batch at the latest at this many

# pmap.c 1.58's [PROT_NONE] entry of both tables: a valid page descriptor without AF
AP_PROT_NONE_1_58 = ATTR_PXN | ATTR_UXN | ATTR_AP(2)


class PmapError(ValueError):
    """Bad input to a pmap operation, or an operation OpenBSD would KASSERT/panic on
    (or hang in). Raised before anything is modified."""


# ---------------------------------------------------------------------- revisions

class AsidScheme(Enum):
    GENERATIONS = "generations"     # pmap_setttb allocates; pairs, generations, rollover (1.113)
    RANDOM_CAS = "random-cas"       # pmap_pinit allocates: arc4random + atomic_cas (1.58)


class Deactivate(Enum):
    EMPTY = "empty"                 # 1.58: pmap_deactivate(p) {}
    PARK = "park"                   # TTBR0 <- zero page, ISB, pm_active-- (1.113)
    PARK_FLUSH_LAST = "park+flush"  # as PARK; the decrement to 0 also flushes both ASIDs (1.111)


class IcacheSync(Enum):
    SYNC_RANGE = "cpu_icache_sync_range"    # 1.58: on the VA itself, if pm is current
    SYNC_PAGE = "pmap_icache_sync_page"     # 1.113: kenter + sync + kremove at zero_page


@dataclass(frozen=True)
class RevisionPolicy:
    """What one pmap.c revision does differently. Each field names the function it
    governs; docs/openbsd-exit-path.md has the source text behind each value."""
    revision: str
    date: str
    ttlb_flush_skips_inactive: bool     # ttlb_flush: `if (!pm->pm_active) return;`
    pte_remove_flushes: bool            # pmap_pte_remove ends with its own ttlb_flush
    enter_flush_unconditional: bool     # pmap_enter flushes even when nothing was inserted
    enter_skips_unchanged: bool         # pmap_enter returns early: same PA, prot, cache mode
    fixup_needs_pte: bool               # pmap_fault_fixup: `if (*pl3 == 0) goto done;`
    pte_zero_without_access: bool       # pmap_pte_update: `*pl3 = access_bits ? pte : 0;`
    ap_prot_none: int                   # ap_bits_user/kern[PROT_NONE]
    pm_guarded: bool                    # kernel and tramp pm_guarded = ATTR_GP
    icache_sync: IcacheSync             # first exec mapping of a page (PG_PMAP_EXE clear)
    page_ro_clears_read: bool           # pmap_page_ro drops PROT_READ when prot lacks it
    deactivate: Deactivate
    has_pmap_purge: bool
    asid_scheme: AsidScheme


POLICIES: dict[str, RevisionPolicy] = {
    "1.58": RevisionPolicy(
        "1.58", "2018/09/12", ttlb_flush_skips_inactive=False, pte_remove_flushes=True,
        enter_flush_unconditional=True, enter_skips_unchanged=False, fixup_needs_pte=True,
        pte_zero_without_access=False, ap_prot_none=AP_PROT_NONE_1_58, pm_guarded=False,
        icache_sync=IcacheSync.SYNC_RANGE, page_ro_clears_read=False, deactivate=Deactivate.EMPTY, has_pmap_purge=False,
        asid_scheme=AsidScheme.RANDOM_CAS),
    # 1.111 is known from the hunks of the tech@ diff of 13 May 2025 only: it is 1.113
    # without pmap_purge, whose ASID flush sat in the last pmap_deactivate instead.
    "1.111": RevisionPolicy(
        "1.111", "2025/02/14", ttlb_flush_skips_inactive=True, pte_remove_flushes=False,
        enter_flush_unconditional=False, enter_skips_unchanged=True, fixup_needs_pte=False,
        pte_zero_without_access=True, ap_prot_none=0, pm_guarded=True,
        icache_sync=IcacheSync.SYNC_PAGE, page_ro_clears_read=True, deactivate=Deactivate.PARK_FLUSH_LAST,
        has_pmap_purge=False, asid_scheme=AsidScheme.GENERATIONS),
    "1.113": RevisionPolicy(
        "1.113", "2025/07/12", ttlb_flush_skips_inactive=True, pte_remove_flushes=False,
        enter_flush_unconditional=False, enter_skips_unchanged=True, fixup_needs_pte=False,
        pte_zero_without_access=True, ap_prot_none=0, pm_guarded=True,
        icache_sync=IcacheSync.SYNC_PAGE, page_ro_clears_read=True, deactivate=Deactivate.PARK,
        has_pmap_purge=True,
        asid_scheme=AsidScheme.GENERATIONS),
}
REVISIONS = tuple(POLICIES)


def VP_IDX1(va: int) -> int:
    return (va >> 30) & 0x1FF


def VP_IDX2(va: int) -> int:
    return (va >> 21) & 0x1FF


def VP_IDX3(va: int) -> int:
    return (va >> 12) & 0x1FF


@dataclass(eq=False, slots=True)
class PmapVp:
    """struct pmapvp1/2/3: the hardware table frame + the software slots."""
    level: int
    pa: int                                     # PAGE_TABLE frame with the 512 descriptors
    vp: dict = field(default_factory=dict)      # index -> PmapVp (L1, L2) or PteDesc (L3)


@dataclass(eq=False, slots=True)
class PteDesc:
    """struct pte_desc."""
    pted_pmap: "Pmap"
    pted_va: int = 0        # page VA | PROT bits the mapping may have
    pted_pte: int = 0       # PA | PROT bits currently enabled in hardware; 0 = not valid
    wired: bool = False     # PTED_VA_WIRED_M
    managed: bool = False   # PTED_VA_MANAGED_M: on its vm_page's pv list

    @property
    def va(self) -> int:
        return self.pted_va & ~PAGE_MASK

    @property
    def pa(self) -> int:
        return self.pted_pte & ~PAGE_MASK

    @property
    def valid(self) -> bool:            # PTED_VALID
        return self.pted_pte != 0


@dataclass(slots=True)
class PmapStats:
    resident_count: int = 0
    wired_count: int = 0


@dataclass(eq=False)
class Pmap:
    """struct pmap. Identity-hashed: the object itself owns its table frames."""
    pm_name: str
    pm_vp: PmapVp | None = None     # pm_vp.l1
    pm_pt0pa: int = 0
    pm_asid: int = 0                # ASID (low 16 bits, even) | generation
    pm_active: int = 0
    pm_refs: int = 0
    pm_stats: PmapStats = field(default_factory=PmapStats)
    pm_privileged: bool = False
    pm_guarded: int = 0             # ATTR_GP or 0, OR-ed into every PTE's access bits
    pm_destroyed: bool = False

    @property
    def asid(self) -> int:
        return self.pm_asid & PMAP_ASID_MASK

    @property
    def generation(self) -> int:
        return self.pm_asid & ~PMAP_ASID_MASK

    def __str__(self) -> str:
        return self.pm_name

    def __repr__(self) -> str:
        return (f"Pmap({self.pm_name}, asid={self.asid}, gen={self.generation >> 16}, "
                f"active={self.pm_active}, refs={self.pm_refs})")


class PmapSystem:
    """The pmap globals of one Machine. Build it with pmap_bootstrap()."""

    def __init__(self, machine, revision: str = "1.113", rng: random.Random | None = None):
        if revision not in POLICIES:
            raise PmapError(f"unknown pmap revision {revision!r} (one of {', '.join(REVISIONS)})")
        if len(machine.cpus) > MAXCPUS:
            raise PmapError(f"at most {MAXCPUS} CPUs (one zero_page window each), not {len(machine.cpus)}")
        self.machine = machine
        self.mem = machine.mem
        self.frames = machine.frames
        self.revision = revision
        self.policy = policy = POLICIES[revision]
        rng = rng or random.Random(f"{machine.seed}/pmap")
        if policy.asid_scheme is AsidScheme.RANDOM_CAS:
            self.asids = RandomAsidAllocator(rng)
        else:
            self.asids = AsidAllocator(1 << 16 if machine.core.asid_bits == 16 else 256, rng)
        # flush a pmap_remove's TLBIs through Cpu.tlbi_flush_batch (same events, cycles and
        # TLB contents as one sequence at a time); off: one sequence at a time
        self.batch_flushes = True
        self._held_flushes: list | None = None     # flushes_batched: the held (op, xt) pairs
        self._held_cpu = None
        self._managed_kinds = frozenset((FrameKind.USER, FrameKind.KERNEL))
        self._sync_page = policy.icache_sync is IcacheSync.SYNC_PAGE
        self.ap_bits_user = {**ap_bits_user, PROT_NONE: policy.ap_prot_none}
        self.ap_bits_kern = {**ap_bits_kern, PROT_NONE: policy.ap_prot_none}
        self._next_id = 1
        self.live: set[Pmap] = set()
        self.pg_flags: dict[int, int] = {}          # frame PA -> PG_PMAP_* bits
        self.frames.listeners.append(self._frame_changed)

        guarded = ATTR_GP if policy.pm_guarded else 0
        kpm = Pmap("pmap_kernel", pm_active=1, pm_refs=1, pm_privileged=True, pm_guarded=guarded)
        self._kernel = kpm
        # pmap_bootstrap: the page filled with zeroes is the kernel's pm_pt0pa
        self.zero_page = self.frames.alloc(FrameKind.ZERO, owner=kpm, level=1)
        kpm.pm_pt0pa = self.zero_page
        # the kernel's own L1 (TTBR1 base) and the trampoline pmap's L1 (TTBR1 in userland)
        kpm.pm_vp = PmapVp(1, self.frames.alloc(FrameKind.PAGE_TABLE, owner=kpm, level=1))
        self.kernel_l1 = kpm.pm_vp.pa
        tramp = Pmap("pmap_tramp", pm_active=1, pm_refs=1, pm_privileged=True, pm_guarded=guarded)
        tramp.pm_vp = PmapVp(1, self.frames.alloc(FrameKind.PAGE_TABLE, owner=tramp, level=1))
        tramp.pm_pt0pa = self.zero_page
        self.pmap_tramp = tramp
        self.tramp_l1 = tramp.pm_vp.pa
        self.ci_curpm: list[Pmap] = [kpm for _ in machine.cpus]
        self._bootstrap_kernel_window(PMAP_ZERO_PAGE_VA, len(machine.cpus))

    def _bootstrap_kernel_window(self, va: int, npages: int) -> None:
        """pmap_bootstrap preallocates the kernel's vp tables and pteds: do it for the
        zero_page window so pmap_icache_sync_page allocates nothing."""
        kpm, mem = self._kernel, self.mem
        vp2 = PmapVp(2, self.frames.alloc(FrameKind.PAGE_TABLE, owner=kpm, level=2))
        kpm.pm_vp.vp[VP_IDX1(va)] = vp2
        mem.write64(kpm.pm_vp.pa + VP_IDX1(va) * 8, table_desc(vp2.pa))
        vp3 = PmapVp(3, self.frames.alloc(FrameKind.PAGE_TABLE, owner=kpm, level=3))
        vp2.vp[VP_IDX2(va)] = vp3
        mem.write64(vp2.pa + VP_IDX2(va) * 8, table_desc(vp3.pa))
        for i in range(npages):
            vp3.vp[VP_IDX3(va + i * PAGE_SIZE)] = PteDesc(kpm)

    def _frame_changed(self, pa: int, old, new) -> None:
        if new.kind is FrameKind.FREE:
            self.pg_flags.pop(pa, None)

    # ------------------------------------------------------------------ globals
    def pmap_kernel(self) -> Pmap:
        return self._kernel

    @property
    def pmap_asid(self) -> list[int]:
        return self.asids.pmap_asid

    @property
    def pmap_nasid(self) -> int:
        return self.asids.pmap_nasid

    @property
    def pmap_asid_gen(self) -> int:
        return self.asids.pmap_asid_gen

    def curpm(self, cpu) -> Pmap:
        return self.ci_curpm[cpu.index]

    def zero_page_va(self, cpu) -> int:
        """zero_page + cpu_number() * PAGE_SIZE."""
        return PMAP_ZERO_PAGE_VA + cpu.index * PAGE_SIZE

    def PHYS_TO_VM_PAGE(self, pa: int) -> bool:
        """Whether pa is a managed page (see the module docstring)."""
        return self.frames.info(pa & ~PAGE_MASK).kind in self._managed_kinds

    # ------------------------------------------------------------------ helpers
    def _trace(self, cpu, op: str, pm: Pmap | None = None, **f) -> None:
        trace = self.machine.trace
        if trace is not None:
            if pm is not None:
                f["pmap"] = pm.pm_name
                f["asid"] = pm.asid
            trace.add(cpu.cycles, cpu.index, Ev.KERNEL, op=op, **f)

    def _alive(self, pm: Pmap, op: str) -> None:
        if not isinstance(pm, Pmap):
            raise PmapError(f"{op}: {pm!r} is not a pmap")
        if pm.pm_destroyed:
            raise PmapError(f"{op}: {pm.pm_name} was already destroyed")

    def _lock(self, cpu, pm: Pmap) -> None:
        """pmap_lock(): pm_mtx, taken for user pmaps only."""
        if pm is not self._kernel:
            cpu.charge(cpu.cost.lock_acquire, "lock_acquire")

    def _check_va(self, pm: Pmap, va: int, op: str, end: bool = False) -> None:
        if va & PAGE_MASK:
            raise PmapError(f"{op}: VA {va:#x} is not page aligned")
        if pm is self._kernel:
            if not VM_MIN_KERNEL_ADDRESS <= va <= (1 << 64) - (0 if end else PAGE_SIZE):
                raise PmapError(f"{op}: VA {va:#x} is not a kernel address "
                                f"(>= {VM_MIN_KERNEL_ADDRESS:#x})")
        elif not VM_MIN_ADDRESS <= va <= VM_MAXUSER_ADDRESS - (0 if end else PAGE_SIZE):
            raise PmapError(f"{op}: VA {va:#x} is outside user space "
                            f"[{VM_MIN_ADDRESS:#x}, VM_MAXUSER_ADDRESS={VM_MAXUSER_ADDRESS:#x})")

    def _write_desc(self, cpu, pa: int, value: int) -> None:
        self.mem.write64(pa, value)
        cpu.charge(cpu.cost.descriptor_write)

    def _vp_alloc(self, cpu, pm: Pmap, level: int) -> PmapVp:
        """pool_get(&pmap_vp_pool, PR_ZERO): a zeroed table frame owned by pm."""
        pa = self.frames.alloc(FrameKind.PAGE_TABLE, owner=pm, level=level)
        if cpu is not None:
            cpu.charge(cpu.cost.frame_zero, "pt_pages_allocated")
        return PmapVp(level, pa)

    def _vp_free(self, cpu, vp: PmapVp) -> None:
        self.frames.free(vp.pa)
        cpu.charge(cpu.cost.frame_free, "pt_pages_freed")

    def _pv_lock(self, cpu) -> None:
        """The vm_page's pv_mtx around pmap_enter_pv / pmap_remove_pv."""
        cpu.charge(cpu.cost.lock_acquire, "lock_acquire")

    # ------------------------------------------------------------------ create / reference
    def pmap_create(self, cpu=None) -> Pmap:
        """pool_get a pmap and pmap_pinit it: top (L1) table, pm_pt0pa, refs = 1.
        With generations the ASID comes at the first pmap_setttb (generation 0 is always
        stale); pmap.c 1.58 allocates it here."""
        pm = Pmap(f"pmap{self._next_id}")
        self._next_id += 1
        self.pmap_pinit(cpu, pm)
        self.live.add(pm)
        if cpu is not None:
            self._trace(cpu, "pmap_create", pm, pt0pa=pm.pm_pt0pa)
        return pm

    def pmap_pinit(self, cpu, pm: Pmap) -> None:
        if self.policy.asid_scheme is AsidScheme.RANDOM_CAS:
            self.pmap_allocate_asid(cpu, pm)            # before anything is allocated
        pm.pm_vp = self._vp_alloc(cpu, pm, 1)
        pm.pm_pt0pa = pm.pm_vp.pa
        self.pmap_reference(pm)

    def pmap_reference(self, pm: Pmap) -> None:
        self._alive(pm, "pmap_reference")
        pm.pm_refs += 1

    # ------------------------------------------------------------------ vp tree
    def pmap_vp_lookup(self, pm: Pmap, va: int) -> tuple[PteDesc | None, PmapVp | None]:
        """(pted, vp3 holding its slot) or (None, vp3 or None)."""
        vp2 = pm.pm_vp.vp.get(VP_IDX1(va)) if pm.pm_vp is not None else None
        if vp2 is None:
            return None, None
        vp3 = vp2.vp.get(VP_IDX2(va))
        if vp3 is None:
            return None, None
        return vp3.vp.get(VP_IDX3(va)), vp3

    def pmap_vp_enter(self, cpu, pm: Pmap, va: int, pted: PteDesc) -> PmapVp:
        """Put pted in its L3 slot, allocating L2/L3 tables on demand (pmap_set_l2/l3:
        table descriptor = next table's PA | L1_TYPE_PT / L2_TYPE_PT). Returns the vp3."""
        vp1 = pm.pm_vp
        idx1 = VP_IDX1(va)
        vp2 = vp1.vp.get(idx1)
        if vp2 is None:
            vp2 = self._vp_alloc(cpu, pm, 2)
            vp1.vp[idx1] = vp2
            self._write_desc(cpu, vp1.pa + idx1 * 8, table_desc(vp2.pa))
        idx2 = VP_IDX2(va)
        vp3 = vp2.vp.get(idx2)
        if vp3 is None:
            vp3 = self._vp_alloc(cpu, pm, 3)
            vp2.vp[idx2] = vp3
            self._write_desc(cpu, vp2.pa + idx2 * 8, table_desc(vp3.pa))
        vp3.vp[VP_IDX3(va)] = pted
        return vp3

    # ------------------------------------------------------------------ PTEs
    def pmap_fill_pte(self, pm: Pmap, va: int, pa: int, pted: PteDesc, prot: int, flags: int) -> None:
        pted.pted_pmap = pm
        pted.pted_va = va | (prot & PROT_MASK)
        if flags & PMAP_WIRED:
            pted.wired = True
            pm.pm_stats.wired_count += 1
        pted.pted_pte = (pa & ~PAGE_MASK) | (flags & PROT_MASK)

    def pmap_pte_bits(self, pted: PteDesc) -> int:
        """The L3 descriptor pmap_pte_update() writes: PA | nG | WB attr | SH inner |
        access bits (AP, AF, UXN/PXN) | pm_guarded | L3_P. In 1.113 it is 0 when no access
        bit (and no GP) is set; 1.58 always writes the descriptor."""
        pm = pted.pted_pmap
        table = self.ap_bits_kern if pm.pm_privileged else self.ap_bits_user
        access_bits = table[pted.pted_pte & PROT_MASK] | pm.pm_guarded
        if not access_bits and self.policy.pte_zero_without_access:
            return 0
        return pted.pa | _ATTR_WB | access_bits | L3_P

    def pmap_pte_update(self, cpu, pted: PteDesc, vp3: PmapVp) -> None:
        self._write_desc(cpu, vp3.pa + VP_IDX3(pted.va) * 8, self.pmap_pte_bits(pted))
        cpu.events["pte_writes"] += 1

    def pmap_pte_remove(self, cpu, pted: PteDesc, remove_pted: bool) -> None:
        pm = pted.pted_pmap
        va = pted.va
        _, vp3 = self.pmap_vp_lookup(pm, va)
        if vp3 is None:
            raise AssertionError(f"pmap_pte_remove: no L3 table for {va:#x}")
        if remove_pted:
            vp3.vp.pop(VP_IDX3(va), None)
        self._write_desc(cpu, vp3.pa + VP_IDX3(va) * 8, 0)
        cpu.events["ptes_cleared"] += 1
        if self.policy.pte_remove_flushes:
            self.ttlb_flush(cpu, pm, va)

    def ttlb_flush(self, cpu, pm: Pmap, va: int) -> None:
        """Skipped while pm_active == 0 (not in 1.58); kernel pmap: one VAALE1IS
        (cpu_tlb_flush_all_asid); user pmap: VAE1IS (cpu_tlb_flush_asid) for the ASID,
        then for ASID|ASID_USER."""
        if pm.pm_active == 0 and self.policy.ttlb_flush_skips_inactive:
            return
        if self._held_flushes is not None and self._held_cpu is cpu:
            held = self._held_flushes
            held.extend(self.ttlb_flush_ops(pm, va))
            if len(held) >= HELD_FLUSHES_MAX:
                cpu.tlbi_flush_batch(held)             # (bounds the memory a 1 GiB populate holds)
                held.clear()
            return
        for op, xt in self.ttlb_flush_ops(pm, va):
            tlb_flush_seq(cpu, op, xt)

    @contextmanager
    def flushes_batched(self, cpu) -> Iterator[None]:
        """Within: cpu's ttlb_flushes (pmap.c 1.58's pmap_enter flushes every page it
        enters, even on an inactive pmap) are held and issued at the end as one
        Cpu.tlbi_flush_batch: the same events, cycles and TLB contents as one sequence at a
        time, for a loop of pmap calls during which nothing fills a TLB (a populate: no
        guest code, no lookup). Traced, or with the erratum's repeated TLBI, nothing is
        held: every record keeps its cycle stamp."""
        if (self._held_flushes is not None or self.machine.trace is not None or not self.batch_flushes
                or self.machine.core.repeat_tlbi):
            yield
            return
        self._held_flushes, self._held_cpu = [], cpu
        try:
            yield
        finally:
            flushes, self._held_flushes, self._held_cpu = self._held_flushes, None, None
            cpu.tlbi_flush_batch(flushes)

    def ttlb_flush_ops(self, pm: Pmap, va: int) -> list[tuple[TLBIOp, int]]:
        """The (TLBI, operand) pairs of one ttlb_flush, whether or not it is skipped."""
        resva = (va >> PAGE_SHIFT) & _VA44
        if pm is self._kernel:
            return [(TLBIOp.VAALE1IS, resva)]
        resva |= (pm.pm_asid << 48) & MASK64
        return [(TLBIOp.VAE1IS, resva), (TLBIOp.VAE1IS, resva | ASID_USER << 48)]

    def pmap_remove_pted(self, cpu, pm: Pmap, pted: PteDesc) -> None:
        pm.pm_stats.resident_count -= 1
        if pted.wired:
            pm.pm_stats.wired_count -= 1
            pted.wired = False
        va = pted.va
        self.pmap_pte_remove(cpu, pted, pm is not self._kernel)
        self.ttlb_flush(cpu, pm, va)
        if pted.managed:
            self._pv_lock(cpu)                          # pmap_remove_pv
            pted.managed = False
        pted.pted_pte = 0
        pted.pted_va = 0

    # ------------------------------------------------------------------ icache
    def pmap_icache_sync_page(self, cpu, pm: Pmap, pa: int) -> None:
        """1.113: map the frame at this CPU's zero_page VA, cpu_icache_sync_range over it,
        unmap it: one VAALE1IS for the kenter and one for the kremove."""
        kva = self.zero_page_va(cpu)
        self.pmap_kenter_pa(cpu, kva, pa & ~PAGE_MASK, PROT_READ | PROT_WRITE)
        cpu.charge(cpu.cost.icache_sync_page, "icache_sync_page")
        self.pmap_kremove_pg(cpu, kva)

    def _icache_sync(self, cpu, pm: Pmap, pa: int) -> None:
        """The sync a first exec mapping of a managed page needs, per revision."""
        if self.policy.icache_sync is IcacheSync.SYNC_PAGE:
            self.pmap_icache_sync_page(cpu, pm, pa)
        elif pm is self._kernel or self.ci_curpm[cpu.index] is pm:
            cpu.charge(cpu.cost.icache_sync_page, "icache_sync_page")    # 1.58: on the VA

    # ------------------------------------------------------------------ enter / remove / protect
    def pmap_enter(self, cpu, pm: Pmap, va: int, pa: int, prot: int, flags: int | None = None) -> int:
        """Map va -> pa with maximum protection `prot`.

        As in OpenBSD the hardware descriptor gets the access bits in ``flags`` (the
        access type uvm_fault passes), and is written (followed by ttlb_flush) only if
        flags has an access bit or PMAP_WIRED; the other bits are enabled later by
        pmap_fault_fixup. ``flags=None`` means ``flags=prot``: map with full rights now.
        1.113 returns at once, with no TLBI, when the same PA is already mapped with the
        same prot; otherwise a valid mapping at va is removed first (pmap_remove_pted,
        with its flush). 1.58 flushes even when it inserted nothing. The first exec
        mapping of a managed page syncs the icache. Returns 0, or ENOMEM with
        PMAP_CANFAIL when no table frame is left."""
        if pm.__class__ is not Pmap or pm.pm_destroyed:
            self._alive(pm, "pmap_enter")
        kernel = pm is self._kernel
        if kernel or va & PAGE_MASK or not VM_MIN_ADDRESS <= va < VM_MAXUSER_ADDRESS:
            self._check_va(pm, va, "pmap_enter")
        if pa & PAGE_MASK:
            raise PmapError(f"pmap_enter: PA {pa:#x} is not page aligned")
        if not 0 <= pa < self.mem.size:
            raise PmapError(f"pmap_enter: PA {pa:#x} is outside physical memory ({self.mem.size:#x} bytes)")
        if prot & ~PROT_MASK:
            raise PmapError(f"pmap_enter: bad prot {prot:#x}")
        if flags is None:
            flags = prot
        if flags & PROT_MASK & ~prot:
            raise PmapError(f"pmap_enter: access type {flags & PROT_MASK:#x} exceeds prot {prot:#x}")
        policy = self.policy
        cost = cpu.cost
        if self.machine.trace is not None:
            self._trace(cpu, "pmap_enter", pm, va=va, pa=pa, prot=prot)
        # NOTE: pmap_lock, pmap_vp_lookup, pmap_fill_pte, pmap_pte_update and cpu.charge
        # inlined for speed (the same cycles and events)
        events = cpu.events
        if not kernel:
            cpu.cycles += cost.lock_acquire                 # pmap_lock
            events["lock_acquire"] += 1
        vp2 = pm.pm_vp.vp.get((va >> 30) & 0x1FF)
        vp3 = vp2.vp.get((va >> 21) & 0x1FF) if vp2 is not None else None
        idx3 = (va >> 12) & 0x1FF
        pted = vp3.vp.get(idx3) if vp3 is not None else None
        if pted is not None and pted.pted_pte != 0:
            if (policy.enter_skips_unchanged and pted.pted_pte & ~PAGE_MASK == pa
                    and pted.pted_va & PROT_MASK == prot):
                return 0                                # unchanged: no write, no TLBI
            self.pmap_remove_pted(cpu, pm, pted)
            if not kernel:
                pted = None                             # pool_put: we lost our pted
        stats = pm.pm_stats
        stats.resident_count += 1
        if pted is None:
            pted = PteDesc(pm)
            if vp3 is not None:
                vp3.vp[idx3] = pted
            else:
                try:
                    vp3 = self.pmap_vp_enter(cpu, pm, va, pted)
                except OutOfFrames:
                    stats.resident_count -= 1
                    if flags & PMAP_CANFAIL:
                        return ENOMEM
                    raise
        pg = self.frames.info(pa).kind in self._managed_kinds      # PHYS_TO_VM_PAGE(pa)
        pgf = 0
        if pg:
            pgf = self.pg_flags.get(pa, 0)
            if flags & PROT_MASK or pgf & PG_PMAP_REF:
                pgf |= PG_PMAP_REF
                if prot & PROT_WRITE and flags & PROT_WRITE:
                    pgf = (pgf | PG_PMAP_MOD) & ~PG_PMAP_EXE
        pted.pted_pmap = pm                             # pmap_fill_pte
        pted.pted_va = va | prot
        if flags & PMAP_WIRED:
            pted.wired = True
            stats.wired_count += 1
        pted.pted_pte = pa | (flags & PROT_MASK)
        need_sync = False
        if pg:
            cpu.cycles += cost.lock_acquire                 # pmap_enter_pv: the page's pv_mtx
            events["lock_acquire"] += 1
            pted.managed = True
            need_sync = flags & PROT_EXEC and not pgf & PG_PMAP_EXE
            self.pg_flags[pa] = pgf | PG_PMAP_EXE if need_sync else pgf
        if need_sync and self._sync_page:
            self._icache_sync(cpu, pm, pa)              # 1.113: before the PTE goes in
        inserted = flags & (PROT_MASK | PMAP_WIRED)
        if inserted:
            self.mem.write64(vp3.pa + idx3 * 8, self.pmap_pte_bits(pted))
            cpu.cycles += cost.descriptor_write
            events["pte_writes"] += 1
        if inserted or policy.enter_flush_unconditional:
            self.ttlb_flush(cpu, pm, va)
        if need_sync and not self._sync_page:
            self._icache_sync(cpu, pm, pa)              # 1.58: after the flush, on the VA
        return 0

    def _range(self, pm: Pmap, sva: int, eva: int, op: str) -> list[tuple[PmapVp, int, PteDesc]]:
        """(vp3, L3 index, pted) for every pted in [sva, eva), in ascending VA order. Same
        result as OpenBSD's page-by-page pmap_vp_lookup loop; absent L2/L3 tables are
        skipped wholesale."""
        self._alive(pm, op)
        self._check_va(pm, sva, op)
        self._check_va(pm, eva, op, end=True)
        if eva < sva:
            raise PmapError(f"{op}: end {eva:#x} is below start {sva:#x}")
        out = []
        va = sva
        l1 = pm.pm_vp.vp
        while va < eva:
            vp2 = l1.get(VP_IDX1(va))
            if vp2 is None:
                va = (va | ((1 << 30) - 1)) + 1
                continue
            vp3 = vp2.vp.get(VP_IDX2(va))
            base = va & ~((1 << 21) - 1)
            stop = min(eva, base + (1 << 21))
            if vp3 is not None:
                lo, hi = VP_IDX3(va), (stop - base) >> PAGE_SHIFT
                slots = vp3.vp
                if hi - lo >= len(slots):
                    out.extend((vp3, i, slots[i]) for i in sorted(slots) if lo <= i < hi)
                else:
                    out.extend((vp3, i, slots[i]) for i in range(lo, hi) if i in slots)
            va = stop
        return out

    def pmap_remove(self, cpu, pm: Pmap, sva: int, eva: int) -> int:
        """Remove every mapping in [sva, eva). Unmapped pages are skipped, so removing
        an unmapped range is a no-op (no descriptor write, no TLBI). Page-table pages
        are never freed here. Returns the number of mappings removed."""
        entries = self._range(pm, sva, eva, "pmap_remove")
        self._trace(cpu, "pmap_remove", pm, sva=sva, eva=eva, active=pm.pm_active)
        self._lock(cpu, pm)
        flushes = not (pm.pm_active == 0 and self.policy.ttlb_flush_skips_inactive)
        if flushes and (not self.batch_flushes or self.machine.core.repeat_tlbi):
            # one pmap_remove_pted at a time (and the erratum's `tlbi; dsb ish; tlbi`,
            # which the batch does not know)
            n = 0
            for _vp3, _idx, pted in entries:
                if pted.wired:
                    pm.pm_stats.wired_count -= 1
                    pted.wired = False
                if pted.pted_pte != 0:
                    self.pmap_remove_pted(cpu, pm, pted)
                    n += 1
            return n
        return self._remove_batch(cpu, pm, entries, flushes)

    def _remove_batch(self, cpu, pm: Pmap, entries, flushes: bool) -> int:
        """pmap_remove_pted for each valid pted with the TLB flushes issued through
        Cpu.tlbi_flush_batch: the same descriptors, slots, events, cycles and TLB contents
        as one at a time (nothing else runs during a pmap_remove call). Untraced, one
        batch for the whole call; traced, one per page, so that every record keeps the
        cycle stamp it has one at a time.
        NOTE: inlined from pmap_remove_pted / pmap_pte_remove / ttlb_flush for speed."""
        u64 = self.mem.u64
        listeners = self.mem.write_listeners
        stats = pm.pm_stats
        cost, events = cpu.cost, cpu.events
        traced = self.machine.trace is not None
        user = pm is not self._kernel
        per_page = (2 if self.policy.pte_remove_flushes else 1) if flushes else 0
        ops = []
        n = managed = 0
        touched = {}
        for vp3, idx, pted in entries:
            if pted.wired:
                stats.wired_count -= 1
                pted.wired = False
            if pted.pted_pte == 0:
                continue
            stats.resident_count -= 1
            if user:
                del vp3.vp[idx]
            u64[(vp3.pa >> 3) + idx] = 0
            touched[vp3.pa] = True
            page_ops = self.ttlb_flush_ops(pm, pted.pted_va & ~PAGE_MASK) * per_page if per_page else None
            if traced:
                cpu.cycles += cost.descriptor_write
                events["ptes_cleared"] += 1
                if page_ops:
                    cpu.tlbi_flush_batch(page_ops)
                if pted.managed:
                    cpu.cycles += cost.lock_acquire         # pmap_remove_pv
                    events["lock_acquire"] += 1
            else:
                if page_ops:
                    ops.extend(page_ops)
                managed += pted.managed
            pted.managed = False
            pted.pted_pte = 0
            pted.pted_va = 0
            n += 1
        for pa in touched:
            for fn in listeners:
                fn(pa, PAGE_SIZE)
        if not traced:
            cpu.cycles += n * cost.descriptor_write + managed * cost.lock_acquire
            events["ptes_cleared"] += n
            events["lock_acquire"] += managed
            if ops:
                cpu.tlbi_flush_batch(ops)
        return n

    def pmap_protect(self, cpu, pm: Pmap, sva: int, eva: int, prot: int) -> None:
        """Reduce rights in [sva, eva) (pmap_page_ro per valid page, one ttlb_flush
        each): WRITE always goes, EXEC unless prot has it, READ unless prot has it (1.58
        keeps READ); without READ or EXEC this is pmap_remove."""
        if prot & ~PROT_MASK:
            raise PmapError(f"pmap_protect: bad prot {prot:#x}")
        if not prot & (PROT_READ | PROT_EXEC):
            self.pmap_remove(cpu, pm, sva, eva)
            return
        entries = self._range(pm, sva, eva, "pmap_protect")
        self._trace(cpu, "pmap_protect", pm, sva=sva, eva=eva, prot=prot)
        self._lock(cpu, pm)
        clear = PROT_WRITE | (0 if prot & PROT_EXEC else PROT_EXEC)
        if self.policy.page_ro_clears_read and not prot & PROT_READ:
            clear |= PROT_READ
        for vp3, _idx, pted in entries:
            if not pted.valid:
                continue
            pted.pted_va &= ~clear
            pted.pted_pte &= ~clear
            self.pmap_pte_update(cpu, pted, vp3)
            self.ttlb_flush(cpu, pm, pted.va)

    def pmap_extract(self, pm: Pmap, va: int) -> int | None:
        """PA mapped at va (with va's page offset), or None."""
        self._alive(pm, "pmap_extract")
        pted, _ = self.pmap_vp_lookup(pm, va & ~PAGE_MASK)
        if pted is None or not pted.valid:
            return None
        return pted.pa | (va & PAGE_MASK)

    def pmap_fault_fixup(self, cpu, pm: Pmap, va: int, ftype: int) -> bool:
        """Referenced/modified emulation. A write fault on a page whose mapping allows
        writing enables ``pted_va & (R|W|X)``; an exec or read fault enables
        ``pted_va & (R|X)``; then the PTE is rewritten and flushed. Unmanaged pages are
        never fixed up (1.58 also refuses when the descriptor is 0). True if fixed."""
        self._alive(pm, "pmap_fault_fixup")
        self._lock(cpu, pm)
        pted, vp3 = self.pmap_vp_lookup(pm, va & ~PAGE_MASK)
        if pted is None or not pted.valid:
            return False
        pa = pted.pa
        if not self.PHYS_TO_VM_PAGE(pa):
            return False                                # "If it's unmanaged, it must not fault."
        if self.policy.fixup_needs_pte and self.mem.read64(vp3.pa + VP_IDX3(va) * 8) == 0:
            return False
        maxprot, cur = pted.pted_va & PROT_MASK, pted.pted_pte & PROT_MASK
        pgf = self.pg_flags.get(pa, 0)
        if ftype & PROT_WRITE and not cur & PROT_WRITE and maxprot & PROT_WRITE:
            pgf = (pgf | PG_PMAP_MOD | PG_PMAP_REF) & ~PG_PMAP_EXE
            pted.pted_pte |= maxprot                    # & (PROT_READ|PROT_WRITE|PROT_EXEC)
        elif ftype & PROT_EXEC and not cur & PROT_EXEC and maxprot & PROT_EXEC:
            pgf |= PG_PMAP_REF
            pted.pted_pte |= maxprot & (PROT_READ | PROT_EXEC)
        elif ftype & PROT_READ and not cur & PROT_READ and maxprot & PROT_READ:
            pgf |= PG_PMAP_REF
            pted.pted_pte |= maxprot & (PROT_READ | PROT_EXEC)
        else:
            return False
        need_sync = maxprot & PROT_EXEC and not pgf & PG_PMAP_EXE
        self.pg_flags[pa] = pgf | (PG_PMAP_EXE if maxprot & PROT_EXEC else 0)
        self._trace(cpu, "pmap_fault_fixup", pm, va=va, ftype=ftype)
        if need_sync and self.policy.icache_sync is IcacheSync.SYNC_PAGE:
            self._icache_sync(cpu, pm, pa)              # 1.113: before the PTE update
        self.pmap_pte_update(cpu, pted, vp3)
        self.ttlb_flush(cpu, pm, va & ~PAGE_MASK)
        if need_sync and self.policy.icache_sync is IcacheSync.SYNC_RANGE:
            self._icache_sync(cpu, pm, pa)              # 1.58: after the flush
        return True

    # ------------------------------------------------------------------ kernel mappings
    def pmap_kenter_pa(self, cpu, va: int, pa: int, prot: int) -> None:
        """_pmap_kenter_pa: wired kernel mapping, flushed with one VAALE1IS (a valid
        mapping already there is pmap_kremove_pg'ed first)."""
        pm = self._kernel
        self._check_va(pm, va, "pmap_kenter_pa")
        if pa & PAGE_MASK or not 0 <= pa < self.mem.size:
            raise PmapError(f"pmap_kenter_pa: bad PA {pa:#x}")
        if prot & ~PROT_MASK:
            raise PmapError(f"pmap_kenter_pa: bad prot {prot:#x}")
        self._trace(cpu, "pmap_kenter_pa", va=va, pa=pa, prot=prot)
        pted, vp3 = self.pmap_vp_lookup(pm, va)
        if pted is not None and pted.valid:
            self.pmap_kremove_pg(cpu, va)
        if pted is None:
            pted = PteDesc(pm)
            vp3 = self.pmap_vp_enter(cpu, pm, va, pted)
        pm.pm_stats.resident_count += 1
        self.pmap_fill_pte(pm, va, pa, pted, prot, prot | PMAP_WIRED)
        self.pmap_pte_update(cpu, pted, vp3)
        self.ttlb_flush(cpu, pm, va)

    def pmap_kremove_pg(self, cpu, va: int) -> None:
        """Remove one kernel mapping: descriptor 0 (the pted stays in its slot), one
        VAALE1IS (two in 1.58, whose pmap_pte_remove flushes too)."""
        pm = self._kernel
        pted, _ = self.pmap_vp_lookup(pm, va)
        if pted is None or not pted.valid:
            return
        pm.pm_stats.resident_count -= 1
        self.pmap_pte_remove(cpu, pted, False)
        self.ttlb_flush(cpu, pm, va)
        if pted.managed:
            self._pv_lock(cpu)
            pted.managed = False
        if pted.wired:
            pm.pm_stats.wired_count -= 1
            pted.wired = False
        pted.pted_pte = 0
        pted.pted_va = 0

    def pmap_kremove(self, cpu, va: int, length: int) -> None:
        pm = self._kernel
        self._check_va(pm, va, "pmap_kremove")
        self._trace(cpu, "pmap_kremove", va=va, len=length)
        for pva in range(va, va + length, PAGE_SIZE):
            self.pmap_kremove_pg(cpu, pva)

    # ------------------------------------------------------------------ switching
    def pmap_setttb(self, cpu, pm: Pmap) -> None:
        """cpu_switchto's pmap half: an ASID if the generation is stale (generation
        scheme only); TTBR0 <- zero page, ISB; cpu_setttb(pm_asid, pm_pt0pa);
        ci_curpm <- pm; ci_flush_bp(). The PAC keys (pmap_setpauthkeys) need FEAT_PAuth,
        which none of the modelled cores (Armv8.0/8.2) has."""
        self._alive(pm, "pmap_setttb")
        if (self.policy.asid_scheme is AsidScheme.GENERATIONS and pm is not self._kernel
                and pm.generation != self.asids.pmap_asid_gen):
            self.pmap_allocate_asid(cpu, pm)
        self._trace(cpu, "pmap_setttb", pm, pt0pa=pm.pm_pt0pa)
        cpu.msr(SysReg.TTBR0_EL1, self._kernel.pm_pt0pa)
        cpu.isb()
        cpu_setttb(cpu, pm.pm_asid, pm.pm_pt0pa)
        self.ci_curpm[cpu.index] = pm
        cpu_flush_bp(cpu)

    def pmap_activate(self, cpu, pm: Pmap, curproc: bool = True) -> None:
        """pm_active += 1; if the proc runs on `cpu` (curproc) and pm is not that CPU's
        ci_curpm, pmap_setttb. curproc=False: cpu_fork activating a child's pmap.
        (1.58 has no pm_active; the count is kept as bookkeeping and changes nothing.)"""
        self._alive(pm, "pmap_activate")
        self._trace(cpu, "pmap_activate", pm, active=pm.pm_active + 1)
        pm.pm_active += 1
        if curproc and pm is not self.ci_curpm[cpu.index]:
            self.pmap_setttb(cpu, pm)

    def pmap_deactivate(self, cpu, pm: Pmap) -> None:
        """1.113: return if pm_active == 0; else TTBR0 <- zero page, ISB, pm_active -= 1
        (TTBR1's ASID and ci_curpm are left alone). 1.111: the decrement that reaches 0
        also flushes both ASIDs. 1.58: an empty function (only the bookkeeping count)."""
        self._alive(pm, "pmap_deactivate")
        self._trace(cpu, "pmap_deactivate", pm, active=pm.pm_active)
        if pm.pm_active == 0:
            return
        mode = self.policy.deactivate
        if mode is Deactivate.EMPTY:
            pm.pm_active -= 1
            return
        cpu.msr(SysReg.TTBR0_EL1, self._kernel.pm_pt0pa)
        cpu.isb()
        pm.pm_active -= 1
        if mode is Deactivate.PARK_FLUSH_LAST and pm.pm_active == 0:
            cpu_tlb_flush_asid_all(cpu, (pm.pm_asid << 48) & MASK64)
            cpu_tlb_flush_asid_all(cpu, ((pm.pm_asid | ASID_USER) << 48) & MASK64)

    # ------------------------------------------------------------------ pmap_purge
    # pmap_purge is `while (pm->pm_active != 1) CPU_BUSY_CYCLE();` followed by the flush.
    # A simulated-time kernel steps it with pmap_purge_steps() (a generator yielding after
    # each spin iteration) or with the three pieces: pmap_purge_ready() to test,
    # pmap_purge_spin() to charge one iteration, pmap_purge_flush() once ready.

    def _purge_check(self, pm: Pmap) -> None:
        self._alive(pm, "pmap_purge")
        if not self.policy.has_pmap_purge:
            raise PmapError(f"pmap_purge does not exist in pmap.c {self.revision} "
                            "(it arrived with __HAVE_PMAP_PURGE, pmap.c 1.113)")
        if pm is self._kernel:
            raise PmapError("pmap_purge: the kernel pmap cannot be purged")

    def pmap_purge_ready(self, pm: Pmap) -> bool:
        """True when pmap_purge would not spin (every sibling has deactivated)."""
        return pm.pm_active == 1

    def pmap_purge_spin(self, cpu, pm: Pmap) -> None:
        """One CPU_BUSY_CYCLE() iteration of pmap_purge's wait."""
        cpu.charge(cpu.cost.spin_wait_iteration, "spin_wait")

    def pmap_purge_flush(self, cpu, pm: Pmap) -> None:
        """The part after the wait: TTBR0 <- zero page, ISB, ASIDE1IS(asid),
        ASIDE1IS(asid|1), pm_pt0pa <- zero page, pm_active <- 0."""
        self._purge_check(pm)
        if pm.pm_active != 1:
            raise PmapError(f"pmap_purge: {pm.pm_name} has pm_active = {pm.pm_active} (must be 1)")
        self._trace(cpu, "pmap_purge", pm, active=pm.pm_active)
        cpu.msr(SysReg.TTBR0_EL1, self._kernel.pm_pt0pa)
        cpu.isb()
        cpu_tlb_flush_asid_all(cpu, (pm.pm_asid << 48) & MASK64)
        cpu_tlb_flush_asid_all(cpu, ((pm.pm_asid | ASID_USER) << 48) & MASK64)
        pm.pm_pt0pa = self._kernel.pm_pt0pa
        pm.pm_active = 0

    def pmap_purge_steps(self, cpu, pm: Pmap, max_spins: int = 1_000_000) -> Iterator[int]:
        """pmap_purge as a generator: yields the spin count after each iteration of the
        wait (let the other CPUs run there), then flushes and returns the count
        (StopIteration.value). PmapError after max_spins iterations."""
        self._purge_check(pm)
        spins = 0
        while pm.pm_active != 1:
            if spins >= max_spins:
                raise PmapError(f"pmap_purge: {pm.pm_name} still has pm_active = {pm.pm_active} "
                                f"after {spins} spins")
            self.pmap_purge_spin(cpu, pm)
            spins += 1
            yield spins
        self.pmap_purge_flush(cpu, pm)
        return spins

    def pmap_purge(self, cpu, pm: Pmap, wait: Callable[[], object] | None = None,
                   max_spins: int = 1_000_000) -> int:
        """Spin until pm_active == 1, then pmap_purge_flush.

        Each spin iteration is charged spin_wait_iteration and calls `wait()`, which
        must let the other threads make progress (run other CPUs); it may return
        False to say nothing can change any more. Without `wait`, or when it gives
        up, or after max_spins, a PmapError is raised instead of hanging.
        Returns the number of spin iterations."""
        self._purge_check(pm)
        if pm.pm_active != 1 and wait is None:
            raise PmapError(f"pmap_purge: {pm.pm_name} has pm_active = {pm.pm_active} (must be 1) "
                            "and no wait callback could change it: it would spin forever")
        steps = self.pmap_purge_steps(cpu, pm, max_spins)
        try:
            while True:
                next(steps)
                if wait() is False and pm.pm_active != 1:
                    raise PmapError(f"pmap_purge: {pm.pm_name} has pm_active = {pm.pm_active} and "
                                    "nothing can change it any more: it would spin forever")
        except StopIteration as done:
            return done.value

    # ------------------------------------------------------------------ trampoline
    def pmap_userret(self, cpu) -> None:
        """trampoline.S tramp_return: TTBR1 <- trampoline L1 with ASID|ASID_USER, ISB;
        ERET to EL0 (cpu.set_el(0))."""
        t1 = cpu.mrs(SysReg.TTBR1_EL1)
        asid = (t1 >> 48) | ASID_USER
        cpu.msr(SysReg.TTBR1_EL1, make_ttbr(self.tramp_l1, asid))
        cpu.isb()
        cpu.set_el(0)

    def pmap_kernel_entry(self, cpu) -> None:
        """trampoline.S vector entry from EL0: exception to EL1 (cpu.set_el(1)); the
        Spectre-BHB branch loop of the core's trampoline_vectors_loop_<k> (cycles only;
        OpenBSD arm64 cpu.c cpu_mitigate_spectre_bhb picks k); TTBR1 <- kernel L1 with the
        even ASID, ISB."""
        cpu.set_el(1)
        k = cpu.machine.core.bhb_loop
        if k:
            cpu.charge(k * cpu.cost.bhb_loop_iteration, "bhb_loop")
        t1 = cpu.mrs(SysReg.TTBR1_EL1)
        asid = (t1 >> 48) & ~ASID_USER
        cpu.msr(SysReg.TTBR1_EL1, make_ttbr(self.kernel_l1, asid))
        cpu.isb()

    # ------------------------------------------------------------------ ASIDs
    def pmap_find_asid(self, pm: Pmap) -> int:
        if self.policy.asid_scheme is not AsidScheme.GENERATIONS:
            raise PmapError(f"pmap_find_asid does not exist in pmap.c {self.revision}")
        return self.asids.pmap_find_asid(pm)

    def pmap_allocate_asid(self, cpu, pm: Pmap) -> None:
        try:
            self.asids.pmap_allocate_asid(cpu, pm, self.ci_curpm)
        except AsidError as e:
            raise PmapError(str(e)) from None
        if cpu is not None:
            self._trace(cpu, "pmap_allocate_asid", pm, gen=pm.generation >> 16)

    def pmap_rollover_asid(self, cpu, pm: Pmap) -> int:
        if self.policy.asid_scheme is not AsidScheme.GENERATIONS:
            raise PmapError(f"pmap_rollover_asid does not exist in pmap.c {self.revision}")
        return self.asids.pmap_rollover_asid(cpu, pm, self.ci_curpm)

    def pmap_free_asid(self, cpu, pm: Pmap) -> bool:
        """KASSERT(pm != curcpu()->ci_curpm); ASIDE1IS even, then odd; clear the bits
        (with generations: only if pm's generation is current). True if cleared."""
        if pm is self.ci_curpm[cpu.index]:
            raise PmapError(f"pmap_free_asid: {pm.pm_name} is cpu{cpu.index}'s ci_curpm")
        self._trace(cpu, "pmap_free_asid", pm, gen=pm.generation >> 16)
        cpu_tlb_flush_asid_all(cpu, (pm.pm_asid << 48) & MASK64)
        cpu_tlb_flush_asid_all(cpu, ((pm.pm_asid | ASID_USER) << 48) & MASK64)
        cpu.charge(cpu.cost.lock_acquire, "lock_acquire")       # pmap_asid_mtx / the CAS
        try:
            return self.asids.release(pm)
        except AsidError as e:
            raise PmapError(str(e)) from None

    # ------------------------------------------------------------------ destroy
    def pmap_destroy(self, cpu, pm: Pmap) -> bool:
        """pm_refs -= 1; at 0: pmap_release (free every vp table, children before
        parents, no descriptor rewrite, no TLBI), pmap_free_asid (2 ASIDE1IS, then the
        bits), free the pmap. Refused (PmapError, nothing changed) for the kernel pmap
        or, on the last reference, if pm is still active or some CPU's ci_curpm.
        Returns True if the pmap was freed."""
        self._alive(pm, "pmap_destroy")
        if pm is self._kernel or pm is self.pmap_tramp:
            raise PmapError(f"pmap_destroy: {pm.pm_name} cannot be destroyed")
        if pm.pm_refs <= 0:
            raise PmapError(f"pmap_destroy: {pm.pm_name} has no references left")
        if pm.pm_refs == 1:
            if pm.pm_active:
                raise PmapError(f"pmap_destroy: {pm.pm_name} is still active (pm_active = {pm.pm_active})")
            users = [i for i, cur in enumerate(self.ci_curpm) if cur is pm]
            if users:
                raise PmapError(f"pmap_destroy: {pm.pm_name} is still ci_curpm of "
                                + ", ".join(f"cpu{i}" for i in users))
        self._trace(cpu, "pmap_destroy", pm, refs=pm.pm_refs - 1)
        pm.pm_refs -= 1
        if pm.pm_refs > 0:
            return False
        self.pmap_release(cpu, pm)
        self.pmap_free_asid(cpu, pm)
        pm.pm_destroyed = True
        self.live.discard(pm)
        return True

    def pmap_release(self, cpu, pm: Pmap) -> None:
        self.pmap_vp_destroy(cpu, pm)

    def pmap_vp_destroy(self, cpu, pm: Pmap) -> None:
        """Ascending walk of the software slots: each L3 (and its remaining pteds) is
        freed before its L2, every L2 before the L1; only software pointers are cleared."""
        vp1 = pm.pm_vp
        for idx1 in sorted(vp1.vp):
            vp2 = vp1.vp.pop(idx1)
            for idx2 in sorted(vp2.vp):
                vp3 = vp2.vp.pop(idx2)
                for pted in vp3.vp.values():       # pool_put each remaining pted
                    pted.pted_pte = 0
                vp3.vp.clear()
                self._vp_free(cpu, vp3)
            self._vp_free(cpu, vp2)
        self._vp_free(cpu, vp1)
        pm.pm_vp = None


def pmap_bootstrap(machine, legacy: bool = False, revision: str | None = None,
                   rng: random.Random | None = None) -> PmapSystem:
    """Build the pmap globals for `machine` and program every CPU as OpenBSD's
    pmap_bootstrap/pmap_init do: TTBR0 <- zero page, ISB, TCR (T0SZ = T1SZ = 25, A1,
    AS from the core's ASID bits), ISB, TTBR1 <- kernel L1 with ASID 0, ISB; then one
    cpu_tlb_flush() (TLBI VMALLE1IS). ASID pair 0/1 is reserved for the kernel.

    legacy=True selects revision "1.58"; otherwise `revision` (default "1.113")."""
    if legacy and revision not in (None, "1.58"):
        raise PmapError(f"legacy=True contradicts revision {revision!r}")
    ps = PmapSystem(machine, "1.58" if legacy else (revision or "1.113"), rng)
    tcr = openbsd_tcr(as16=machine.core.asid_bits == 16).value
    for cpu in machine.cpus:
        cpu.msr(SysReg.TTBR0_EL1, ps.zero_page)
        cpu.isb()
        cpu.msr(SysReg.TCR_EL1, tcr)
        cpu.isb()
        cpu.msr(SysReg.TTBR1_EL1, make_ttbr(ps.kernel_l1, 0))
        cpu.isb()
        cpu.set_el(1)
    cpu_tlb_flush(machine.cpus[0])
    return ps
