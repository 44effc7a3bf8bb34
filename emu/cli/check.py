"""`armmu check`: one strategy under many seeds with the hazard checker on; the first
violation with the seed and command that reproduce it and the trace around it."""
from __future__ import annotations

import json
import sys
import textwrap
import time

from ..cores import DEFAULT_CORE
from ..run import DEFAULTS, SPECULATE
from ..run.check import explore
from ..run.workloads import WORKLOADS
from .common import BadInput, add_executor_args, add_kernel_args, kernel_config
from .files import check_writable, write_json


def format_violation(v: dict, seed: int) -> str:
    head = v["kind"] + (f" ({v['range']} range)" if v.get("range") else "")
    where = [f"cpu{v['cpu']}", f"cycle {v['cycle']}"]
    for key in ("va", "asid", "pa"):
        if v.get(key) is not None:
            where.append(f"{key} {v[key]:#x}")
    lines = [f"violation at seed {seed}: {head}", "  " + ", ".join(where)]
    lines += textwrap.wrap(v["detail"], 100, initial_indent="  ", subsequent_indent="  ")
    lines.append(f"reproduce: {v['reproducer']}")
    return "\n".join(lines)


def cmd_check(args) -> int:
    if args.seeds < 1:
        raise BadInput(f"--seeds {args.seeds}: must be 1 or more")
    if args.first_seed < 0:
        raise BadInput(f"--first-seed {args.first_seed}: must be 0 or more")
    if args.quantum is not None and args.quantum < 2:
        raise BadInput(f"--quantum {args.quantum}: must be 2 or more (each seed draws from [Q/2, 3Q/2])")
    if args.irq_prob is not None and not 0.0 <= args.irq_prob <= 1.0:
        raise BadInput(f"--irq-prob {args.irq_prob}: must be a probability from 0 to 1")
    if args.asid_bits is not None and args.asid_bits not in (8, 16):
        raise BadInput(f"--asid-bits {args.asid_bits}: 8 or 16 (ID_AA64MMFR0_EL1.ASIDBits)")
    if args.shell_jobs is not None and args.shell_jobs < 1:
        raise BadInput(f"--shell-jobs {args.shell_jobs}: must be 1 or more")
    if args.json not in (None, "-"):
        check_writable(args.json, "--json")
    cfg = {"workload": args.workload, "strategy": args.strategy, "pages": args.pages, "threads": args.threads,
           "cpus": args.cpus, "procs": args.procs, "core": args.core, "speculate": args.speculate,
           "strategy_file": args.strategy_file, **kernel_config(args)}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    t0 = time.perf_counter()
    ex = explore(cfg, args.seeds, jobs=args.jobs, first_seed=args.first_seed,
                 quantum_jitter=not args.no_jitter, executor=args.executor, scheduler=args.scheduler)
    seconds = time.perf_counter() - t0
    rate = ex.seeds_run / seconds * 60 if seconds > 0 else 0.0
    summary = {"seeds_run": ex.seeds_run, "seconds": round(seconds, 3), "seeds_per_minute": round(rate),
               "incomplete": [{"seed": s, "reason": r} for s, r in ex.incomplete],
               "first": ex.first, "trace_excerpt": ex.excerpt}
    if args.json not in (None, "-"):
        write_json(args.json, summary)
    if args.json == "-":
        print(json.dumps(summary, indent=2))
    else:
        what = (f"{args.strategy} on {cfg.get('workload', DEFAULTS['workload'])} (speculation {args.speculate}, "
                f"{'fixed quantum' if args.no_jitter else 'quantum jitter'})")
        if ex.first is None:
            print(f"no violation in {ex.seeds_run} seeds from {args.first_seed}: {what}; "
                  f"{seconds:.1f} s, {rate:.0f} seeds/min")
        else:
            v = ex.first["violations"][0]
            print(format_violation(v, ex.first["seed"]))
            more = len(ex.first["violations"]) - 1
            if more:
                kinds = sorted({x["kind"] for x in ex.first["violations"]})
                print(f"(the same seed has {more} more violation(s): {', '.join(kinds)})")
            print("trace before and at the violation (cycle, cpu, event):")
            print(textwrap.indent(ex.excerpt, "  "))
            print(f"found after {ex.seeds_run} seeds: {what}; {seconds:.1f} s")
        if ex.incomplete:
            s, reason = ex.incomplete[0]
            print(f"warning: {len(ex.incomplete)} run(s) did not complete (a budget ended them), "
                  f"e.g. seed {s}: {reason}", file=sys.stderr)
    return 1 if ex.first is not None else 0


def add_parser(sub) -> None:
    c = sub.add_parser(
        "check", help="run one strategy under many seeds; stop at the first TLB hazard",
        description="Run a workload through one exit strategy under many seeds (CPU interleavings, "
                    "quantum lengths, speculative fills), each a pure function of the configuration and "
                    "the seed, on a process pool using every core; stop at the first violation and print "
                    "it with the command that reproduces it and the trace around it. Exit code 1 when a "
                    "violation was found, 0 when none, 2 for bad input. "
                    "Example: armmu check --workload threads --strategy purge-unsafe --seeds 200")
    c.add_argument("--workload", default=DEFAULTS["workload"], metavar="W",
                   help=f"bundled workload: {', '.join(WORKLOADS)} (default {DEFAULTS['workload']})")
    c.add_argument("--strategy", default=DEFAULTS["strategy"], metavar="S", help="exit strategy (default purge)")
    c.add_argument("--strategy-file", metavar="FILE.py",
                   help="a Python file defining your own ExitStrategy subclasses (then --strategy NAME)")
    c.add_argument("--seeds", type=int, default=100, metavar="N", help="seeds to run (default 100)")
    c.add_argument("--first-seed", type=int, default=0, metavar="K", help="first seed (default 0)")
    add_executor_args(c, "worker processes (default: every core)")
    c.add_argument("--pages", type=int, default=DEFAULTS["pages"], metavar="N", help="pages (default 64)")
    c.add_argument("--threads", type=int, default=DEFAULTS["threads"], metavar="T",
                   help="threads per process (default 4)")
    c.add_argument("--cpus", type=int, default=DEFAULTS["cpus"], metavar="C", help="CPUs (default 4)")
    c.add_argument("--procs", type=int, default=DEFAULTS["procs"], metavar="P", help="processes (default 1)")
    c.add_argument("--core", default=DEFAULT_CORE, metavar="X", help="core preset name or TOML file")
    add_kernel_args(c, quantum_help="guest instructions per quantum; each seed draws from [Q/2, 3Q/2] (default 2000)")
    c.add_argument("--speculate", choices=SPECULATE, default="default",
                   help="speculative TLB fills (default: default; the hazards need them)")
    c.add_argument("--no-jitter", action="store_true", help="the same quantum for every seed")
    c.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="the summary as JSON: printed, or written whole to FILE")
    c.set_defaults(func=cmd_check)
