"""Exit path at scale: `touch` with 262,144 populated pages (1 GiB) on 4 CPUs, whole run
(build the address space, run the guest, exit, reap) per strategy, host seconds and
peak RSS, each strategy in a fresh child process so its peak RSS is its own.

The guest stores to --touch of the pages (default 4096): every populated page is mapped
and torn down, but only touched pages dirty host memory (a store to all 262,144 would
make the emulated RAM alone 1 GiB of resident host memory).

Goals (issue 9): <= 5 s for purge and reaper, <= 15 s for purge-naive and legacy-reaper,
peak RSS <= 1 GiB.

    python benchmarks/bench_exit_scale.py [--pages N] [--touch K] [--cpus C] [--repeat R] [--json]

The machine this runs on is shared: --repeat R keeps the fastest of R runs (timeit's rule);
"CPU s" is the child's process time, which other load on the machine inflates less.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GOALS = {"purge": 5.0, "reaper": 5.0, "purge-naive": 15.0, "legacy-reaper": 15.0}


def one(strategy: str, pages: int, touch: int, cpus: int, q) -> None:
    from emu.run import build, result
    from pmap_py.kern import RunEnded
    t0 = time.perf_counter()
    c0 = time.process_time()
    cfg, m, k = build({"workload": "touch", "strategy": strategy, "pages": pages, "touch": touch,
                       "cpus": cpus}, 0)
    t1 = time.perf_counter()
    reason = ""
    try:
        k.run()
    except RunEnded as e:
        reason = str(e)
    t2 = time.perf_counter()
    cpu_seconds = time.process_time() - c0
    r = result(cfg, 0, m, k, reason, t2 - t0)
    q.put({"strategy": strategy, "seconds": round(t2 - t0, 2), "cpu_seconds": round(cpu_seconds, 2),
           "build_seconds": round(t1 - t0, 2),
           "run_seconds": round(t2 - t1, 2),
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
           "completed": r["outcome"]["completed"], "exit_tlbi": r["exit_events"]["tlbi"],
           "ptes_cleared": r["exit_events"]["ptes_cleared"], "teardown_cycles": r["cycles"]["teardown"],
           "goal_seconds": GOALS.get(strategy)})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=262_144)
    ap.add_argument("--touch", type=int, default=4096)
    ap.add_argument("--cpus", type=int, default=4)
    ap.add_argument("--strategies", default=",".join(GOALS))
    ap.add_argument("--repeat", type=int, default=1, help="runs per strategy; the fastest is reported")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for s in args.strategies.split(","):
        best = None
        for _ in range(max(1, args.repeat)):
            q = ctx.Queue()
            p = ctx.Process(target=one, args=(s, args.pages, args.touch, args.cpus, q))
            p.start()
            row = q.get()
            p.join()
            if best is None or row["seconds"] < best["seconds"]:
                best = row
        rows.append(best)
    for r in rows:
        goal = r["goal_seconds"]
        r["meets_goal"] = bool(goal is None or r["seconds"] <= goal) and r["peak_rss_mib"] <= 1024
    if args.json:
        print(json.dumps({"pages": args.pages, "touch": args.touch, "cpus": args.cpus, "rows": rows}, indent=2))
        return 0
    print(f"touch, {args.pages} populated pages ({args.pages * 4096 >> 20} MiB), {args.touch} touched, "
          f"{args.cpus} CPUs")
    print(f"{'strategy':<14} {'total s':>8} {'CPU s':>6} {'build s':>8} {'run s':>7} {'RSS MiB':>8} {'goal s':>7}"
          "  exit TLBIs")
    for r in rows:
        print(f"{r['strategy']:<14} {r['seconds']:>8} {r['cpu_seconds']:>6} {r['build_seconds']:>8} {r['run_seconds']:>7} "
              f"{r['peak_rss_mib']:>8} {r['goal_seconds'] or '-':>7}  {r['exit_tlbi']}"
              + ("" if r["meets_goal"] else "  MISSES GOAL"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
