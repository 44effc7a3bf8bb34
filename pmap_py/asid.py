"""ASID allocators of OpenBSD's arm64 pmap: pmap.c 1.113's pairs with generations and
rollover (AsidAllocator), and pmap.c 1.58's random CAS allocator (RandomAsidAllocator).

* ``pm_asid`` = ASID (low 16 bits, always even) | generation (multiples of 65536).
  The even ASID tags entries filled while in the kernel, ``ASID | ASID_USER`` those
  filled in userland (TTBR1 points at the trampoline table then).
* The bitmap ``pmap_asid`` holds PMAP_MAX_NASID bits as uint32 words; a pmap owns
  the two adjacent bits of its pair (mask ``3 << bit``). Pair 0/1 is the kernel's.
* ``pmap_nasid`` is 256 (8-bit ASIDs) or 65536 (16-bit), from the core preset.

Locking (``pmap_asid_mtx``) is charged as one lock acquisition per call that takes
it; the cost model has no contention between CPUs here.
"""
from __future__ import annotations

import random

from .cpufunc import cpu_tlb_flush

PMAP_MAX_NASID = 1 << 16
PMAP_ASID_MASK = PMAP_MAX_NASID - 1
ASID_USER = 1
WORD_BITS = 32
FULL_WORD = 0xFFFF_FFFF


class AsidError(RuntimeError):
    """An ASID invariant OpenBSD asserts with KASSERT was violated."""


class AsidBitmap:
    """``uint32_t pmap_asid[PMAP_MAX_NASID / 32]``: two adjacent bits per pmap."""

    def __init__(self, nasid: int, rng: random.Random):
        self.pmap_nasid = nasid
        self.pmap_asid = [0] * (PMAP_MAX_NASID // WORD_BITS)   # uint32 words
        self.rng = rng
        self.rollovers = 0
        self.pmap_asid[0] |= 3                                   # pair 0/1: the kernel

    def bits(self, asid: int) -> int:
        """The two bits of the pair starting at (even) `asid`: 0 = free, 3 = used."""
        return (self.pmap_asid[asid // WORD_BITS] >> (asid & (WORD_BITS - 1))) & 3

    def _set(self, asid: int) -> None:
        self.pmap_asid[asid // WORD_BITS] |= 3 << (asid & (WORD_BITS - 1))

    def _clear(self, asid: int) -> None:
        self.pmap_asid[asid // WORD_BITS] &= ~(3 << (asid & (WORD_BITS - 1))) & FULL_WORD

    def arc4random(self) -> int:
        return self.rng.getrandbits(32)

    def used_pairs(self) -> list[int]:
        """Even ASIDs whose pair is marked used (for tests and debugging)."""
        return [a for a in range(0, self.pmap_nasid, 2) if self.bits(a)]


class AsidAllocator(AsidBitmap):
    """pmap.c 1.113: pairs, generations, rollover; allocated by pmap_setttb."""

    def __init__(self, nasid: int, rng: random.Random):
        if nasid not in (256, PMAP_MAX_NASID):
            raise ValueError(f"pmap_nasid must be 256 or 65536, not {nasid}")
        super().__init__(nasid, rng)
        self.pmap_asid_gen = PMAP_MAX_NASID

    # ------------------------------------------------------------------ OpenBSD functions
    def pmap_find_asid(self, pm) -> int:
        """Previous ASID if free; else up to 5 random even candidates; else a linear
        scan word by word (full words skipped), pairs only; else -1."""
        asid = pm.pm_asid & PMAP_ASID_MASK
        if asid < self.pmap_nasid and self.bits(asid) == 0:
            return asid
        for _ in range(5):
            asid = self.arc4random() & (self.pmap_nasid - 2)
            if self.bits(asid) == 0:
                return asid
        for base in range(0, self.pmap_nasid, WORD_BITS):
            word = self.pmap_asid[base // WORD_BITS]
            if word == FULL_WORD:
                continue
            for bit in range(0, WORD_BITS, 2):
                if word & (3 << bit) == 0:
                    return base + bit
        return -1

    def pmap_rollover_asid(self, cpu, pm, curpms) -> int:
        """New generation: clear the bitmap, re-reserve pair 0, carry every CPU's
        ci_curpm over (re-tagged with the new generation, marked used), then
        cpu_tlb_flush() (TLBI VMALLE1IS on every CPU). `curpms` lists ci_curpm per CPU."""
        self.pmap_asid_gen += PMAP_MAX_NASID
        gen = self.pmap_asid_gen
        self.rollovers += 1
        for i in range(len(self.pmap_asid)):
            self.pmap_asid[i] = 0
        self.pmap_asid[0] |= 3
        for cur in curpms:
            asid = cur.pm_asid & PMAP_ASID_MASK
            cur.pm_asid = asid | gen
            self._set(asid)
        cpu.charge(0, "asid_rollovers")
        cpu_tlb_flush(cpu)
        if pm.pm_asid & ~PMAP_ASID_MASK == gen:
            return pm.pm_asid & PMAP_ASID_MASK
        return self.pmap_find_asid(pm)

    def pmap_allocate_asid(self, cpu, pm, curpms) -> None:
        cpu.charge(cpu.cost.lock_acquire, "lock_acquire")       # pmap_asid_mtx
        asid = self.pmap_find_asid(pm)
        if asid == -1:
            asid = self.pmap_rollover_asid(cpu, pm, curpms)
        if not 0 < asid < self.pmap_nasid:
            raise AsidError(f"KASSERT(asid > 0 && asid < pmap_nasid) failed: asid {asid}")
        self._set(asid)
        pm.pm_asid = asid | self.pmap_asid_gen
        cpu.charge(0, "asids_allocated")

    def release(self, pm) -> bool:
        """The bitmap half of pmap_free_asid: clear the pair only if pm's generation is
        the current one (an older ASID was already recycled by a rollover)."""
        if pm.pm_asid & ~PMAP_ASID_MASK != self.pmap_asid_gen:
            return False
        self._clear(pm.pm_asid & PMAP_ASID_MASK)
        return True


class RandomAsidAllocator(AsidBitmap):
    """pmap.c 1.58's allocator: called from pmap_pinit, one random even ASID out of
    NUM_ASID = 65536 claimed with atomic_cas_uint, retried until it sticks. There are no
    generations and no rollover: with every pair taken OpenBSD loops forever, so here a
    full bitmap (or an implausibly long run of collisions) raises AsidError instead.
    1.58 assumes 16-bit ASIDs whatever the core reports (no ID_AA64MMFR0_EL1 test)."""

    NUM_ASID = PMAP_MAX_NASID
    MAX_TRIES = 1 << 20         # P(miss a free pair) < e^-32 while one of 32767 is free

    def __init__(self, rng: random.Random):
        super().__init__(self.NUM_ASID, rng)   # pair 0 marked so `asid == 0` is never chosen
        self.pmap_asid_gen = 0                  # no generations: pm_asid is the bare ASID
        self.npairs_used = 0

    def pmap_allocate_asid(self, cpu, pm, curpms=None) -> None:
        """do { asid = arc4random() & (NUM_ASID - 2) } while (asid == 0 || used);
        atomic_cas_uint claims the pair (one atomic, charged as an uncontended lock)."""
        if self.npairs_used >= self.NUM_ASID // 2 - 1:
            raise AsidError(f"pmap_allocate_asid (pmap.c 1.58): all {self.NUM_ASID // 2 - 1} ASID "
                            "pairs are in use; OpenBSD would spin forever in its arc4random/CAS loop")
        if cpu is not None:                                     # pmap_pinit may run without one
            cpu.charge(cpu.cost.lock_acquire, "lock_acquire")   # atomic_cas_uint
        for _ in range(self.MAX_TRIES):
            asid = self.arc4random() & (self.NUM_ASID - 2)
            if asid != 0 and self.bits(asid) == 0:
                self._set(asid)
                self.npairs_used += 1
                pm.pm_asid = asid
                if cpu is not None:
                    cpu.charge(0, "asids_allocated")
                return
        raise AsidError(f"pmap_allocate_asid (pmap.c 1.58): no free ASID pair found in "
                        f"{self.MAX_TRIES} random tries ({self.npairs_used} pairs in use); "
                        "OpenBSD would keep spinning")

    def release(self, pm) -> bool:
        """The bitmap half of 1.58's pmap_free_asid: the CAS loop clears the pair."""
        asid = pm.pm_asid & PMAP_ASID_MASK
        if self.bits(asid) == 0:
            raise AsidError(f"pmap_free_asid: ASID {asid} of {pm} is not allocated")
        self._clear(asid)
        self.npairs_used -= 1
        return True
