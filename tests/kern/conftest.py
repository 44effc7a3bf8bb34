"""Runs of real guests through emu.run.execute: the result, the machine and the kernel."""
from __future__ import annotations

import pytest

from emu.physmem import PAGE_SIZE
from emu.run import execute, workloads

UPAGES = 5          # arm64 param.h 1.4: pages of u-area, each removed with pmap_kremove

# what every hand-written test guest starts with: a heap at 0x20000000, 32 KB of stack
# below 0x7fffff8000 (OpenBSD's USRSTACK) and sp at its top
ASM_PRELUDE = """
#include <armmu/asm.h>
	ARMMU_REGION heap, 0x20000000, {heap:#x}, PROT_RW, REGION_POPULATE
	ARMMU_REGION stack, 0x7fffff0000, 0x8000, PROT_RW, REGION_POPULATE
	.text
	.globl	_start
_start:
	MOV48	x9, 0x7fffff8000
	mov	sp, x9
"""


def go(**cfg):
    seed = cfg.pop("seed", 1)
    return execute(cfg, seed)


def mapped_pages(cfg) -> int:
    """N: the pages the workload's image maps at exec (every region populated), from
    its segments and declared regions, not from the model."""
    full = {"strategy": "purge", "threads": 1, "procs": 1, **cfg}
    prog, _, extra = workloads.build(full)
    return sum(r.size // PAGE_SIZE for r in prog.layout.values()) + extra


def write_asm(tmp_path, name: str, body: str, heap: int = 0x1000) -> str:
    """tmp_path/name.S = ASM_PRELUDE (with ``heap`` bytes of heap) + body; its path."""
    f = tmp_path / f"{name}.S"
    f.write_text(ASM_PRELUDE.format(heap=heap) + body)
    return str(f)


@pytest.fixture
def run_cfg():
    return go


@pytest.fixture
def asm_guest(tmp_path):
    """asm_guest(name, body) -> the path of a guest that runs body after ASM_PRELUDE."""
    return lambda name, body, heap=0x1000: write_asm(tmp_path, name, body, heap)
