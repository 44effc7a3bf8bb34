"""`armmu sweep`: a grid of pages / threads / cpus / procs / cores x strategies x seeds.

Every point is one run (a pure function of its configuration and seed) on the executor.
Results go to OUT/sweep.json (the finished points, rewritten atomically at most once a
second while running and once more on any exit, so an interrupted sweep keeps them), OUT/sweep.csv and one PNG per measure
and varying axis. Re-running with the same OUT skips the points already there (keyed
by configuration and seed).
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import sys
import time
from pathlib import Path

from ..run import DEFAULTS, LIMITS, SPECULATE
from ..run.executor import make_executor
from .common import BadInput, add_executor_args, add_kernel_args, kernel_config, load_strategy_file, parse_int
from .compare import parse_strategies
from .files import check_writable, save_figure, write_json, write_text
from .session import checked

AXES = ("pages", "threads", "cpus", "procs", "core")
# the kernel options (common.add_kernel_args): the same for every point, part of its key when set
KERNEL_KEYS = ("asid_bits", "quantum", "jobs", "unlocked_exit", "irq_prob")
MEASURES = (("teardown", "teardown cycles"), ("exit_latency", "exit latency (cycles)"),
            ("process_sys", "process sys cycles"), ("reaper", "reaper cycles"))
MAX_POINTS = 100_000
SAVE_EVERY = 1.0                       # seconds between saves of sweep.json while running
COLUMNS = ("workload", "strategy", "pages", "threads", "cpus", "procs", "core", "speculate", "seed",
           "total", "exit_latency", "teardown", "process_sys", "process_user", "reaper",
           "VAE1IS", "ASIDE1IS", "VAALE1IS", "VMALLE1IS", "dsb", "isb", "ttbr_writes", "context_switches",
           "walks", "violations", "violation_kinds", "completed", "reason", "host_seconds", *KERNEL_KEYS)


def parse_values(text: str, what: str) -> list[int]:
    """'64,256,1024' or a geometric range 'LO..HI*F' ('1..262144*4': powers of 4)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if ".." in part:
            lo_s, _, rest = part.partition("..")
            hi_s, star, f_s = rest.partition("*")
            lo, hi = parse_int(lo_s, what), parse_int(hi_s, what)
            f = parse_int(f_s, what) if star else 2
            if lo < 1 or hi < lo or f < 2:
                raise BadInput(f"{what} {part}: want LO..HI*F with 1 <= LO <= HI and F >= 2")
            v = lo
            while v <= hi:
                out.append(v)
                v *= f
        elif part:
            out.append(parse_int(part, what))
    if not out:
        raise BadInput(f"{what}: no values")
    key = what.lstrip("-")
    lo, hi = LIMITS[key]
    for v in out:
        if not lo <= v <= hi:
            raise BadInput(f"{what} {v}: must be from {lo} to {hi}")
    return sorted(set(out))


def point_key(cfg: dict, seed: int) -> str:
    kernel = {k: cfg[k] for k in KERNEL_KEYS if cfg.get(k) is not None}
    return json.dumps({**{k: cfg[k] for k in ("workload", "strategy", *AXES, "speculate")}, **kernel, "seed": seed},
                      sort_keys=True)


def sweep_task(config: dict, seed: int, check: bool = True) -> dict:
    """One point: its row (the CSV columns)."""
    if check:
        from ..run.check import install
        install()
    from ..run import run
    r = run(config, seed)
    c, ev = r["cycles"], r["exit_events"]
    row = {k: r["config"][k] for k in ("workload", "strategy", "pages", "threads", "cpus", "procs", "core",
                                        "speculate")}
    row.update(seed=seed, **{k: c[k] for k in ("total", "exit_latency", "teardown", "process_sys",
                                               "process_user", "reaper")})
    row.update({op: ev["tlbi"].get(op, 0) for op in ("VAE1IS", "ASIDE1IS", "VAALE1IS", "VMALLE1IS")})
    row.update({k: ev[k] for k in ("dsb", "isb", "ttbr_writes", "context_switches", "walks")})
    row.update(violations=len(r["violations"]),
               violation_kinds=" ".join(sorted({v["kind"] for v in r["violations"]})),
               completed=r["outcome"]["completed"], reason=r["outcome"]["reason"],
               host_seconds=r["host"]["seconds"])
    row.update({k: config[k] for k in KERNEL_KEYS if config.get(k) is not None})
    return row


def load_done(path: Path) -> dict:
    """The points of an earlier sweep into the same directory (key -> row)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {point_key(row, row["seed"]): row for row in data["points"]}
    except (ValueError, KeyError, TypeError) as e:
        raise BadInput(f"{path}: not a sweep result file ({e}); remove it or choose another --out") from None


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: row.get(k, "") for k in COLUMNS})
    return buf.getvalue()


def plots(rows: list[dict], grid: dict, out: Path) -> list[Path]:
    """For each axis with several values and each measure: mean over seeds (and the other
    axes' values) against the axis, one line per strategy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    made = []
    for axis in [a for a in AXES if len(grid[a]) > 1]:
        for key, label in MEASURES:
            fig, ax = plt.subplots(figsize=(6.5, 4.2))
            for strat in grid["strategy"]:
                xs, ys = [], []
                for x in grid[axis]:
                    vals = [r[key] for r in rows if r["strategy"] == strat and r[axis] == x and r["completed"]]
                    if vals:
                        xs.append(x)
                        ys.append(sum(vals) / len(vals))
                if xs:
                    ax.plot(xs if axis != "core" else [str(x) for x in xs], ys, marker="o", label=strat)
            numeric = axis != "core"
            if numeric and max(grid[axis]) / max(1, min(grid[axis])) >= 16:
                ax.set_xscale("log", base=2)
            if any(r[key] > 0 for r in rows):
                ax.set_yscale("log")
            ax.set_xlabel(axis)
            ax.set_ylabel(label)
            ax.set_title(f"{label} vs {axis} ({rows[0]['workload'] if rows else ''})")
            ax.legend(fontsize=8)
            path = out / f"{key}_vs_{axis}.png"
            save_figure(fig, path)
            plt.close(fig)
            made.append(path)
    return made


def cmd_sweep(args) -> int:
    load_strategy_file(args.strategy_file)
    grid = {"strategy": parse_strategies(args.strategies),
            "pages": parse_values(args.pages, "--pages"), "threads": parse_values(args.threads, "--threads"),
            "cpus": parse_values(args.cpus, "--cpus"), "procs": parse_values(args.procs, "--procs"),
            "core": [c.strip() for c in args.cores.split(",") if c.strip()]}
    if not grid["core"]:
        raise BadInput("--cores: no core named")
    if args.seeds < 1:
        raise BadInput(f"--seeds {args.seeds}: must be 1 or more")
    seeds = range(args.seed, args.seed + args.seeds)
    points = []
    for strat, pages, threads, cpus, procs, core in itertools.product(
            grid["strategy"], grid["pages"], grid["threads"], grid["cpus"], grid["procs"], grid["core"]):
        cfg = {"workload": args.workload, "strategy": strat, "pages": pages, "threads": threads, "cpus": cpus,
               "procs": procs, "core": core, "speculate": args.speculate, "strategy_file": args.strategy_file,
               **kernel_config(args)}
        points.append({k: v for k, v in cfg.items() if v is not None})
    if len(points) * len(seeds) > MAX_POINTS:
        raise BadInput(f"the grid has {len(points) * len(seeds):,} points (limit {MAX_POINTS:,}): narrow it")
    for core in grid["core"]:                     # every bad value fails here, before any run
        checked({**points[0], "core": core})
    ex = make_executor(args.executor, args.jobs, args.scheduler)     # an unreachable scheduler: exit 2 here
    try:
        return _sweep(args, grid, seeds, points, ex)
    finally:
        ex.close()


def _sweep(args, grid, seeds, points, ex) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"--out {out}: cannot create: {e.strerror or e}") from None
    check_writable(out / "sweep.json", "--out")
    results_path = out / "sweep.json"
    done = load_done(results_path)
    todo, rows, queued = [], {}, set()
    for cfg in points:
        full = checked(cfg)[0]
        for s in seeds:
            key = point_key(full, s)
            if key in done:
                rows[key] = done[key]
            elif key not in queued:              # touch/sparse: every threads value is one point
                queued.add(key)
                todo.append((key, cfg, s))
    meta = {"schema": 1, "command": "sweep", "workload": args.workload, "speculate": args.speculate,
            "kernel": {k: v for k, v in kernel_config(args).items() if v is not None},
            "grid": grid, "seeds": [seeds.start, seeds.stop - 1]}

    def save():
        ordered = sorted(rows.values(), key=lambda r: [str(r[k]) if k == "core" else r[k] for k in
                                                      ("strategy", "pages", "threads", "cpus", "procs", "core",
                                                       "seed")])
        write_json(results_path, {**meta, "points": ordered})
        return ordered

    print(f"sweep: {len(points) * len(seeds)} points, {len(rows)} already in {results_path}, "
          f"{len(todo)} to run", file=sys.stderr)
    if todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc="sweep", unit="run", file=sys.stderr,
                   disable=None if not args.progress else False)
        saved = time.monotonic()
        try:
            tasks = [(cfg, s, not args.no_check) for _, cfg, s in todo]
            for i, row in ex.as_completed(sweep_task, tasks):
                rows[todo[i][0]] = row
                bar.update(1)
                if time.monotonic() - saved >= SAVE_EVERY:
                    save()
                    saved = time.monotonic()
        finally:
            bar.close()
            save()                              # interrupted or not: every finished point is kept
    ordered = save()
    write_text(out / "sweep.csv", to_csv(ordered))
    made = plots(ordered, grid, out)
    bad = [r for r in ordered if not r["completed"] or r["violations"]]
    print(f"wrote {results_path}, {out / 'sweep.csv'}" + (f" and {len(made)} plots" if made else ""))
    for r in bad[:10]:
        why = r["reason"] if not r["completed"] else f"{r['violations']} violation(s): {r['violation_kinds']}"
        print(f"  {r['strategy']} pages={r['pages']} threads={r['threads']} cpus={r['cpus']} procs={r['procs']} "
              f"core={r['core']} seed={r['seed']}: {why}")
    return 1 if bad else 0


def add_parser(sub) -> None:
    s = sub.add_parser(
        "sweep", help="grids of pages/threads/cpus/procs/cores x strategies -> CSV, JSON, PNG",
        description="Run every point of a grid (each axis a comma list or a geometric range LO..HI*F) for "
                    "each strategy and seed; write OUT/sweep.json, OUT/sweep.csv and a PNG per measure and "
                    "varying axis. Re-running into the same OUT skips finished points. Exit code 0 when "
                    "every point completed with no violation, 1 otherwise, 2 for bad input. "
                    "Example: armmu sweep --pages 1..4096*4 --threads 1,4 --strategies reaper,purge --out sw")
    s.add_argument("--workload", default=DEFAULTS["workload"], metavar="W",
                   help="bundled workload (default threads), e.g. --workload storm")
    s.add_argument("--strategies", metavar="S1,S2",
                   help="comma-separated strategies or 'all' (default: every OpenBSD one)")
    s.add_argument("--strategy-file", metavar="FILE.py", help="a Python file registering your own strategies")
    s.add_argument("--pages", default="64", metavar="LIST", help="e.g. --pages 64,1024 or --pages 1..262144*4")
    s.add_argument("--threads", default=str(DEFAULTS["threads"]), metavar="LIST", help="e.g. --threads 1,4,16")
    s.add_argument("--cpus", default=str(DEFAULTS["cpus"]), metavar="LIST", help="e.g. --cpus 1..8*2")
    s.add_argument("--procs", default=str(DEFAULTS["procs"]), metavar="LIST", help="e.g. --procs 1,4 (storm)")
    s.add_argument("--cores", default=DEFAULTS["core"], metavar="LIST",
                   help="core presets or TOML files, e.g. --cores cortex-a72,neoverse-n1")
    s.add_argument("--seeds", type=int, default=1, metavar="N", help="seeds per point (default 1)")
    s.add_argument("--seed", type=int, default=0, metavar="K", help="first seed (default 0)")
    s.add_argument("--speculate", choices=SPECULATE, default=DEFAULTS["speculate"],
                   help="speculative TLB fills (default off)")
    add_kernel_args(s)
    s.add_argument("--no-check", action="store_true", help="run without the hazard checker (faster)")
    s.add_argument("--out", default="sweep-out", metavar="DIR", help="output directory (default sweep-out)")
    add_executor_args(s, "runs at once (default: every core)")
    s.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    s.set_defaults(func=cmd_sweep)
