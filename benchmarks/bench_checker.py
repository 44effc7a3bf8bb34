"""The hazard checker's cost, and `armmu check`'s speed.

1. Overhead: the `touch` guest storing to and reading back N pages (default 4096: every
   access a TLB miss served by a walk, 2N walks) on pmap_py tables, with and without the
   checker attached, runs interleaved, best of --repeat (process time, which other load on
   this shared machine inflates less); then the N + 2 frame frees of the teardown.
2. Exploration: seeds per minute of `armmu check` on `threads` with 64 pages and 4
   threads (strategy purge, default speculation, the local pool with --jobs workers).

Goals (issue 10): `armmu check` >= 1000 seeds per minute on 2 cores.

    python benchmarks/bench_checker.py [--pages N] [--repeat R] [--seeds S] [--jobs J] [--json]
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GOAL_SEEDS_PER_MINUTE = 1000


def touch_run(pages: int, with_checker: bool) -> tuple[float, float, int]:
    """(guest run seconds, teardown frees seconds, walks) of one touch run."""
    from emu.checker import Checker
    from emu.cpu import StopKind
    from emu.machine import Machine
    from emu.run.scenario import map_program
    from guest.programs import load
    from pmap_py import pmap_bootstrap

    m = Machine(ncpus=2, mem_size=max(64 << 20, (pages + 512) * 4096 * 2), core="cortex-a72", seed=1)
    checker = Checker(m) if with_checker else None
    ps = pmap_bootstrap(m)
    cpu = m.cpus[0]
    prog = load("touch", {"NPAGES": pages})
    pm = ps.pmap_create(cpu)
    frames = map_program(m, ps, cpu, pm, prog)
    ps.pmap_activate(cpu, pm)
    ps.pmap_userret(cpu)
    gc.collect()
    gc.disable()
    try:
        t0 = time.process_time()
        stop = cpu.run(100 * pages + 10_000, pc=prog.entry)
        run = time.process_time() - t0
        if stop.kind is not StopKind.SVC or cpu.reg(0) != 0:
            raise RuntimeError(f"touch did not exit cleanly: {stop}")
        ps.pmap_kernel_entry(cpu)
        ps.pmap_purge(cpu, pm)
        for region in prog.layout.values():
            ps.pmap_remove(cpu, pm, region.start, region.start + region.size)
        t1 = time.process_time()
        for pa in frames:
            m.frames.free(pa)
        frees = time.process_time() - t1
    finally:
        gc.enable()
    if checker is not None and checker.violations:
        raise RuntimeError(f"the safe purge order was flagged: {checker.violations[0]}")
    return run, frees, cpu.walks


def seed_cost(cfg: dict, seeds: int) -> dict:
    """Process-time split of one checked seed (mean over `seeds`): building the machine,
    kernel and checker, running the kernel, building the result dict."""
    from emu.machine import Machine
    from emu.run import RunEnded, build, result
    from emu.run.check import install, seed_config
    install()
    acc = {"build": 0.0, "machine": 0.0, "run": 0.0, "result": 0.0}
    init = Machine.__init__

    def timed_init(self, *a, **kw):
        t = time.process_time()
        init(self, *a, **kw)
        acc["machine"] += time.process_time() - t
    Machine.__init__ = timed_init
    try:
        for seed in range(seeds):
            c = seed_config(cfg, seed)
            t0 = time.process_time()
            c, m, k = build(c, seed)
            t1 = time.process_time()
            try:
                k.run()
            except RunEnded:
                pass
            t2 = time.process_time()
            result(c, seed, m, k, "", 0.0)
            t3 = time.process_time()
            acc["build"] += t1 - t0
            acc["run"] += t2 - t1
            acc["result"] += t3 - t2
    finally:
        Machine.__init__ = init
    out = {k: round(v / seeds * 1e3, 1) for k, v in acc.items()}
    out["total"] = round(out["build"] + out["run"] + out["result"], 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=4096, help="pages the touch guest stores to (default 4096)")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved runs of each kind (default 5)")
    ap.add_argument("--seeds", type=int, default=200, help="seeds for the check speed (default 200)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes for the check speed (default 2)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args(argv)

    runs = {False: [], True: []}
    for _ in range(args.repeat):
        for with_checker in (False, True):
            runs[with_checker].append(touch_run(args.pages, with_checker))
    walks = runs[False][0][2]
    base, chk = min(r[0] for r in runs[False]), min(r[0] for r in runs[True])
    fbase, fchk = min(r[1] for r in runs[False]), min(r[1] for r in runs[True])

    from emu.run.check import explore
    cfg = {"workload": "threads", "strategy": "purge", "pages": 64, "threads": 4, "speculate": "default"}
    split = seed_cost(cfg, 20)
    t0 = time.perf_counter()
    ex = explore(cfg, args.seeds, jobs=args.jobs)
    seconds = time.perf_counter() - t0
    rate = ex.seeds_run / seconds * 60

    out = {"pages": args.pages, "walks": walks,
           "guest_run_s": {"without": round(base, 4), "with": round(chk, 4), "ratio": round(chk / base, 3),
                           "us_per_walk": round((chk - base) / walks * 1e6, 2)},
           "frees_s": {"frames": args.pages + 2, "without": round(fbase, 4), "with": round(fchk, 4)},
           "check": {"seeds": ex.seeds_run, "jobs": args.jobs, "seconds": round(seconds, 2),
                     "seeds_per_minute": round(rate), "goal": GOAL_SEEDS_PER_MINUTE,
                     "violations": ex.first is not None},
           "per_seed_cpu_ms": split}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"touch, {args.pages} pages ({walks} walks), best of {args.repeat}: guest run {base * 1e3:.1f} ms "
              f"without the checker, {chk * 1e3:.1f} ms with: ratio {chk / base:.3f}, "
              f"+{(chk - base) / walks * 1e6:.2f} us per walk")
        print(f"teardown: {args.pages + 2} frame frees {fbase * 1e3:.1f} ms without, {fchk * 1e3:.1f} ms with")
        print(f"armmu check threads/64 pages/4 threads/purge: {ex.seeds_run} seeds in {seconds:.1f} s on "
              f"{args.jobs} workers = {rate:.0f} seeds/min (goal >= {GOAL_SEEDS_PER_MINUTE})")
        print(f"one seed in one process: {split['total']} ms CPU = build {split['build']} ms (of which the "
              f"Machine and its Unicorn CPUs {split['machine']} ms) + run {split['run']} ms + result "
              f"{split['result']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
