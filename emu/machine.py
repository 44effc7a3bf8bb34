"""A machine: N CPUs (Unicorn instances) over one shared physical memory.

CPUs advance in quanta, always the CPU with the lowest cycle clock first (ties by
index), so a run is deterministic for a given seed. The machine also keeps translated
code coherent: when a frame that held code is written or reused, every CPU drops its
translated blocks, so no CPU runs stale code (docs/unicorn.md §Shared memory).
"""
from __future__ import annotations

import random
from collections import Counter
from typing import Callable

from . import fastpath
from .cores import CorePreset, load_preset
import numpy as np

from .cpu import SPECULATION_RATES, Cpu, Stop, StopKind, special_offsets
from .frames import FrameAllocator, FrameInfo, FrameKind
from .physmem import PAGE_SHIFT, PAGE_SIZE, PhysMem
from .tlb import invalidate_asid, invalidate_va
from .trace import Trace


class BudgetExceeded(Exception):
    """A guest ran past its instruction budget (an endless loop, most likely)."""


class Machine:
    def __init__(self, ncpus: int = 2, mem_size: int = 64 << 20, core: str | CorePreset = "cortex-a72",
                 seed: int = 0, speculate: str = "off", instrument: bool = False,
                 trace: Trace | bool | None = None, parange_bits: int = 44, fast: bool | None = None):
        if ncpus < 1:
            raise ValueError("a machine needs at least one CPU")
        if speculate not in SPECULATION_RATES:
            raise ValueError(f"unknown speculation setting {speculate!r} (one of {', '.join(SPECULATION_RATES)})")
        self.core = core if isinstance(core, CorePreset) else load_preset(core)
        self.seed = seed
        self.rng = random.Random(seed)
        self.speculate = speculate
        self.instrument = instrument
        self.parange_bits = parange_bits
        self.fast = fastpath.resolve(fast)           # the compiled twins of the hottest paths (emu/fastpath.py)
        self.trace = Trace() if trace is True else (trace or None)
        self.mem = PhysMem(mem_size)
        self.frames = FrameAllocator(self.mem)
        self.walk_observers: list[Callable] = []      # fn(cpu, va, result, speculative)
        self.checker = None                           # TLB-hazard checker: told of hits on stale entries
        self._special_offsets: dict[int, list[int]] = {}   # code frame -> offsets of DSB/ISB/ERET
        self.code_frames: set[int] = set()            # frames some CPU has fetched instructions from
        self.frames.listeners.append(self._frame_changed)
        self.mem.write_listeners.append(self._host_wrote)
        self.cpus = [Cpu(self, i) for i in range(ncpus)]
        self.tlbs = [cpu.tlb for cpu in self.cpus]       # what a broadcast TLBI reaches
        # a completed by-VA TLBI, applied to every TLB it reaches (emu/fastpath.py)
        self.invalidate_va = fastpath.Invalidator(self.tlbs) if self.fast else invalidate_va
        # a completed by-ASID TLBI (ASIDE1, ASIDE1IS), likewise
        self.invalidate_asid = self.invalidate_va.invalidate_asid if self.fast else invalidate_asid

    # ---------------------------------------------------------------- code coherence
    def code_fetched(self, pa: int) -> None:
        frame = pa >> PAGE_SHIFT << PAGE_SHIFT
        if frame not in self.code_frames:
            self.code_frames.add(frame)
            for cpu in self.cpus:
                cpu.watch_code_frame(frame)

    def special_offsets(self, frame: int) -> list[int]:
        """Offsets of the DSB/ISB/ERET words in a code frame (decoded once per contents)."""
        offs = self._special_offsets.get(frame)
        if offs is None:
            offs = self._special_offsets[frame] = special_offsets(self.mem.buf[frame:frame + PAGE_SIZE].view(np.uint32))
        return offs

    def code_written(self, writer: Cpu | None, frame: int) -> None:
        """A code frame was written by a guest store of `writer` (None: by the host).
        Every CPU decodes its code frames again; the others also drop their translated
        code (QEMU notices a CPU's stores into its own code, not other instances')."""
        self._special_offsets.pop(frame, None)
        for cpu in self.cpus:
            if cpu is not writer:
                cpu.drop_code()
            else:
                cpu.redecode_code()

    def _host_wrote(self, pa: int, length: int) -> None:
        # a kernel-side store into a frame that holds code (copyout, ptrace-like pokes)
        frame = pa & ~0xFFF
        written = False
        while frame < pa + length:
            if frame in self.code_frames:
                self._special_offsets.pop(frame, None)
                written = True
            frame += 0x1000
        if written:
            self.code_written(None, pa & ~0xFFF)

    def drop_code_others(self, cpu: Cpu) -> None:
        for other in self.cpus:
            if other is not cpu:
                other.drop_code()

    def _frame_changed(self, pa: int, old: FrameInfo, new: FrameInfo) -> None:
        # A freed or reused code frame may get new contents: forget its translations.
        if pa in self.code_frames and new.kind is FrameKind.FREE:
            self.code_frames.discard(pa)
            self._special_offsets.pop(pa, None)
            for cpu in self.cpus:
                cpu.unwatch_code_frame(pa)
                cpu.drop_code()

    def load_code(self, pa: int, code: bytes) -> None:
        """Host-side load of guest code at a physical address; every CPU sees it fresh
        (barriers are found by decoding each code frame when a CPU fetches from it)."""
        self.mem.write(pa, code)                      # (_host_wrote forgets the frame's decoding)
        for cpu in self.cpus:
            cpu.drop_code()

    # ---------------------------------------------------------------- running
    def next_cpu(self, runnable: list[Cpu]) -> Cpu:
        """The CPU whose clock is furthest behind (ties: lowest index)."""
        return min(runnable, key=lambda c: (c.cycles, c.index))

    def run(self, quantum: int = 1000, budget: int = 10_000_000,
            on_stop: Callable[[Cpu, Stop], bool] | None = None, active: list[Cpu] | None = None) -> None:
        """Run the active CPUs in quanta until none is left.

        `on_stop(cpu, stop)` handles SVCs, faults and other stops and returns True to
        keep that CPU running (having fixed its state) or False to retire it. Without
        a handler any stop other than the end of a quantum retires the CPU.
        """
        if quantum <= 0:
            raise ValueError(f"quantum must be a positive instruction count, not {quantum}")
        if budget <= 0:
            raise ValueError(f"budget must be a positive instruction count, not {budget}")
        runnable = list(self.cpus if active is None else active)
        stops = {cpu.index: 0 for cpu in runnable}    # each stop counts as one step of the budget
        while runnable:
            cpu = self.next_cpu(runnable)
            spent = cpu.insns + stops[cpu.index]
            if spent >= budget:
                raise BudgetExceeded(f"cpu{cpu.index} ran {cpu.insns} instructions and stopped "
                                     f"{stops[cpu.index]} times without finishing (budget {budget}); "
                                     f"last pc {cpu.pc:#x}")
            before = cpu.cycles
            stop = cpu.run(min(quantum, budget - spent))
            # CPUs with nothing to run still speculate while time passes
            for other in self.cpus:
                if other.spec_rate and other not in runnable:
                    other.speculate(elapsed=cpu.cycles - before)
            if stop.kind is StopKind.QUANTUM:
                continue
            stops[cpu.index] += 1
            keep = on_stop(cpu, stop) if on_stop is not None else False
            if not keep:
                runnable.remove(cpu)

    # ---------------------------------------------------------------- statistics
    def stats(self) -> dict[str, int]:
        """Every statistic (emu/stats.py declares each with its description)."""
        from .stats import collect
        return collect(self)

    def events(self) -> Counter:
        total = Counter()
        for cpu in self.cpus:
            total.update(cpu.events)
        return total
