"""The compiled fast paths change nothing but speed: whole runs (real guests, the kernel
model, a strategy, speculation, the hazard checker) give the same result dict, to the
last cycle, counter, TLB statistic and violation, with the compiled twins (the default
when built) and with ARMMU_PURE_PYTHON=1 (the Python they mirror, emu/fastpath.py).

The Python is the reference: its behaviour is what the rest of the suite checks against
QEMU, the Arm ARM and OpenBSD's source (tests/emu/test_fast_translate.py checks the
translation twin step by step, tests/test_fast_tlbi.py the TLBI twin)."""
from __future__ import annotations

import pytest

from emu import fastpath
from emu.run import check, run, set_checker_factory
from emu.trace import Trace

pytestmark = pytest.mark.skipif(not fastpath.built(), reason="compiled fast paths not built")

CONFIGS = [
    # threads sharing an address space on 4 CPUs, speculation on: fills, context switches, IS TLBIs
    {"workload": "threads", "strategy": "purge", "pages": 256, "threads": 4, "cpus": 4, "speculate": "default"},
    # one address space larger than the L2 TLB, torn down with two VAE1IS a page
    {"workload": "touch", "strategy": "purge-naive", "pages": 1100, "cpus": 2, "speculate": "aggressive"},
    # many short processes with 8-bit ASIDs and an unsafe strategy: the checker finds hazards
    {"workload": "storm", "strategy": "purge-unsafe", "pages": 16, "threads": 2, "procs": 6, "cpus": 2,
     "asid_bits": 8, "speculate": "default"},
    # spinning threads, a random-free A53 (its own TLB geometry and block slicing)
    {"workload": "spin", "strategy": "asid-noflush", "pages": 32, "threads": 3, "cpus": 3, "core": "cortex-a53",
     "speculate": "default"},
    # sparse mappings: a walk-cache miss (a cold walk) for most pages
    {"workload": "sparse", "strategy": "linux", "pages": 200, "cpus": 2},
]


def _comparable(r: dict) -> dict:
    r = dict(r)
    r["host"] = {k: v for k, v in r["host"].items() if k not in ("seconds", "fast_paths")}
    return r


@pytest.fixture
def checked():
    """Every run creates the hazard checker (as `armmu check` does), undone afterwards."""
    check.install()
    yield
    set_checker_factory(None)


def _both(monkeypatch, cfg, seed):
    out = []
    for pure in ("1", "0"):
        monkeypatch.setenv(fastpath.PURE_ENV, pure)
        out.append(_comparable(run(dict(cfg), seed)))
    return out


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c['workload']}-{c['strategy']}")
def test_same_result_compiled_or_python(monkeypatch, checked, cfg):
    pure, fast = _both(monkeypatch, cfg, seed=7)
    assert pure["outcome"]["completed"] or pure["violations"]
    assert fast == pure


def test_the_unsafe_run_did_find_hazards(monkeypatch, checked):
    """(so that the comparison above covers the checker's stale-entry reports too)"""
    pure, fast = _both(monkeypatch, CONFIGS[2], seed=7)
    assert pure["violations"] and fast["violations"] == pure["violations"]


def test_same_trace_compiled_or_python(monkeypatch):
    """With a trace the compiled translation hands every miss to the Python (which records
    it); the compiled fill hook still answers Unicorn: the events are the same."""
    traces = []
    for pure in ("1", "0"):
        monkeypatch.setenv(fastpath.PURE_ENV, pure)
        t = Trace()
        run({"workload": "threads", "strategy": "purge", "pages": 16, "threads": 2, "cpus": 2, "trace": t}, 3)
        traces.append(t.records)
    assert traces[0] == traces[1] and len(traces[0]) > 100


def test_runs_use_the_compiled_paths_by_default(monkeypatch):
    monkeypatch.delenv(fastpath.PURE_ENV, raising=False)
    from emu.run import execute
    r, m, _ = execute({"workload": "touch", "pages": 4, "cpus": 1}, 0)
    assert m.fast and type(m.cpus[0]._translate) is fastpath.Translator and r["host"]["fast_paths"] is True
    assert isinstance(m.invalidate_va, fastpath.Invalidator)
    monkeypatch.setenv(fastpath.PURE_ENV, "1")
    r, m, _ = execute({"workload": "touch", "pages": 4, "cpus": 1}, 0)
    assert not m.fast and type(m.cpus[0]._translate) is not fastpath.Translator and r["host"]["fast_paths"] is False
    assert not isinstance(m.invalidate_va, fastpath.Invalidator)
