"""Differential test: emu.walker.translate against QEMU 5.0's ARM walker (Unicorn 2.1.4).

Thousands of random page-table configurations (seeded, deterministic: config i uses
random.Random(f"{SEED}-{i}")) are built in one PhysMem shared with a QemuOracle
(tests/emu/qemu_oracle.py). For every config several VAs are queried for {read, write, fetch} x
{EL0, EL1} through

  ours  : emu.walker.translate (the public API),
  QEMU  : AT S1E1R/W, S1E0R/W at EL3 (PAR_EL1) + uc_vmem_translate(EXEC) at EL1/EL0,
  ARM   : `ref_walk`, a second, independent, spec-shaped reference walker written below from the
          Arm ARM (AArch64.TranslationTableWalk / AArch64.CheckPermission, v8.0), which can also
          replay QEMU 5.0's known deviations (`quirks=QUIRKS`).

Assertions for every query:
  1. ours == ARM reference: fault kind + level, or PA + leaf level (+ size, nG, ASID, AttrIndx, SH,
     and the exact list of descriptor reads).
  2. QEMU == reference in QEMU mode: PA, or FSC (fault kind + level).
  3. when no QEMU deviation changes the outcome: ours == QEMU directly (PA or FSC).
     For AT successes also PAR.ATTR == MAIR[AttrIndx] and PAR.SH == the descriptor's SH.
     Otherwise the query is a *divergence*: it is attributed to the first deviation met on its walk
     that alone changes the outcome, counted per kind, and (by 1.) our walker is asserted to follow
     the Arm ARM.

QEMU 5.0 deviations from the Arm ARM (all observed; each is counted per query and the test fails
if the random configurations stop exercising one of them):
  "l0-block"       A level-0 descriptor with bits[1:0] = 0b01 is taken as a 512 GB block.
                   Arm ARM (4 KB granule, no FEAT_LPA2): a block descriptor is not permitted at
                   level 0; the descriptor is invalid -> Translation fault, level 0.
  "ttbr-addr-size", "table-addr-size", "oa-addr-size"
                   No Address size fault checks at all (QEMU masks descriptor addresses to 48 bits
                   and walks on). Arm ARM: if the TTBR base address, a next-level table address or
                   an output address has a bit set at or above the effective PA size
                   min(TCR.IPS, PARange) -> Address size fault, level 0 for the TTBR, else the
                   level of the descriptor holding the address.
  "unmapped-read"  A walk read of a PA where Unicorn has no memory returns 0 (so: Translation
                   fault one step on). Arm ARM: a table walk access the memory system cannot
                   serve is a synchronous External abort on translation table walk (FSC 0b0101LL,
                   LL = lookup level); our PhysMem has nothing there, so our walker reports that.
  "block-res0-oa"  Nonzero RES0 bits [n-1:12] of a block descriptor's output address are ORed
                   into the PA. Arm ARM pseudocode: OA = desc<47:n> : VA<n-1:0> (RES0 ignored).
  "hpd"            TCR_EL1.HPD0/HPD1 disable APTable/UXNTable/PXNTable although the emulated
                   Cortex-A72 (v8.0) has no FEAT_HPDS. Arm ARM: without FEAT_HPDS bits 41/42 are
                   RES0 and have no effect; hierarchical permissions always apply. (Unicorn's
                   ID_AA64MMFR1_EL1 reads 0: HPDS = 0; checked in test_oracle_sanity.)

What QEMU cannot tell us (and how we cover it): the leaf level of a successful translation (not
in PAR; checked against the reference, and indirectly by PA agreement of VAs in one block), the
level of a fetch permission fault when no AT of the same VA takes a permission fault (kind only),
and the ASID (asserted directly: from TTBR1 if TCR.A1 else TTBR0, 8 bits unless TCR.AS).

Knobs: ARMMU_QEMU_CONFIGS (default 4000), ARMMU_QEMU_SEED (default 20240607),
ARMMU_QEMU_VERBOSE=1 prints a shortest example of every divergence kind (run with -p no:xdist).
"""
from __future__ import annotations

import os
import random
import struct
import time
from collections import Counter

import capstone
import pytest
from unicorn import UC_PROT_READ, UC_PROT_WRITE

from emu.physmem import PhysMem
from emu.sysregs import SCTLR_M, SCTLR_WXN
from emu.walker import Access, Fault, FaultKind, Translation, translate

from .qemu_oracle import (AT_OPS, MAIR_VALUE, SCRATCH_PA, SCRATCH_SIZE, QemuOracle, decode_par,
                          stub_words)

N_CONFIGS = int(os.environ.get("ARMMU_QEMU_CONFIGS", "4000"))
SEED = int(os.environ.get("ARMMU_QEMU_SEED", "20240607"))
CHUNKS = 4
VAS_PER_CONFIG = 8
MEM_SIZE = 2 << 20                    # 512 frames: small, so random addresses often miss it
PARANGE = 44                          # Cortex-A72 ID_AA64MMFR0_EL1.PARange as Unicorn reports it
MASK64 = (1 << 64) - 1
IPS_BITS = {0: 32, 1: 36, 2: 40, 3: 42, 4: 44, 5: 48, 6: 52}

TRANS, AF, PERM, ASZ, EXT = "translation", "access-flag", "permission", "address-size", "external"
FSC_KIND = {0x00: ASZ, 0x04: TRANS, 0x08: AF, 0x0C: PERM, 0x14: EXT}
OUR_KIND = {FaultKind.TRANSLATION: TRANS, FaultKind.ACCESS_FLAG: AF, FaultKind.PERMISSION: PERM,
            FaultKind.ADDRESS_SIZE: ASZ, FaultKind.EXTERNAL: EXT}


# ================================================================================================
# Reference walker: an independent transcription of the Arm ARM (v8.0, 4 KB granule, EL1&0 stage 1)

class RefWalk:
    """Outcome of one walk: a fault (kind, level) or a leaf (level, pa, rights), + the reads."""
    __slots__ = ("fault", "level", "pa", "rights", "desc", "reads", "quirks", "size")

    def __init__(self):
        self.fault = None
        self.level = None
        self.pa = None
        self.rights = None         # {(access, el): bool}
        self.desc = None
        self.size = None
        self.reads = []
        self.quirks = []           # QEMU mode: deviations met on the way, in walk order

    def outcome(self, access: int, el: int) -> tuple:
        if self.fault is not None:
            return ("fault", self.fault, self.level)
        if not self.rights[(access, el)]:
            return ("fault", PERM, self.level)
        return ("ok", self.pa, self.level)


QUIRKS = frozenset({"l0-block", "ttbr-addr-size", "table-addr-size", "oa-addr-size",
                    "unmapped-read", "block-res0-oa", "hpd"})


def ref_walk(mem: PhysMem, va: int, ttbr0: int, ttbr1: int, tcr: int, sctlr: int,
             quirks: frozenset = frozenset()) -> RefWalk:
    """Walk `va`. `quirks` (a subset of QUIRKS) replays QEMU 5.0's deviations; r.quirks lists
    those met on the way (each a point where the Arm ARM walk would have gone differently)."""
    r = RefWalk()
    va &= MASK64
    upper = (va >> 55) & 1
    txsz = (tcr >> 16 if upper else tcr) & 0x3F
    txsz = min(max(txsz, 16), 39)
    tbi = (tcr >> (38 if upper else 37)) & 1
    epd = (tcr >> (23 if upper else 7)) & 1
    hpd = (tcr >> (42 if upper else 41)) & 1
    inputsize = 64 - txsz
    # bits [top:inputsize] must all equal VA[55]
    top = 55 if tbi else 63
    field_ = (va >> inputsize) & ((1 << (top + 1 - inputsize)) - 1)
    if field_ != (((1 << (top + 1 - inputsize)) - 1) if upper else 0):
        r.fault, r.level = TRANS, 0
        return r
    if epd:
        r.fault, r.level = TRANS, 0
        return r
    outputsize = min(IPS_BITS.get((tcr >> 32) & 7, 52), PARANGE)
    # first level: the one whose index bits include VA[inputsize-1]
    if inputsize > 39:
        level = 0
    elif inputsize > 30:
        level = 1
    elif inputsize > 21:
        level = 2
    else:
        level = 3
    ttbr = ttbr1 if upper else ttbr0
    lowbits = inputsize - (39 - 9 * level)                   # index bits at the first level
    base = ttbr & ((1 << 48) - 1) & ~((8 << lowbits) - 1)     # BADDR, aligned to the table size
    if base >> outputsize:
        if "ttbr-addr-size" not in quirks:
            r.fault, r.level = ASZ, 0
            return r
        r.quirks.append("ttbr-addr-size")
    ap_table1 = ap_table0 = xn_table = pxn_table = 0
    nbits = lowbits
    while True:
        shift = 39 - 9 * level
        index = (va >> shift) & ((1 << nbits) - 1)
        addr = base + 8 * index
        if addr + 8 > mem.size:
            if "unmapped-read" not in quirks:
                r.fault, r.level = EXT, level
                return r
            r.quirks.append("unmapped-read")
            desc = 0
        else:
            desc = int.from_bytes(mem.buf[addr:addr + 8].tobytes(), "little")
            r.reads.append((addr, desc, level))
        nbits = 9
        if desc & 1 == 0:
            r.fault, r.level = TRANS, level
            return r
        is_table = desc & 2 and level < 3
        if not is_table and level == 3 and not desc & 2:
            r.fault, r.level = TRANS, level                   # reserved encoding at level 3
            return r
        if not is_table and level == 0:
            if "l0-block" not in quirks:
                r.fault, r.level = TRANS, 0                   # no level-0 blocks with 4 KB
                return r
            r.quirks.append("l0-block")
        addr_field = desc & 0x0000_FFFF_FFFF_F000            # desc<47:12>
        if is_table:
            if addr_field >> outputsize:
                if "table-addr-size" not in quirks:
                    r.fault, r.level = ASZ, level
                    return r
                r.quirks.append("table-addr-size")
            tattrs = desc >> 59
            if hpd and "hpd" in quirks:
                if tattrs & 0xF:
                    r.quirks.append("hpd")
            else:
                pxn_table |= tattrs & 1
                xn_table |= (tattrs >> 1) & 1
                ap_table0 |= (tattrs >> 2) & 1
                ap_table1 |= (tattrs >> 3) & 1
            base = addr_field
            level += 1
            continue
        # block or page
        size = 1 << shift
        if (addr_field & ~(size - 1)) >> outputsize:          # desc<47:n> vs the PA size
            if "oa-addr-size" not in quirks:
                r.fault, r.level = ASZ, level
                return r
            r.quirks.append("oa-addr-size")
        if addr_field & (size - 1):
            if "block-res0-oa" in quirks:
                r.quirks.append("block-res0-oa")
            else:
                addr_field &= ~(size - 1)
        if not desc >> 10 & 1:
            r.fault, r.level = AF, level
            return r
        r.level, r.size, r.desc = level, size, desc
        r.pa = addr_field | (va & (size - 1))
        # AArch64.CheckPermission, two-range EL1&0 regime, no PAN
        ap2 = (desc >> 7 & 1) | ap_table1
        ap1 = (desc >> 6 & 1) & (1 - ap_table0)
        xn = (desc >> 54 & 1) | xn_table
        pxn = (desc >> 53 & 1) | pxn_table
        wxn = bool(sctlr & SCTLR_WXN)
        user_r, user_w = ap1 == 1, ap1 == 1 and ap2 == 0
        priv_r, priv_w = True, ap2 == 0
        user_xn = xn == 1 or (user_w and wxn)
        priv_xn = pxn == 1 or (priv_w and wxn) or user_w
        r.rights = {(0, 1): priv_r, (1, 1): priv_w, (2, 1): not priv_xn,
                    (0, 0): user_r, (1, 0): user_w, (2, 0): not user_xn}
        return r


# ================================================================================================
# Random configurations

class Config:
    __slots__ = ("index", "ttbr0", "ttbr1", "tcr", "sctlr", "vas", "pa_bits", "notes")


def _rand_addr(rng: random.Random, lo: int, hi: int, align: int) -> int:
    """A random `align`-aligned address in [lo, hi) outside the oracle's scratch window."""
    while True:
        a = rng.randrange(lo, hi) & ~(align - 1)
        if a >= lo and not SCRATCH_PA - align < a < SCRATCH_PA + SCRATCH_SIZE:
            return a


class ConfigGen:
    """Random translation regimes + tables; every config starts from all-zero memory."""

    def __init__(self, mem: PhysMem):
        self.mem = mem
        self.nframes = mem.size >> 12
        self.dirty: set[int] = set()
        mem.buf[:] = 0                   # config i depends on (SEED, i) only

    def _reset(self):
        for f in self.dirty:
            self.mem.buf[f << 12:(f + 1) << 12] = 0
        self.dirty.clear()
        self.tables: list[int] = []

    def _new_table(self) -> int:
        while True:
            f = self.rng.randrange(1, self.nframes)
            if f not in self.dirty:
                self.dirty.add(f)
                self.tables.append(f << 12)
                return f << 12

    def _write(self, pa: int, value: int) -> None:
        self.dirty.add(pa >> 12)
        self.mem.write64(pa, value)

    def _outside(self, align: int) -> int:
        """Outside physical memory, below the PA size (when there is room)."""
        return _rand_addr(self.rng, self.mem.size, 1 << min(self.pa_bits, 48), align)

    def _beyond(self, align: int) -> int | None:
        """At or above the PA size, below 2^48 (the widest OA a descriptor holds)."""
        if self.pa_bits >= 48:
            return None
        return _rand_addr(self.rng, 1 << self.pa_bits, 1 << 48, align)

    # -- descriptors -----------------------------------------------------------------------
    def _table_attrs(self) -> int:
        rng = self.rng
        d = 0
        if rng.random() < 0.3:
            d |= rng.randrange(1, 4) << 61                     # APTable
        if rng.random() < 0.2:
            d |= 1 << 60                                       # UXNTable
        if rng.random() < 0.2:
            d |= 1 << 59                                       # PXNTable
        if rng.random() < 0.1:
            d |= 1 << 63                                       # NSTable (ignored: non-secure)
        if rng.random() < 0.2:
            d |= rng.randrange(1 << 7) << 52                   # ignored bits [58:52]
        if rng.random() < 0.2:
            d |= rng.randrange(1 << 10) << 2                   # ignored bits [11:2]
        return d

    def _leaf(self, level: int) -> int:
        rng = self.rng
        size = 1 << (39 - 9 * level)
        r = rng.random()
        oa = None
        if r < 0.12:
            oa = self._beyond(size)
            self.notes["leaf-beyond-pa"] += oa is not None
        elif r < 0.35:
            oa = _rand_addr(rng, 0, 1 << min(self.pa_bits, 48), size)
        if oa is None:
            oa = rng.randrange(self.nframes) << 12 & ~(size - 1)
        if level < 3 and rng.random() < 0.1:
            oa |= rng.randrange(1, size >> 12) << 12 if size > 4096 else 0   # RES0 junk
            self.notes["block-res0-junk"] += 1
        d = oa | (3 if level == 3 else 1)
        d |= rng.randrange(4) << 6                             # AP[2:1]
        d |= rng.randrange(4) << 8                             # SH
        d |= rng.randrange(8) << 2                             # AttrIndx
        d |= rng.randrange(2) << 5                             # NS (ignored, non-secure)
        d |= rng.randrange(2) << 11                            # nG
        if rng.random() < 0.88:
            d |= 1 << 10                                       # AF
        if rng.random() < 0.35:
            d |= 1 << 54                                       # UXN
        if rng.random() < 0.35:
            d |= 1 << 53                                       # PXN
        if rng.random() < 0.1:
            d |= 1 << 52                                       # Contiguous (hint)
        if rng.random() < 0.1:
            d |= 1 << 51                                       # DBM (no FEAT_HAFDBS)
        if rng.random() < 0.3:
            d |= rng.randrange(16) << 55                       # software use
        if rng.random() < 0.1:
            d |= rng.randrange(32) << 59                       # ignored / PBHA
        return d

    def _invalid(self) -> int:
        return 0 if self.rng.random() < 0.5 else self.rng.randrange(1 << 64) & ~1

    def _path(self, base: int | None, va: int, level: int, nbits: int) -> None:
        """Create descriptors along va's walk from the table at `base`."""
        rng = self.rng
        while base is not None and level <= 3:
            shift = 39 - 9 * level
            slot = base + 8 * ((va >> shift) & ((1 << nbits) - 1))
            nbits = 9
            if slot + 8 > self.mem.size:
                return
            d = self.mem.read64(slot)
            if d:
                if d & 3 == 3 and level < 3 and (d & 0xFFFF_FFFF_F000) in self.tables:
                    base, level = d & 0xFFFF_FFFF_F000, level + 1
                    continue
                return
            r = rng.random()
            nxt = None
            if level == 0:
                kind = "table" if r < 0.80 else "invalid" if r < 0.87 else "l0block" if r < 0.95 else "odd"
            elif level < 3:
                kind = "table" if r < 0.55 else "block" if r < 0.85 else "invalid" if r < 0.93 else "odd"
            else:
                kind = "page" if r < 0.85 else "invalid" if r < 0.93 else "reserved"
            if kind == "table":
                nxt = self._new_table()
                d = nxt | 3 | self._table_attrs()
            elif kind == "odd":                               # a table pointer off the beaten path
                s = rng.random()
                if s < 0.3:
                    tgt = self._outside(4096)
                elif s < 0.6:
                    tgt = self._beyond(4096)
                    if tgt is None:
                        tgt = self._outside(4096)
                elif s < 0.8:
                    tgt = rng.choice(self.tables)              # alias, possibly an ancestor
                else:
                    tgt = rng.randrange(self.nframes) << 12    # stray frame (zero: invalid)
                d = tgt | 3 | self._table_attrs()
                self.notes["odd-table"] += 1
            elif kind == "invalid":
                d = self._invalid()
            elif kind == "l0block":
                d = (self._leaf(1) & ~3) | 1
                self.notes["l0-block"] += 1
            elif kind == "reserved":
                d = (self._leaf(3) & ~3) | 1
            else:
                d = self._leaf(level)
            self._write(slot, d)
            base = nxt
            level += 1

    # -- regime ------------------------------------------------------------------------------
    def _txsz(self) -> int:
        r = self.rng.random()
        return 16 if r < 0.35 else 25 if r < 0.7 else self.rng.randint(16, 39)

    def _ttbr(self, txsz: int) -> tuple[int, int | None]:
        """(TTBR value, PA of its table if we built one)."""
        rng = self.rng
        ia = 64 - txsz
        level = 0 if ia > 39 else 1 if ia > 30 else 2 if ia > 21 else 3
        tbytes = 8 << (ia - (39 - 9 * level))
        asid = rng.randrange(1 << 16) << 48
        r = rng.random()
        if r < 0.04:
            return asid | self._outside(tbytes), None
        if r < 0.08:
            b = self._beyond(tbytes)
            if b is not None:
                self.notes["ttbr-beyond-pa"] += 1
                return asid | b, None
        frame = self._new_table()
        base = frame + rng.randrange(4096 // tbytes) * tbytes
        junk = 0
        if rng.random() < 0.1:
            junk = rng.randrange(1, tbytes)                    # RES0 bits below the table, CnP
        return asid | base | junk, base

    def make(self, index: int) -> Config:
        rng = self.rng = random.Random(f"{SEED}-{index}")
        self._reset()
        self.notes = Counter()
        c = Config()
        c.index = index
        t0sz, t1sz = self._txsz(), self._txsz()
        ips = rng.choice((0, 1, 2, 3, 4, 5, 5, 6))
        self.pa_bits = c.pa_bits = min(IPS_BITS[ips], PARANGE)
        tcr = (t0sz | t1sz << 16 | 0b10 << 30 | ips << 32
               | rng.randrange(4) << 8 | rng.randrange(4) << 10 | rng.randrange(4) << 12    # IRGN0..SH0
               | rng.randrange(4) << 24 | rng.randrange(4) << 26 | rng.randrange(4) << 28)  # IRGN1..SH1
        tcr |= (rng.random() < 0.08) << 7 | (rng.random() < 0.08) << 23                   # EPD0/EPD1
        tcr |= rng.randrange(2) << 22 | rng.randrange(2) << 36                             # A1, AS
        tcr |= (rng.random() < 0.1) << 37 | (rng.random() < 0.1) << 38                     # TBI0/TBI1
        tcr |= (rng.random() < 0.1) << 41 | (rng.random() < 0.1) << 42                     # HPD0/HPD1
        c.tcr = tcr
        c.sctlr = SCTLR_M | (SCTLR_WXN if rng.random() < 0.15 else 0)
        c.ttbr0, base0 = self._ttbr(t0sz)
        c.ttbr1, base1 = self._ttbr(t1sz)
        vas = []
        for i in range(VAS_PER_CONFIG):
            r = rng.random()
            if i and r < 0.35:                                 # share a prefix with an earlier VA
                prev = rng.choice(vas)
                keep = rng.choice((12, 21, 30, 39))
                va = (prev & ~((1 << keep) - 1)) | rng.randrange(1 << keep)
            else:
                upper = rng.randrange(2)
                ia = 64 - (t1sz if upper else t0sz)
                va = rng.randrange(1 << ia)
                if upper:
                    va |= MASK64 & ~((1 << ia) - 1)
                if r > 0.92:                                   # in the hole between the ranges
                    va ^= rng.randrange(1, 1 << (64 - ia)) << ia
                    self.notes["hole-va"] += 1
                elif (tcr >> (38 if upper else 37)) & 1 and rng.random() < 0.5:
                    va = (va & ((1 << 56) - 1)) | rng.randrange(256) << 56   # tagged (TBI)
            vas.append(va & MASK64)
            upper = (va >> 55) & 1
            txsz = t1sz if upper else t0sz
            ia = 64 - txsz
            level = 0 if ia > 39 else 1 if ia > 30 else 2 if ia > 21 else 3
            self._path(base1 if upper else base0, va, level, ia - (39 - 9 * level))
        c.vas = vas
        c.notes = self.notes
        return c


# ================================================================================================
# Comparison

def ours_outcome(res) -> tuple:
    if isinstance(res, Fault):
        return ("fault", OUR_KIND[res.kind], res.level)
    assert isinstance(res, Translation)
    return ("ok", res.pa, res.level)


def qemu_outcome(res: tuple) -> tuple:
    kind, v = res
    if kind == "ok":
        return ("ok", v, None)
    if v is None:
        return ("fault", PERM, None)                    # fetch permission fault, level unseen
    base = v & ~3
    assert base in FSC_KIND, f"unexpected FSC {v:#x} from QEMU"
    return ("fault", FSC_KIND[base], v & 3)


def same_observable(expect: tuple, got: tuple) -> bool:
    """Compare (kind, pa|fault, level) where QEMU does not report the level of a success."""
    if expect[0] != got[0] or expect[1] != got[1]:
        return False
    return got[2] is None or expect[0] == "ok" or expect[2] == got[2]


class Stats:
    def __init__(self):
        self.configs = self.queries = self.agree = 0
        self.divergences = Counter()
        self.examples: dict = {}
        self.coverage = Counter()


def describe(cfg: Config, va: int, walk: RefWalk) -> str:
    reads = ", ".join(f"L{lv}[{a:#x}]={d:#018x}" for a, d, lv in walk.reads)
    return (f"config #{cfg.index} (seed {SEED}): ttbr0={cfg.ttbr0:#x} ttbr1={cfg.ttbr1:#x} "
            f"tcr={cfg.tcr:#x} sctlr={cfg.sctlr:#x} va={va:#x} reads: {reads or '-'}")


ACCESS_NAMES = {0: "read", 1: "write", 2: "fetch"}


def in_hole(va: int, tcr: int) -> bool:
    sel = (va >> 55) & 1
    ia = 64 - min(max((tcr >> (16 if sel else 0)) & 0x3F, 16), 39)
    top = 55 if tcr >> (38 if sel else 37) & 1 else 63
    bits = (va >> ia) & ((1 << (top + 1 - ia)) - 1)
    return bits != (((1 << (top + 1 - ia)) - 1) if sel else 0)


def attribute(mem: PhysMem, cfg: Config, va: int, acc: int, el: int, e_arm: tuple,
              met: list) -> str | None:
    """The QEMU deviation that explains a divergent query: the first one met on the walk that,
    replayed alone, changes the Arm ARM outcome (else the combination of all met)."""
    for q in dict.fromkeys(met):
        alone = ref_walk(mem, va, cfg.ttbr0, cfg.ttbr1, cfg.tcr, cfg.sctlr, frozenset({q}))
        if not same_observable(e_arm, alone.outcome(acc, el)):
            return q
    return "+".join(dict.fromkeys(met)) or None


def check_config(mem: PhysMem, oracle: QemuOracle, cfg: Config, st: Stats) -> None:
    qres = oracle.query(cfg.vas, cfg.ttbr0, cfg.ttbr1, cfg.tcr, cfg.sctlr)
    st.configs += 1
    tcr = cfg.tcr
    a1, as16 = tcr >> 22 & 1, tcr >> 36 & 1
    exp_asid = ((cfg.ttbr1 if a1 else cfg.ttbr0) >> 48) & (0xFFFF if as16 else 0xFF)
    for va, q in zip(cfg.vas, qres):
        arm = ref_walk(mem, va, cfg.ttbr0, cfg.ttbr1, tcr, cfg.sctlr)
        qm = ref_walk(mem, va, cfg.ttbr0, cfg.ttbr1, tcr, cfg.sctlr, QUIRKS)
        for el in (1, 0):
            for acc in (0, 1, 2):
                where = f"{ACCESS_NAMES[acc]} at EL{el}: {describe(cfg, va, arm)}"
                ours = translate(mem, va, Access(acc), el, cfg.ttbr0, cfg.ttbr1, tcr, cfg.sctlr,
                                 parange_bits=PARANGE)
                o = ours_outcome(ours)
                e_arm = arm.outcome(acc, el)
                e_q = qm.outcome(acc, el)
                got = qemu_outcome(q[(acc, el)])
                st.queries += 1
                # 1. ours follows the Arm ARM reference, including the descriptor reads
                assert o == e_arm, f"walker {o} != Arm ARM reference {e_arm}; {where}"
                assert ours.reads == arm.reads, f"reads {ours.reads} != {arm.reads}; {where}"
                if isinstance(ours, Translation):
                    assert ours.size == arm.size and ours.desc == arm.desc, where
                    assert ours.ng == bool(arm.desc >> 11 & 1), where
                    assert ours.asid == (exp_asid if ours.ng else None), \
                        f"ASID {ours.asid} != {exp_asid}; {where}"
                    assert ours.attrindx == arm.desc >> 2 & 7 and ours.sh == arm.desc >> 8 & 3, where
                # 2. QEMU behaves as the reference says QEMU 5.0 behaves
                assert same_observable(e_q, got), \
                    f"QEMU {got} != expected QEMU 5.0 behaviour {e_q} (quirks {qm.quirks}); {where}"
                # 3. ours vs QEMU directly, or an attributed, counted divergence
                if same_observable(e_arm, e_q):
                    assert same_observable(o, got), f"walker {o} != QEMU {got}; {where}"
                    st.agree += 1
                    if got[0] == "ok" and acc < 2:
                        par = q["par"][(1 - el) * 2 + acc]
                        assert par >> 56 == (MAIR_VALUE >> 8 * ours.attrindx) & 0xFF, where
                        assert (par >> 7) & 3 == ours.sh, where
                else:
                    cause = attribute(mem, cfg, va, acc, el, e_arm, qm.quirks)
                    assert cause, f"unexplained divergence: ours {o}, QEMU {got}; {where}"
                    st.divergences[cause] += 1
                    key = (cause, o[0], o[1] if o[0] == "fault" else "ok")
                    if key not in st.examples or len(arm.reads) < st.examples[key][0]:
                        st.examples[key] = (len(arm.reads),
                                            f"{cause}: ours {o} vs QEMU {got}; {where}")
                cov = st.coverage
                cov[(o[0], o[1] if o[0] == "fault" else "ok", o[2])] += 1
                sel = (va >> 55) & 1
                if got[2] is None and got[0] == "fault":
                    cov["fetch-fault-level-unseen"] += 1
                if o == ("fault", TRANS, 0):
                    cov["hole" if in_hole(va, tcr) else "epd" if tcr >> (23 if sel else 7) & 1
                        else "l0-invalid"] += 1
                if isinstance(ours, Translation):
                    cov[("leaf", ours.level, sel)] += 1
                    txsz = (tcr >> (16 if sel else 0)) & 0x3F
                    cov[("start-level", 0 if txsz < 25 else 1 if txsz < 34 else 2)] += 1
                    cov[("txsz", txsz)] += 1
                    cov[("ap-xn", ours.desc >> 6 & 3, ours.desc >> 53 & 3)] += 1
                if isinstance(ours, Translation) and ours.ng:
                    cov[("asid-bits", as16, a1)] += 1


# ================================================================================================
# Tests

@pytest.fixture(scope="module")
def mem():
    return PhysMem(MEM_SIZE)


@pytest.fixture(scope="module")
def oracle(mem):
    return QemuOracle(mem)


def test_stub_encodings_match_capstone():
    """The hand-encoded AT stub disassembles to what the oracle means."""
    md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    code = b"".join(struct.pack("<I", w) for w in stub_words())
    text = [f"{i.mnemonic} {i.op_str}".strip() for i in md.disasm(code, 0x1000)]
    assert text == [
        "ldr x1, [x0], #8",
        "at s1e1r, x1", "isb", "mrs x2, par_el1", "str x2, [x9], #8",
        "at s1e1w, x1", "isb", "mrs x2, par_el1", "str x2, [x9], #8",
        "at s1e0r, x1", "isb", "mrs x2, par_el1", "str x2, [x9], #8",
        "at s1e0w, x1", "isb", "mrs x2, par_el1", "str x2, [x9], #8",
        "subs x10, x10, #1", "b.ne #0x1000", "nop"]
    assert [name for name, _, _ in AT_OPS] == ["S1E1R", "S1E1W", "S1E0R", "S1E0W"]


def test_oracle_sanity(mem, oracle):
    """A hand-built 4-level walk through the oracle: known PA, known FSCs."""
    mem.buf[:0x10000] = 0
    mem.write64(0x1000, 0x2000 | 3)
    mem.write64(0x2000, 0x3000 | 3)
    mem.write64(0x3000, 0x4000 | 3)
    mem.write64(0x4000, 0x5000 | 3 | 1 << 10 | 3 << 6)     # RO for all
    tcr = 16 | 16 << 16 | 0b10 << 30 | 5 << 32
    assert oracle.at(0x123, 0, 1, 0x1000, 0x1000, tcr) == ("ok", 0x5123)
    assert oracle.at(0x123, 1, 1, 0x1000, 0x1000, tcr) == ("fault", 0x0F)
    assert oracle.at(0x1000, 0, 0, 0x1000, 0x1000, tcr) == ("fault", 0x07)
    assert oracle.at(0x123, 2, 0, 0x1000, 0x1000, tcr) == ("ok", 0x5123)
    assert oracle.at(1 << 50, 0, 1, 0x1000, 0x1000, tcr) == ("fault", 0x04)     # the hole
    assert decode_par(0x81F, 0) == ("fault", 0x0F)
    # the emulated CPU: Cortex-A72, PARange = 44 bits, no FEAT_HPDS, no FEAT_HAFDBS
    rd = oracle._rd
    assert (rd((0, 0, 3, 0, 0)) >> 4) & 0xFFF == 0xD08                 # MIDR_EL1.PartNum
    assert rd((0, 7, 3, 0, 0)) & 0xF == 4                              # ID_AA64MMFR0_EL1.PARange
    assert (rd((0, 7, 3, 0, 1)) >> 12) & 0xF == 0                      # ID_AA64MMFR1_EL1.HPDS
    assert rd((0, 7, 3, 0, 1)) & 0xF == 0                              # ID_AA64MMFR1_EL1.HAFDBS


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_walker_matches_qemu(mem, oracle, chunk, record_property, capsys):
    t0 = time.perf_counter()
    gen = ConfigGen(mem)
    st = Stats()
    per = -(-N_CONFIGS // CHUNKS)
    for i in range(chunk * per, min(N_CONFIGS, (chunk + 1) * per)):
        cfg = gen.make(i)
        check_config(mem, oracle, cfg, st)
    dt = time.perf_counter() - t0
    record_property("configs", st.configs)
    record_property("queries", st.queries)
    record_property("divergences", dict(st.divergences))
    with capsys.disabled():
        print(f"\n[walker vs QEMU chunk {chunk}] {st.configs} configs, {st.queries} queries, "
              f"{st.agree} direct agreements, divergences {dict(st.divergences)}, "
              f"{st.coverage['fetch-fault-level-unseen']} fetch faults of unseen level, {dt:.1f}s")
        if os.environ.get("ARMMU_QEMU_VERBOSE"):
            for _, ex in sorted(st.examples.values()):
                print("   ", ex)
    assert st.configs >= N_CONFIGS // CHUNKS and st.queries >= 6 * VAS_PER_CONFIG * st.configs
    # the random configurations must really reach the interesting cases
    cov = st.coverage
    for lv in range(4):
        assert cov[("fault", TRANS, lv)], f"no translation fault at level {lv}"
        assert cov[("fault", ASZ, lv)], f"no address size fault at level {lv}"
        assert cov[("fault", EXT, lv)], f"no external abort at level {lv}"
    for lv in (1, 2, 3):
        assert cov[("fault", AF, lv)] and cov[("fault", PERM, lv)], f"level {lv} AF/permission"
        assert cov[("leaf", lv, 0)] and cov[("leaf", lv, 1)], f"no level-{lv} leaf in both ranges"
    for ap in range(4):
        for xn in range(4):
            assert cov[("ap-xn", ap, xn)], f"AP={ap:02b} PXN/UXN={xn:02b} never translated"
    for as16 in (0, 1):
        for a1 in (0, 1):
            assert cov[("asid-bits", as16, a1)]
    for lv in range(3):
        assert cov[("start-level", lv)], f"no translation starting at level {lv}"
    assert cov[("txsz", 16)] and cov[("txsz", 25)]
    assert sum(1 for k in cov if k[0] == "txsz") >= 12, "too few TxSZ values translated"
    assert cov["hole"] and cov["epd"] and cov["l0-invalid"]
    for cause in sorted(QUIRKS):
        assert st.divergences[cause], f"QEMU deviation {cause} never exercised"


def test_at_path_matches_qemu_access_path(mem, oracle):
    """Cross-check of the oracle itself: AT at EL3 (PAR) and QEMU's real TLB-fill path at EL1/EL0
    (uc_vmem_translate READ/WRITE) agree on pass/fail and PA."""
    gen = ConfigGen(mem)
    n = 0
    for i in range(150):
        cfg = gen.make(N_CONFIGS + i)
        res = oracle.query(cfg.vas, cfg.ttbr0, cfg.ttbr1, cfg.tcr, cfg.sctlr)
        for va, r in zip(cfg.vas, res):
            for el in (1, 0):
                for acc, prot in ((0, UC_PROT_READ), (1, UC_PROT_WRITE)):
                    pa = oracle.probe(va, prot, el)
                    at = r[(acc, el)]
                    assert (at[0] == "ok") == (pa is not None), (hex(va), el, acc, at, pa)
                    if pa is not None:
                        assert at[1] == pa
                    n += 1
    assert n == 150 * VAS_PER_CONFIG * 4
