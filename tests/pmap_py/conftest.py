"""Shared fixtures: real Machines (2 CPUs, 16 MiB) with the pmap bootstrapped."""
from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from emu.cores import load_preset
from emu.frames import FrameKind
from emu.machine import Machine
from emu.trace import Trace
from pmap_py import pmap_bootstrap

HW_KEYS = ("tlbi.VAE1IS", "tlbi.VAALE1IS", "tlbi.ASIDE1IS", "tlbi.VMALLE1IS", "dsb", "isb", "ttbr_writes")


def make(legacy=False, revision=None, asid_bits=16, seed=0, trace=None, ncpus=2, core="cortex-a72"):
    core = load_preset(core)
    if asid_bits != core.asid_bits:
        core = dataclasses.replace(core, asid_bits=asid_bits)
    if trace is True:
        trace = Trace()
    m = Machine(ncpus, 16 << 20, core=core, seed=seed, trace=trace)
    return m, pmap_bootstrap(m, legacy=legacy, revision=revision)


@pytest.fixture
def sys16():
    return make()


def hw(counter: Counter) -> dict:
    """The hardware-operation counts of an events Counter (zeros dropped)."""
    return {k: counter[k] for k in HW_KEYS if counter[k]}


def delta(machine, fn, *args, **kw):
    """Run fn and return (result, per-CPU hardware-count deltas)."""
    before = [c.events.copy() for c in machine.cpus]
    r = fn(*args, **kw)
    return r, [hw(c.events - b) for c, b in zip(machine.cpus, before)]


def user_frames(m, pm, n):
    return [m.frames.alloc(FrameKind.USER, owner=pm) for _ in range(n)]
