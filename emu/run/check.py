"""Schedule exploration: one configuration under many seeds, with the hazard checker on.

A seed changes everything the architecture and the scheduler leave open: the
interleaving of the CPUs (the scheduler's choices), the speculative walks (where, when)
and the length of each guest quantum (``quantum_jitter``: each seed draws the quantum
from [quantum / 2, quantum * 3 / 2]). Each task is a pure function of (configuration,
seed): ``check_seed`` builds a fresh machine, kernel and checker, runs until the first
violation (nothing later can undo it) or the end, and returns the violations. ``explore`` runs the seeds on a local process pool (every core by default)
in batches, in seed order, and stops at the first seed with a violation; that seed is
run once more with a trace to give the excerpt around the violation.

``install()`` makes every ``emu.run.run`` create the checker (the ``violations`` of the
result dict are then the checker's, each with the extra keys of Violation.to_dict).
"""
from __future__ import annotations

import inspect
import random
import sys
from dataclasses import dataclass, field

from emu.checker import Checker
from emu.trace import Ev, Trace

from pmap_py.kern import KernConfig

from . import RunEnded, build, normalize, result
from .executor import make_executor

DEFAULT_QUANTUM = KernConfig.quantum   # guest instructions per cpu.run call
BATCH = 16                             # seeds per pool task


def kernel_step(p, running: bool) -> str:
    """The kernel code a proc is in, outermost first ("syscall > exit1 > uvm_purge"): the
    chain of its suspended generators, or, for the proc whose step runs now, the
    generator frames on the interpreter stack (a running generator has no chain yet)."""
    names = []
    if running:
        f = sys._getframe(1)
        while f is not None and f.f_code.co_name != "_kernel_step":
            if f.f_code.co_flags & inspect.CO_GENERATOR:
                names.append(f.f_code.co_name)
            f = f.f_back
        if f is not None:
            return " > ".join(reversed(names))
        names = []
    g = p.p_kstack
    while g is not None and hasattr(g, "gi_code"):
        names.append(g.gi_code.co_name)
        g = g.gi_yieldfrom
    return " > ".join(names)


def context_of(kernel):
    """context_fn for the checker: which thread runs on a CPU, in userland or in which
    kernel step."""
    def context(ci: int) -> str | None:
        info = kernel.cpus[ci]
        p = info.ci_curproc
        if p is None or p is info.ci_idleproc:
            return "idle"
        if p.p_kstack is None:
            return f"{p} in userland"
        step = kernel_step(p, kernel.stepping == ci)
        return f"{p} in the kernel" + (f": {step}" if step else "")
    return context


def reproducer(cfg: dict, seed: int) -> str:
    """The `armmu run` command line that repeats this run."""
    parts = ["armmu run"]
    for key in ("workload", "strategy", "strategy_file", "pages", "threads", "cpus", "procs", "core",
                "asid_bits", "speculate", "jobs", "irq_prob"):
        if cfg.get(key) is not None:
            parts.append(f"--{key.replace('_', '-')} {cfg[key]}")
    if cfg.get("unlocked_exit"):
        parts.append("--unlocked-exit")
    if cfg.get("quantum"):
        parts.append(f"--quantum {cfg['quantum']}")
    parts.append(f"--seed {seed}")
    return " ".join(parts)


def _factory(machine, kernel):
    return Checker(machine, context_fn=context_of(kernel), actor_fn=lambda: kernel.stepping)


def install() -> None:
    """Every emu.run.run / build from now on creates the checker."""
    from . import set_checker_factory
    set_checker_factory(_factory)


def seed_config(config: dict, seed: int, quantum_jitter: bool = True) -> dict:
    """The configuration of one seed: the quantum drawn from the seed when jittered."""
    cfg = normalize(config)
    if quantum_jitter:
        base = int(cfg.get("quantum") or DEFAULT_QUANTUM)
        cfg["quantum"] = random.Random(f"quantum/{seed}").randrange(max(1, base // 2), base + base // 2 + 1)
    return cfg


class FirstViolation(RunEnded):
    """Ends a checked run at its first violation (the rest of the run cannot undo it)."""


def _stop(v) -> None:
    raise FirstViolation(f"stopped at the first violation ({v.kind.value} on cpu{v.cpu} at cycle {v.cycle})")


def _run(cfg: dict, seed: int, trace: Trace | None = None):
    """(result dict, stopped at a violation?) of one checked run, ended at its first violation."""
    import time
    install()
    cfg = dict(cfg)
    if trace is not None:
        cfg["trace"] = trace
    t0 = time.perf_counter()
    cfg, m, k = build(cfg, seed)
    m.checker.reproducer = reproducer(cfg, seed)
    m.checker.on_violation = _stop
    reason = ""
    stopped = False
    try:
        k.run()
    except FirstViolation as e:
        reason, stopped = str(e), True
    except RunEnded as e:
        reason = str(e)
    return result(cfg, seed, m, k, reason, time.perf_counter() - t0), stopped


def check_seed(config: dict, seed: int, quantum_jitter: bool = True) -> dict:
    """One task: {seed, violations (dicts), completed, reason, quantum}; `completed` is
    False only when a budget ended the run before it finished (not the first violation)."""
    cfg = seed_config(config, seed, quantum_jitter)
    r, stopped = _run(cfg, seed)
    return {"seed": seed, "violations": r["violations"], "completed": stopped or r["outcome"]["completed"],
            "reason": r["outcome"]["reason"], "quantum": cfg["quantum"]}


def _batch(config: dict, seeds: list[int], quantum_jitter: bool) -> list[dict]:
    out = []
    for s in seeds:
        r = check_seed(config, s, quantum_jitter)
        out.append(r)
        if r["violations"]:
            break                          # later seeds of this batch cannot be the first
    return out


def trace_excerpt(config: dict, seed: int, violation: dict, quantum_jitter: bool = True,
                  before: int = 25, after: int = 5) -> tuple[str, dict | None]:
    """The seed run again with a trace: the events around where the violation was seen,
    and the violation as the traced run reports it (its story can then name the last
    TLBI that covered the entry and when it came)."""
    cfg = seed_config(config, seed, quantum_jitter)
    trace = Trace()
    r, _ = _run(cfg, seed, trace)
    again = next((v for v in r["violations"] if (v["kind"], v["cpu"], v["va"]) ==
                  (violation["kind"], violation["cpu"], violation["va"])), None)
    if again is None or again.get("trace_index") is None:
        return "(the violation did not recur in the traced run)", None
    i = again["trace_index"]
    ci = again["cpu"]
    # the CPU concerned, and what the kernel did on the others
    near = [rec for rec in trace.records if rec[1] == ci or rec[2] is Ev.KERNEL]
    j = sum(1 for rec in trace.records[:i] if rec[1] == ci or rec[2] is Ev.KERNEL)
    part = Trace()
    part.records = near[max(0, j - before):j + after]
    return part.format_text(), again


@dataclass
class Exploration:
    seeds_run: int = 0
    incomplete: list = field(default_factory=list)      # [(seed, reason)] runs a budget ended
    first: dict | None = None                           # the first seed's task result with a violation
    excerpt: str = ""


def explore(config: dict, seeds: int, jobs: int | None = None, first_seed: int = 0,
            quantum_jitter: bool = True, progress=None, executor: str = "local",
            scheduler: str | None = None) -> Exploration:
    """Run seeds first_seed .. first_seed + seeds - 1 (in batches of BATCH seeds, on every
    core by default); stop at the first seed with a violation."""
    normalize(config)                                   # bad input fails here, before any worker
    order = list(range(first_seed, first_seed + seeds))
    batches = [(config, order[i:i + BATCH], quantum_jitter) for i in range(0, len(order), BATCH)]
    ex = Exploration()
    pool = make_executor(executor, jobs, scheduler)
    try:
        for batch in pool.imap(_batch, batches):        # in seed order, whatever finishes first
            for r in batch:
                ex.seeds_run += 1
                if not r["completed"]:
                    ex.incomplete.append((r["seed"], r["reason"]))
                if r["violations"]:
                    ex.first = r
                    break
            if progress is not None:
                progress(ex.seeds_run, seeds)
            if ex.first is not None:
                break
    finally:
        pool.close()
    if ex.first is not None:
        ex.excerpt, again = trace_excerpt(config, ex.first["seed"], ex.first["violations"][0], quantum_jitter)
        if again is not None:
            ex.first["violations"][0] = again
    return ex


__all__ = ["Exploration", "FirstViolation", "check_seed", "explore", "install", "reproducer", "trace_excerpt"]
