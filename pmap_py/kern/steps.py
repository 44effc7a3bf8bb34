"""What a kernel path yields to the scheduler loop (pmap_py.kern.kernel).

A kernel path is a generator; each ``yield`` ends one step. The loop then advances
whichever CPU is furthest behind, so other CPUs run guest code or kernel steps in
between. What is yielded says what the kernel does at that point.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generator


class Step:
    """A point where another CPU can observe state (a spin iteration, one chunk of
    a long pmap_remove): no scheduling decision is made."""
    __slots__ = ()

    def __repr__(self) -> str:
        return "STEP"


class Preempt:
    """sched_pause(yield): switch away only if the time slice is used up and
    another proc is waiting for this CPU."""
    __slots__ = ()

    def __repr__(self) -> str:
        return "PREEMPT"


class Yield:
    """sched_yield()/yield(): back onto the run queue, run whatever is next."""
    __slots__ = ()

    def __repr__(self) -> str:
        return "YIELD"


@dataclass(slots=True)
class Sleep:
    """tsleep(chan, wmesg): sleep until wakeup(chan). intr: PCATCH (single_thread_set
    may end the sleep; the path then sees `interrupted`)."""
    chan: object
    wmesg: str
    intr: bool = False


class SwitchExit:
    """sched_exit(): switch to idle for good; the proc is dead."""
    __slots__ = ()

    def __repr__(self) -> str:
        return "SCHED_EXIT"


STEP = Step()
PREEMPT = Preempt()
YIELD = Yield()
SCHED_EXIT = SwitchExit()


def fork_return() -> Generator:
    """child_return: a new thread's first kernel step; then it returns to user mode."""
    yield STEP
