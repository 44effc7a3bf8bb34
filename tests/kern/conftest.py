"""Runs of real guests through emu.run.execute: the result, the machine and the kernel."""
from __future__ import annotations

import pytest

from emu.physmem import PAGE_SIZE
from emu.run import execute, workloads

UPAGES = 5          # arm64 param.h 1.4: pages of u-area, each removed with pmap_kremove


def go(**cfg):
    seed = cfg.pop("seed", 1)
    return execute(cfg, seed)


def mapped_pages(cfg) -> int:
    """N: the pages the workload's image maps at exec (every region populated), from
    its segments and declared regions, not from the model."""
    full = {"strategy": "purge", "threads": 1, "procs": 1, **cfg}
    prog, _, extra = workloads.build(full)
    return sum(r.size // PAGE_SIZE for r in prog.layout.values()) + extra


@pytest.fixture
def run_cfg():
    return go
