"""Who pays for the teardown: exit-path cycles per strategy on the default preset (cortex-a72).

Three figures, each point one run (seed 0, a pure function of its configuration) on the
local process pool of emu/run/executor.py:

  pages    `touch` (one thread, N populated pages, stores to min(N, 4096) of them) on 4 CPUs,
           N = 1, 4, 16, ..., 262,144: teardown cycles and exit latency against N;
  threads  `threads` (64 pages shared out) on 4 CPUs, T = 1, 4, 16: the same against T;
  storm    `storm` (16 processes of 2 threads, 64 pages each) exiting at once, C = 1, 2, 4, 8
           CPUs: exits per million cycles against C.

Strategies: OpenBSD's safe ones (legacy-reaper, reaper, purge-naive, purge) and the linux and
freebsd models. Writes OUT/bench_exit.csv, OUT/bench_exit.json and one PNG per figure
(OUT/pages.png, OUT/threads.png, OUT/storm.png); prints the headline table (or --json).

    python benchmarks/bench_exit.py [--quick] [--jobs J] [--out DIR] [--json]

--quick stops the pages figure at 4096 and runs storm with 8 processes (about 15 s on 2 cores).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STRATEGIES = ("legacy-reaper", "reaper", "purge-naive", "purge", "linux", "freebsd")
PAGES = tuple(4 ** i for i in range(10))            # 1 .. 262,144
THREADS = (1, 4, 16)
CPUS = (1, 2, 4, 8)
TOUCH_MAX = 4096                                    # pages stored to (the rest only mapped)
COLUMNS = ("figure", "strategy", "workload", "pages", "threads", "cpus", "procs", "total", "teardown",
           "exit_latency", "process_sys", "process_user", "reaper", "exits_per_mcycle", "VAE1IS",
           "ASIDE1IS", "VAALE1IS", "VMALLE1IS", "dsb", "completed", "host_seconds")


def point(figure: str, cfg: dict) -> dict:
    """One run: the figures' measures of its result."""
    from emu.run import run
    t0 = time.perf_counter()
    r = run(cfg, 0)
    c, e = r["cycles"], r["exit_events"]
    row = {"figure": figure, "strategy": cfg["strategy"], "workload": cfg["workload"],
           "pages": r["config"]["pages"], "threads": r["config"]["threads"], "cpus": r["config"]["cpus"],
           "procs": r["config"]["procs"]}
    for key in ("total", "teardown", "exit_latency", "process_sys", "process_user", "reaper", "exits_per_mcycle"):
        row[key] = c[key]
    for op in ("VAE1IS", "ASIDE1IS", "VAALE1IS", "VMALLE1IS"):
        row[op] = e["tlbi"].get(op, 0)
    row["dsb"] = e["dsb"]
    row["completed"] = r["outcome"]["completed"]
    row["host_seconds"] = round(time.perf_counter() - t0, 2)
    return row


def grid(quick: bool) -> list[tuple[str, dict]]:
    pages = [n for n in PAGES if not quick or n <= 4096]
    tasks = []
    for s in STRATEGIES:
        for n in reversed(pages):                    # the long ones first: the pool stays busy
            tasks.append(("pages", {"workload": "touch", "strategy": s, "pages": n, "touch": min(n, TOUCH_MAX),
                                    "cpus": 4}))
        for t in THREADS:
            tasks.append(("threads", {"workload": "threads", "strategy": s, "pages": 64, "threads": t, "cpus": 4}))
        for cpus in CPUS:
            tasks.append(("storm", {"workload": "storm", "strategy": s, "procs": 8 if quick else 16, "threads": 2,
                                    "pages": 64, "cpus": cpus}))
    return tasks


def figure(rows: list[dict], name: str, x: str, ys: list[tuple[str, str]], out: Path, logx: bool) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from emu.cli.files import save_figure
    fig, axes = plt.subplots(1, len(ys), figsize=(6 * len(ys), 4.2), squeeze=False)
    for ax, (y, label) in zip(axes[0], ys):
        for s in STRATEGIES:
            pts = sorted((r[x], r[y]) for r in rows if r["figure"] == name and r["strategy"] == s)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=s)
        if logx:
            ax.set_xscale("log", base=4 if x == "pages" else 2)
        if y != "exits_per_mcycle":
            ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"bench_exit: {name} (cortex-a72, seed 0)")
    save_figure(fig, out / f"{name}.png")
    plt.close(fig)


def pick(rows, figure_, strategy, **kw) -> dict:
    return next(r for r in rows if r["figure"] == figure_ and r["strategy"] == strategy
                and all(r[k] == v for k, v in kw.items()))


def headline(rows: list[dict], quick: bool) -> dict:
    """The numbers the README quotes."""
    top = 4096 if quick else PAGES[-1]
    naive, purge = pick(rows, "pages", "purge-naive", pages=top), pick(rows, "pages", "purge", pages=top)
    per_page = (naive["teardown"] - purge["teardown"]) / top
    out = {"pages": top, "tlbi_cycles_per_page": round(per_page, 1),
           "purge_naive_teardown": naive["teardown"], "purge_teardown": purge["teardown"],
           "purge_naive_VAE1IS": naive["VAE1IS"], "purge_VAE1IS": purge["VAE1IS"]}
    moved = {}
    for fig_, key in (("pages", {"pages": top}), ("threads", {"threads": 4}), ("storm", {"cpus": 4})):
        r, p = pick(rows, fig_, "reaper", **key), pick(rows, fig_, "purge", **key)
        sys_r, sys_p = r["process_sys"] + r["reaper"], p["process_sys"] + p["reaper"]
        moved[fig_] = {"exit_latency_reaper": r["exit_latency"], "exit_latency_purge": p["exit_latency"],
                       "exit_latency_change_pct": round(100 * (p["exit_latency"] - r["exit_latency"])
                                                        / r["exit_latency"], 1),
                       "process_sys_reaper": r["process_sys"], "process_sys_purge": p["process_sys"],
                       "reaper_reaper": r["reaper"], "reaper_purge": p["reaper"],
                       "sys_total_change_pct": round(100 * (sys_p - sys_r) / sys_r, 1),
                       "makespan_change_pct": round(100 * (p["total"] - r["total"]) / r["total"], 1)}
    out["reaper_vs_purge"] = moved
    out["storm_exits_per_mcycle"] = {s: {c: pick(rows, "storm", s, cpus=c)["exits_per_mcycle"] for c in CPUS}
                                     for s in STRATEGIES}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="pages up to 4096, storm with 8 processes")
    ap.add_argument("--jobs", type=int, help="worker processes (default: every core)")
    ap.add_argument("--out", default="bench_exit_out", help="directory for the CSV, JSON and PNGs")
    ap.add_argument("--json", action="store_true", help="print the rows and headline as JSON")
    args = ap.parse_args()
    from emu.run.executor import make_executor
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = grid(args.quick)
    t0 = time.perf_counter()
    pool = make_executor("local", args.jobs)
    try:
        rows = list(pool.imap(point, tasks))
    finally:
        pool.close()
    seconds = time.perf_counter() - t0
    bad = [r for r in rows if not r["completed"]]
    with open(out / "bench_exit.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    figure(rows, "pages", "pages", [("teardown", "teardown cycles"), ("exit_latency", "exit latency (cycles)")],
           out, True)
    figure(rows, "threads", "threads", [("teardown", "teardown cycles"), ("exit_latency", "exit latency (cycles)")],
           out, True)
    figure(rows, "storm", "cpus", [("exits_per_mcycle", "exits per million cycles")], out, True)
    head = headline(rows, args.quick)
    doc = {"quick": args.quick, "seconds": round(seconds, 1), "incomplete": len(bad), "headline": head, "rows": rows}
    (out / "bench_exit.json").write_text(json.dumps(doc, indent=2))
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0 if not bad else 1
    print(f"bench_exit: {len(rows)} runs in {seconds:.0f} s; CSV, JSON and PNGs in {out}/")
    print(f"\nteardown cycles, touch, 4 CPUs (pages)")
    pages = sorted({r["pages"] for r in rows if r["figure"] == "pages"})
    print(f"{'strategy':<14}" + "".join(f"{n:>12}" for n in pages))
    for s in STRATEGIES:
        print(f"{s:<14}" + "".join(f"{pick(rows, 'pages', s, pages=n)['teardown']:>12}" for n in pages))
    print(f"\nexit latency (cycles), threads with 64 pages, 4 CPUs (threads)")
    print(f"{'strategy':<14}" + "".join(f"{t:>12}" for t in THREADS))
    for s in STRATEGIES:
        print(f"{s:<14}" + "".join(f"{pick(rows, 'threads', s, threads=t)['exit_latency']:>12}" for t in THREADS))
    print(f"\nexits per million cycles, storm (CPUs)")
    print(f"{'strategy':<14}" + "".join(f"{c:>10}" for c in CPUS))
    for s in STRATEGIES:
        print(f"{s:<14}" + "".join(f"{head['storm_exits_per_mcycle'][s][c]:>10}" for c in CPUS))
    print(f"\nper-page TLBI cost at {head['pages']} pages: purge-naive - purge = "
          f"{head['tlbi_cycles_per_page']} cycles/page ({head['purge_naive_VAE1IS']} VAE1IS vs {head['purge_VAE1IS']})")
    for fig_, m in head["reaper_vs_purge"].items():
        print(f"reaper -> purge ({fig_}): exit latency {m['exit_latency_change_pct']:+}%, "
              f"sys (process + reaper) {m['sys_total_change_pct']:+}%, makespan {m['makespan_change_pct']:+}%, "
              f"process sys {m['process_sys_reaper']} -> {m['process_sys_purge']}, "
              f"reaper {m['reaper_reaper']} -> {m['reaper_purge']}")
    if bad:
        print(f"warning: {len(bad)} run(s) did not complete", file=sys.stderr)
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
