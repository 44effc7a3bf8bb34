"""One run = one call: ``run(config, seed) -> dict`` (result schema 1, docs/result-schema.md).

The outer layer: composes the machine (emu), the kernel model and a strategy
(pmap_py) and a workload (guest). Deterministic for a configuration and seed.

``config`` keys (defaults in DEFAULTS): workload | guest (a .S file), strategy,
pages, threads, cpus, procs, core, speculate; optional: touch (pages the touch
guest stores to, default all), populate, thread_exit, main_wait, jobs (processes
the shell runs at once; the next starts when one is reaped), unlocked_exit (threads
exit without the kernel lock: KernConfig.unlocked_exit), irq_prob (seeded interrupts
between kernel steps: KernConfig.irq_prob), asid_bits (8 or 16: overrides the core's), quantum,
slice_cycles, mem_mb, strategy_file, trace (a Trace to fill), budgets
(max_insns, max_steps, max_cycles, max_faults).

A checker (issue 10) plugs in with ``set_checker_factory(fn)``: ``fn(machine,
kernel)`` returns an object whose ``violations`` (a list of dicts or objects with
kind, cpu, cycle, va, asid, pa, detail) go into the result.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import fields, replace

from emu.cores import load_preset
from emu.frames import FrameKind
from emu.machine import Machine
from emu.stats import attach as attach_stats, collect as collect_stats
from pmap_py import pmap_bootstrap
from pmap_py import strategies
from pmap_py.kern import KernConfig, Kernel, RunEnded
from pmap_py.kern.proc import PsFlag

from . import workloads

SCHEMA = 1
DEFAULTS = {"workload": "threads", "guest": None, "strategy": "purge", "pages": 64, "threads": 4,
            "cpus": 4, "procs": 1, "core": "cortex-a72", "speculate": "off"}
SPECULATE = ("off", "default", "aggressive")
LIMITS = {"pages": (1, 1 << 20), "threads": (1, 256), "cpus": (1, 64), "procs": (1, 64)}
EVENT_KEYS = ("dsb", "isb", "ttbr_writes", "walks", "speculative_walks", "tlb_hits", "tlb_misses",
              "faults", "ptes_cleared", "pt_pages_freed", "asids_allocated", "asid_rollovers",
              "context_switches", "el0_entries", "el0_returns", "lock_contended", "spin_wait")

_checker_factory = None


class RunError(ValueError):
    """A bad configuration (one line, for the CLI's exit code 2)."""


def set_checker_factory(fn) -> None:
    global _checker_factory
    _checker_factory = fn


def normalize(config: dict) -> dict:
    """Defaults filled in and every value checked; RunError on the first bad one."""
    cfg = dict(DEFAULTS)
    for k, v in (config or {}).items():
        if v is not None or k not in DEFAULTS:
            cfg[k] = v
    if cfg.get("strategy_file"):
        try:
            strategies.load_strategy_file(cfg["strategy_file"])
        except strategies.StrategyError as e:
            raise RunError(str(e)) from None
    if cfg["strategy"] not in strategies.names():
        raise RunError(f"unknown strategy {cfg['strategy']!r} (one of {', '.join(strategies.names())})")
    if not cfg.get("guest") and cfg["workload"] not in workloads.WORKLOADS:
        raise RunError(f"unknown workload {cfg['workload']!r} (one of {', '.join(workloads.WORKLOADS)})")
    for key, (lo, hi) in LIMITS.items():
        v = cfg[key]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise RunError(f"{key} = {v!r}: must be an integer from {lo} to {hi}")
    if cfg["speculate"] not in SPECULATE:
        raise RunError(f"speculate = {cfg['speculate']!r}: one of {', '.join(SPECULATE)}")
    if cfg.get("asid_bits") is not None and cfg["asid_bits"] not in (8, 16):
        raise RunError(f"asid_bits = {cfg['asid_bits']!r}: 8 or 16 (ID_AA64MMFR0_EL1.ASIDBits)")
    for key in ("quantum", "slice_cycles", "jobs"):
        v = cfg.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise RunError(f"{key} = {v!r}: must be a positive integer")
    irq = cfg.get("irq_prob")
    if irq is not None and (not isinstance(irq, (int, float)) or isinstance(irq, bool) or not 0 <= irq <= 1):
        raise RunError(f"irq_prob = {irq!r}: must be a probability from 0 to 1")
    if cfg["workload"] in ("touch", "sparse") and not cfg.get("guest"):
        cfg["threads"] = 1                          # single-threaded workloads
    mem = cfg.get("mem_mb")
    if mem is not None and (not isinstance(mem, int) or isinstance(mem, bool) or not 16 <= mem <= 1 << 16):
        raise RunError(f"mem_mb = {mem!r}: must be an integer from 16 to 65536")
    known = {f.name for f in fields(KernConfig)}
    for key in cfg.get("budgets") or {}:
        if key not in known:
            raise RunError(f"budgets: unknown key {key!r} (one of {', '.join(sorted(known))})")
    return cfg


def _mem_bytes(cfg) -> int:
    if cfg.get("mem_mb"):
        return int(cfg["mem_mb"]) << 20
    tables = cfg["pages"] if cfg["workload"] == "sparse" else cfg["pages"] // 256   # an L3 per page
    per_proc = cfg["pages"] + tables + 64 + cfg["threads"] * 16
    frames = cfg["procs"] * per_proc + 4096
    return max(64 << 20, (frames * 4096 + (1 << 20) - 1) & ~((1 << 20) - 1))


def counters(machine) -> Counter:
    """Every count of the result's events section, summed over the CPUs."""
    total = Counter()
    for cpu in machine.cpus:
        total.update(cpu.events)
        t = cpu.tlb
        total["walks"] += cpu.walks
        total["speculative_walks"] += cpu.spec_walks
        total["tlb_hits"] += t.itlb.stats.hits + t.dtlb.stats.hits + t.l2.stats.hits
        total["tlb_misses"] += t.l2.stats.misses
        total["faults"] += cpu.faults
    return total


def events_section(c: Counter) -> dict:
    tlbi = {k[5:]: v for k, v in sorted(c.items()) if k.startswith("tlbi.") and v}
    out = {"tlbi": tlbi}
    for key in EVENT_KEYS:
        out[key] = c.get(key, 0)
    return out


def build(config: dict, seed: int = 0):
    """The machine and kernel of a run, with its processes spawned (not yet run)."""
    cfg = normalize(config)
    try:
        core = load_preset(cfg["core"])
    except ValueError as e:
        raise RunError(str(e)) from None
    if cfg.get("asid_bits"):                        # a core override: 8-bit ASIDs reuse them soon
        core = replace(core, asid_bits=int(cfg["asid_bits"]))
    strategy = strategies.get(cfg["strategy"])
    try:
        prog, populate, extra = workloads.build(cfg)
    except ValueError as e:
        raise RunError(str(e)) from None
    m = Machine(ncpus=cfg["cpus"], mem_size=_mem_bytes(cfg), core=core, seed=seed,
                speculate=cfg["speculate"], trace=cfg.get("trace"))
    attach_stats(m)
    ps = pmap_bootstrap(m, revision=strategy.revision)
    kc = KernConfig()
    for key in ("quantum", "slice_cycles", "jobs"):
        if cfg.get(key):
            setattr(kc, key, int(cfg[key]))
    kc.unlocked_exit = bool(cfg.get("unlocked_exit"))
    if cfg.get("irq_prob"):
        kc.irq_prob = float(cfg["irq_prob"])
    kc.max_faults = 4 * cfg["procs"] * (cfg["pages"] + 64) + 2_000
    for key, v in (cfg.get("budgets") or {}).items():
        setattr(kc, key, int(v))
    k = Kernel(m, ps, strategy, kc)
    k.snapshot = lambda: counters(m)
    m.kernel = k
    if _checker_factory is not None:
        m.checker = _checker_factory(m, k)
    for _ in range(cfg["procs"]):
        heap = prog.layout.get("heap")
        more = (("heap+", heap.end, extra, heap.prot),) if extra else ()
        try:
            k.spawn(prog, populate, extra=more)
        except MemoryError as e:
            raise RunError(f"{e} (mem_mb too small for pages = {cfg['pages']})") from None
    return cfg, m, k


def run(config: dict, seed: int = 0) -> dict:
    """Run one configuration; the result dict of docs/result-schema.md (schema 1)."""
    return execute(config, seed)[0]


def execute(config: dict, seed: int = 0):
    """run() that also returns the machine and kernel, for tests, dumps and traces."""
    t0 = time.perf_counter()
    cfg, m, k = build(config, seed)
    reason = ""
    try:
        k.run()
    except RunEnded as e:
        reason = str(e)
    return result(cfg, seed, m, k, reason, time.perf_counter() - t0), m, k


def result(cfg, seed, m, k, reason: str, seconds: float) -> dict:
    procs = k.workload
    lat = [pr.ps_zombie_cycle - pr.ps_exit_cycle for pr in procs
           if pr.ps_zombie_cycle is not None and pr.ps_exit_cycle is not None]
    window = Counter()
    if "start" in k.window:
        start = k.window["start"][0]
        end = k.window["end"][0] if "end" in k.window else counters(m)
        window = end - start
    checker = getattr(m, "checker", None)
    violations = []
    for v in getattr(checker, "violations", []) if checker is not None else []:
        violations.append(v if isinstance(v, dict) else v.to_dict() if hasattr(v, "to_dict") else
                          {f: getattr(v, f, None) for f in ("kind", "cpu", "cycle", "va", "asid", "pa", "detail")})
    config = {key: cfg[key] for key in ("workload", "strategy", "cpus", "threads", "procs", "pages",
                                        "core", "speculate")}
    config["seed"] = seed
    if cfg.get("guest"):
        config["guest"] = str(cfg["guest"])
    return {
        "schema": SCHEMA,
        "config": config,
        "cycles": {
            "total": max(c.cycles for c in m.cpus),
            "exit_latency": round(sum(lat) / len(lat)) if lat else 0,
            "teardown": k.teardown_cycles,
            "process_sys": sum(pr.ps_tally.sys for pr in procs),
            "process_user": sum(pr.ps_tally.user for pr in procs),
            "reaper": k.reaper.p_tally.sys,
            # storm's throughput: processes reaped per million cycles of makespan
            "exits_per_mcycle": round(len(lat) / (max(c.cycles for c in m.cpus) / 1e6), 3) if lat else 0.0,
        },
        "events": events_section(counters(m)),
        "exit_events": events_section(window),
        "violations": violations,
        "stats": collect_stats(m),
        "host": {"seconds": round(seconds, 3), "guest_instructions": k.insns, "fast_paths": m.fast},
        "outcome": {"completed": not reason, "reason": reason, "context_switches": k.switches,
                    "kernel_steps": k.steps},
        "processes": [{"pid": pr.ps_pid, "status": pr.ps_xexit, "signal": pr.ps_xsig,
                       "killed": pr.ps_kill_reason, "zombie": bool(pr.ps_flags & PsFlag.PS_ZOMBIE),
                       "output": b"".join(pr.ps_output).decode("utf-8", "replace"),
                       "cycles": {"user": pr.ps_tally.user, "sys": pr.ps_tally.sys,
                                  "exit_latency": (pr.ps_zombie_cycle - pr.ps_exit_cycle
                                                   if pr.ps_zombie_cycle is not None
                                                   and pr.ps_exit_cycle is not None else None)},
                       "threads": [{"tid": t.p_tid, "main": t.is_main, "user": t.p_tally.user,
                                    "sys": t.p_tally.sys, "instructions": t.p_insns, "faults": t.p_faults}
                                   for t in pr.ps_allthreads]} for pr in procs],
    }
