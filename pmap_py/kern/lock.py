"""The kernel lock (kern/kern_lock.c __mp_lock): recursive, spun on when contended.

``acquire`` is a generator: while another proc holds the lock the caller spins, one
step per iteration, so the holder's CPU keeps running in simulated time. The first
contended iteration costs ``lock_contended`` (the line bouncing between CPUs), every
iteration ``spin_wait_iteration``; the uncontended path costs ``lock_acquire``.
"""
from __future__ import annotations

from typing import Generator


class KernelLock:
    def __init__(self, kern):
        self.kern = kern
        self.holder = None
        self.count = 0
        self.contended = 0                 # acquisitions that had to spin

    def held_by(self, p) -> bool:
        return self.holder is p

    def acquire(self, p, count: int = 1) -> Generator:
        """KERNEL_LOCK() (count > 1: __mp_acquire_count after a sleep)."""
        k = self.kern
        if self.holder is not None and self.holder is not p:
            self.contended += 1
            cpu = k.curcpu(p)
            cpu.charge(cpu.cost.lock_contended, "lock_contended")
            k.ktrace(p, "kernel_lock_contended", holder=str(self.holder))
            while self.holder is not None and self.holder is not p:
                yield from k.spin(p)
        cpu = k.curcpu(p)
        cpu.charge(cpu.cost.lock_acquire, "lock_acquire")
        self.holder = p
        self.count += count

    def release(self, p) -> None:
        """KERNEL_UNLOCK()."""
        if self.holder is not p:
            raise AssertionError(f"KERNEL_UNLOCK by {p}, held by {self.holder}")
        self.count -= 1
        if self.count == 0:
            self.holder = None

    def release_all(self, p) -> int:
        """__mp_release_all(&kernel_lock): drop every recursive hold, return how many."""
        if self.holder is not p:
            return 0
        n, self.count, self.holder = self.count, 0, None
        return n
