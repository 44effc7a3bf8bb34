"""`armmu compare`: one workload through several exit strategies, side by side.

Each strategy is one run (emu.run with the hazard checker on), on the executor's
process pool. The table has one row per measure and one column per strategy, the best
(lowest) value of each row marked with `*`; under it a paragraph reading the numbers.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..run import DEFAULTS, SPECULATE, RunError
from ..run.executor import make_executor
from .common import BadInput, add_executor_args, add_kernel_args, guest_failure, kernel_config, load_strategy_file
from .files import check_writable, save_figure, write_json
from .session import checked

COMPARE_DEFAULTS = {"workload": "threads", "pages": 4096, "threads": 4, "cpus": 4, "procs": 1}
TLBI_ORDER = ("VAE1IS", "ASIDE1IS", "VAALE1IS", "VMALLE1IS")
CYCLE_ROWS = (("teardown cycles", "teardown"), ("exit latency", "exit_latency"),
              ("process sys cycles", "process_sys"), ("reaper cycles", "reaper"))


def compare_task(config: dict, seed: int, check: bool = True, trace: dict | None = None) -> dict:
    """One strategy's run (an executor task: a pure function of configuration and seed);
    trace: run_session's trace options, for --trace-dir."""
    if check:
        from ..run.check import install
        install()
    if trace:
        from .session import run_session
        return run_session(config, seed, **trace)[0]
    from ..run import run
    return run(config, seed)


TRACE_SUFFIX = {"text": "txt", "jsonl": "jsonl", "perfetto": "json"}


def rows_of(results: dict) -> list[tuple[str, dict]]:
    """[(row name, {strategy: value})] in the table's order."""
    rows = [(name, {s: r["cycles"][key] for s, r in results.items()}) for name, key in CYCLE_ROWS]
    ops = {op for r in results.values() for op in r["exit_events"]["tlbi"]}
    for op in [o for o in TLBI_ORDER if o in ops] + sorted(ops - set(TLBI_ORDER)):
        rows.append((f"TLBI {op}", {s: r["exit_events"]["tlbi"].get(op, 0) for s, r in results.items()}))
    rows.append(("DSB", {s: r["exit_events"]["dsb"] for s, r in results.items()}))
    rows.append(("TTBR writes", {s: r["exit_events"]["ttbr_writes"] for s, r in results.items()}))
    rows.append(("violations", {s: len(r["violations"]) for s, r in results.items()}))
    return rows


def eligible(results: dict) -> set:
    """Whose values can be best: completed runs of strategies meant to be safe (an unsafe
    variant's cycles are not a result to aim for), or every completed run if none is safe."""
    from pmap_py import strategies
    done = {s for s, r in results.items() if r["outcome"]["completed"]}
    safe = {s for s in done if strategies.get(s).safe}
    return safe or done


def best_of(values: dict, completed: set) -> set:
    """The strategies holding a row's lowest value among `completed` (none if all tie)."""
    vals = {s: v for s, v in values.items() if s in completed}
    if len(set(vals.values())) <= 1:
        return set()
    low = min(vals.values())
    return {s for s, v in vals.items() if v == low}


def format_table(results: dict) -> str:
    names = list(results)
    completed = eligible(results)
    width = max(10, *(len(s) for s in names))
    head = f"{'':<20}" + "".join(f"{s:>{width}} " for s in names)
    lines = [head.rstrip(), "-" * len(head)]
    for row, values in rows_of(results):
        best = best_of(values, completed)
        cells = "".join(f"{values[s]:>{width},}" + ("*" if s in best else " ") for s in names)
        lines.append(f"{row:<20}{cells}".rstrip())
    stopped = [s for s, r in results.items() if not r["outcome"]["completed"]]
    lines.append("-" * len(head))
    among = " among the safe strategies" if len(completed) < len(names) - len(stopped) else ""
    lines.append(f"* lowest of the row{among} (exit path: first exit syscall to the last reap); "
                 + (f"not completed: {', '.join(stopped)}" if stopped else "every run completed"))
    return "\n".join(lines)


def _pct(a: int, b: int) -> str:
    return f"{(a - b) * 100 / b:+.0f}%" if b else "n/a"


def reading(results: dict, cfg: dict) -> str:
    """One paragraph generated from the numbers: who is cheapest and why, who pays, latency,
    safety."""
    from pmap_py import strategies
    ok = eligible(results)
    done = {s: r for s, r in results.items() if s in ok}
    unsafe = [s for s, r in results.items() if r["outcome"]["completed"] and s not in ok]
    parts = []
    if len(done) >= 2:
        td = {s: r["cycles"]["teardown"] for s, r in done.items()}
        lo, hi = min(td, key=td.get), max(td, key=td.get)
        vae = done[hi]["exit_events"]["tlbi"].get("VAE1IS", 0)
        why = (f", most of it in its {vae:,} by-page VAE1IS broadcasts (each waited on by a DSB ISH "
               f"that reaches all {cfg['cpus']} CPUs)" if vae > done[lo]["exit_events"]["tlbi"].get("VAE1IS", 0)
               else "")
        ratio = f"{td[hi] / td[lo]:.1f}x" if td[lo] else "more"
        parts.append(f"On {cfg['workload']} with {cfg['pages']:,} pages, {cfg['threads']} threads and "
                     f"{cfg['cpus']} CPUs, {lo} tears the address space down cheapest ({td[lo]:,} cycles) "
                     f"and {hi} costs most ({td[hi]:,}, {ratio}){why}.")
        in_reaper = [s for s, r in done.items() if r["cycles"]["reaper"] >= r["cycles"]["teardown"] > 0
                     and r["cycles"]["reaper"] > r["cycles"]["process_sys"] / 2]
        in_proc = [s for s in done if s not in in_reaper]
        if in_reaper and in_proc:
            a = min(in_reaper, key=lambda s: done[s]["cycles"]["teardown"])   # the cheapest of each side
            b = min(in_proc, key=lambda s: done[s]["cycles"]["teardown"])
            ra, rb = done[a]["cycles"], done[b]["cycles"]
            parts.append(f"The teardown runs in the reaper under {', '.join(in_reaper)} and in the exiting "
                         f"process under {', '.join(in_proc)}: from {a} to {b} the reaper's cycles go "
                         f"{ra['reaper']:,} -> {rb['reaper']:,} ({_pct(rb['reaper'], ra['reaper'])}) and the "
                         f"process's system cycles {ra['process_sys']:,} -> {rb['process_sys']:,} "
                         f"({_pct(rb['process_sys'], ra['process_sys'])}).")
        lat = {s: r["cycles"]["exit_latency"] for s, r in done.items()}
        lo_l, hi_l = min(lat, key=lat.get), max(lat, key=lat.get)
        if lat[lo_l] != lat[hi_l]:
            parts.append(f"Exit latency (exit syscall to reapable) is lowest under {lo_l} ({lat[lo_l]:,} cycles) "
                         f"and highest under {hi_l} ({lat[hi_l]:,}, {_pct(lat[hi_l], lat[lo_l])}).")
    if unsafe and "purge" in done:
        ref = done["purge"]["cycles"]["teardown"]
        spread = max(abs(results[s]["cycles"]["teardown"] - ref) for s in unsafe) * 100 / max(1, ref)
        if spread < 5:
            parts.append(f"The unsafe variants ({', '.join(unsafe)}) tear down within {spread:.1f}% of purge's "
                         f"cycles: the wait or flush they skip saves almost nothing; what it costs is safety, "
                         f"which `armmu check --strategy S --seeds N` explores.")
        else:
            each = ", ".join(f"{s} {_pct(results[s]['cycles']['teardown'], ref)}" for s in unsafe)
            parts.append(f"Against purge's teardown cycles the unsafe variants give {each}: what they skip "
                         f"is what keeps purge safe, which `armmu check --strategy S --seeds N` explores.")
    flagged = {s: r["violations"] for s, r in results.items() if r["violations"]}
    if flagged:
        told = []
        for s, vs in flagged.items():
            kinds = sorted({v["kind"] for v in vs})
            claim = "unsafe by design" if not strategies.get(s).safe else "a strategy meant to be safe"
            told.append(f"{s} ({len(vs)}: {', '.join(kinds)}; {claim})")
        parts.append("The checker flagged " + "; ".join(told) + ".")
    else:
        parts.append(f"The checker found no TLB hazard in any of these runs (seed {cfg['seed']}, speculation "
                     f"{cfg['speculate']}; `armmu check` explores many seeds).")
    stopped = [f"{s} ({r['outcome']['reason']})" for s, r in results.items() if not r["outcome"]["completed"]]
    if stopped:
        parts.append("Did not complete: " + "; ".join(stopped) + ".")
    return " ".join(parts)


def plot(results: dict, cfg: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(results)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(CYCLE_ROWS)
    for i, (label, key) in enumerate(CYCLE_ROWS):
        ax1.bar([x + i * width for x in range(len(names))], [max(1, results[s]["cycles"][key]) for s in names],
                width, label=label)
    ax1.set_yscale("log")
    ax1.set_xticks([x + 0.4 - width / 2 for x in range(len(names))], names, rotation=30, ha="right")
    ax1.set_ylabel("cycles (log)")
    ax1.legend(fontsize=8)
    ax1.set_title("who pays for the teardown")
    rows = [(row, vals) for row, vals in rows_of(results) if row.startswith("TLBI")]
    width2 = 0.8 / max(1, len(rows))
    for i, (row, vals) in enumerate(rows):            # grouped, not stacked: a log scale hides stacks
        ax2.bar([x + i * width2 for x in range(len(names))], [vals[s] for s in names], width2, label=row)
    ax2.set_yscale("symlog", linthresh=1)
    ax2.set_xticks([x + 0.4 - width2 / 2 for x in range(len(names))], names, rotation=30, ha="right")
    ax2.set_ylabel("TLBIs on the exit path")
    ax2.legend(fontsize=8)
    ax2.set_title("TLB maintenance")
    fig.suptitle(f"{cfg['workload']}: {cfg['pages']} pages, {cfg['threads']} threads, {cfg['cpus']} CPUs, "
                 f"{cfg['core']}, seed {cfg['seed']}")
    save_figure(fig, path)
    plt.close(fig)


def parse_strategies(text: str | None) -> list[str]:
    from pmap_py import strategies
    if not text:
        return list(strategies.OPENBSD)
    if text == "all":
        return strategies.names()
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise BadInput("--strategies: give names separated by commas (armmu list shows them)")
    for s in names:
        if s not in strategies.names():
            raise BadInput(f"--strategies: unknown strategy {s!r} (one of {', '.join(strategies.names())})")
    if len(set(names)) != len(names):
        raise BadInput("--strategies: a strategy is named twice")
    return names


def cmd_compare(args) -> int:
    load_strategy_file(args.strategy_file)
    names = parse_strategies(args.strategies)
    base = {"workload": args.workload, "guest": args.guest, "pages": args.pages, "threads": args.threads,
            "cpus": args.cpus, "procs": args.procs, "core": args.core, "speculate": args.speculate,
            "strategy_file": args.strategy_file, **kernel_config(args)}
    if args.guest and args.workload:
        raise RunError("give --workload or --guest, not both")
    if not args.guest and not args.workload:
        base["workload"] = COMPARE_DEFAULTS["workload"]
    base = {k: v for k, v in base.items() if v is not None}
    cfg, _ = checked({**base, "strategy": names[0]})      # bad input: before any work
    for out in (args.json, args.plot):
        if out not in (None, "-"):
            check_writable(out, "--json" if out == args.json else "--plot")
    if args.guest:
        from guest.programs import load_file
        try:
            load_file(args.guest)                          # a guest that does not build: exit 2 now
        except ValueError as e:
            raise RunError(str(e)) from None
    traces = {s: None for s in names}
    if args.trace_dir:
        from .trace_out import TraceFilter
        TraceFilter.parse(args.trace_filter)
        d = Path(args.trace_dir)
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadInput(f"--trace-dir {d}: cannot create: {e.strerror or e}") from None
        for s in names:
            path = check_writable(d / f"{s}.{TRACE_SUFFIX[args.trace_format]}", "--trace-dir")
            traces[s] = {"trace": str(path), "trace_format": args.trace_format, "trace_filter": args.trace_filter}
    elif args.trace_filter or args.trace_format != "text":
        raise BadInput("--trace-format and --trace-filter need --trace-dir DIR")
    tasks = [({**base, "strategy": s}, args.seed, not args.no_check, traces[s]) for s in names]
    with make_executor(args.executor, args.jobs or min(len(names), _cpus()), args.scheduler) as ex:
        results = dict(zip(names, ex.imap(compare_task, tasks)))
    failed = [f for f in map(guest_failure, results.values()) if f] if args.guest else []
    if failed:
        raise RunError(failed[0])
    cfg["seed"] = args.seed
    table = format_table(results)
    text = reading(results, cfg)
    if args.json == "-":
        print(json.dumps(report(results, cfg, text), indent=2))
    else:
        what = cfg.get("guest") or cfg["workload"]
        kernel = "".join(f", {label} {cfg[key]}" for key, label in (
            ("asid_bits", "ASID bits"), ("quantum", "quantum"), ("jobs", "shell jobs"), ("irq_prob", "irq prob"))
            if cfg.get(key) is not None) + (", unlocked exit" if cfg.get("unlocked_exit") else "")
        print(f"{what}: {cfg['pages']} pages, {cfg['threads']} thread(s) x {cfg['procs']} process(es) on "
              f"{cfg['cpus']} CPUs ({cfg['core']}, speculation {cfg['speculate']}{kernel}), seed {args.seed}")
        print(table)
        print()
        print(_wrap(text))
    if args.json not in (None, "-"):
        write_json(args.json, report(results, cfg, text))
    if args.plot:
        plot(results, cfg, args.plot)
    clean = all(r["outcome"]["completed"] and not r["violations"] for r in results.values())
    return 0 if clean else 1


def _cpus() -> int:
    import os
    return os.cpu_count() or 1


def _wrap(text: str) -> str:
    import textwrap
    return textwrap.fill(text, width=100)


def report(results: dict, cfg: dict, text: str) -> dict:
    ok = eligible(results)
    rows = rows_of(results)
    return {"schema": 1, "command": "compare",
            "config": {k: cfg[k] for k in ("workload", "cpus", "threads", "procs", "pages", "core",
                                           "speculate", "seed")},
            "strategies": list(results),
            "table": {row: values for row, values in rows},
            "best": {row: sorted(best_of(values, ok)) for row, values in rows},
            "reading": text,
            "results": results}


def add_parser(sub) -> None:
    c = sub.add_parser(
        "compare", help="one workload through several exit strategies, side by side (the main job)",
        description="Run one workload through several exit strategies (each with the TLB hazard checker) "
                    "and print a table: teardown cycles, exit latency, process and reaper cycles, exit-path "
                    "TLBIs by op, DSBs, TTBR writes, violations; the lowest value of each row marked *, and "
                    "a paragraph reading the result. Exit code 0 when every run completed with no "
                    "violation, 1 otherwise, 2 for bad input. "
                    "Example: armmu compare --pages 4096 --strategies reaper,purge --plot cmp.png")
    c.add_argument("--workload", metavar="W",
                   help=f"bundled workload (armmu list; default {COMPARE_DEFAULTS['workload']}), e.g. --workload storm")
    c.add_argument("--guest", metavar="FILE", help="your own guest: a .S/.c source or a static AArch64 ELF")
    c.add_argument("--strategies", metavar="S1,S2",
                   help="comma-separated strategies, or 'all' (default: every OpenBSD one, the four "
                        "revisions and the four unsafe variants); e.g. --strategies reaper,purge,linux")
    c.add_argument("--strategy-file", metavar="FILE.py", help="a Python file registering your own strategies")
    c.add_argument("--pages", type=int, default=COMPARE_DEFAULTS["pages"], metavar="N",
                   help="pages the workload maps and touches (default 4096), e.g. --pages 65536")
    c.add_argument("--threads", type=int, default=COMPARE_DEFAULTS["threads"], metavar="T",
                   help="threads per process (default 4)")
    c.add_argument("--cpus", type=int, default=COMPARE_DEFAULTS["cpus"], metavar="C", help="CPUs (default 4)")
    c.add_argument("--procs", type=int, default=COMPARE_DEFAULTS["procs"], metavar="P",
                   help="processes (default 1; storm uses several), e.g. --procs 8")
    c.add_argument("--core", default=DEFAULTS["core"], metavar="X",
                   help="core preset or TOML file (default cortex-a72), e.g. --core neoverse-n1")
    add_kernel_args(c)
    c.add_argument("--seed", type=int, default=0, metavar="K", help="seed of every run (default 0)")
    c.add_argument("--speculate", choices=SPECULATE, default=DEFAULTS["speculate"],
                   help="speculative TLB fills (default off), e.g. --speculate default")
    c.add_argument("--no-check", action="store_true", help="run without the hazard checker (faster)")
    c.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="the table, the reading and every run's result dict as JSON: printed, or written "
                        "whole to FILE (e.g. --json cmp.json)")
    c.add_argument("--plot", metavar="FILE.png", help="bar charts of cycles and TLBIs, e.g. --plot cmp.png")
    c.add_argument("--trace-dir", metavar="DIR",
                   help="a trace per strategy, DIR/STRATEGY.txt (or .jsonl, .json), e.g. --trace-dir traces")
    c.add_argument("--trace-format", choices=tuple(TRACE_SUFFIX), default="text",
                   help="text, jsonl or perfetto (as armmu run --trace-format)")
    c.add_argument("--trace-filter", metavar="SPEC", help="as armmu run, e.g. kind=tlbi,cpu=0")
    add_executor_args(c, "runs at once (default: one per strategy, up to the cores)")
    c.set_defaults(func=cmd_compare)
