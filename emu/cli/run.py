"""`armmu run`: one workload, one exit strategy, one seed; a table or the schema-1 JSON."""
from __future__ import annotations

import json
import sys

from ..cores import DEFAULT_CORE
from ..run import DEFAULTS, SPECULATE, RunError
from ..run.workloads import WORKLOADS
from ..stats import table as stats_table
from .common import add_kernel_args, guest_failure, kernel_config
from .files import check_writable, write_json
from .session import add_trace_options, run_session, trace_options

HW = ("VAE1IS", "ASIDE1IS", "VAALE1IS", "VMALLE1IS")


def _tlbi(e: dict) -> str:
    ops = dict(e["tlbi"])
    parts = [f"{op} {ops.pop(op, 0)}" for op in HW]
    parts += [f"{op} {n}" for op, n in sorted(ops.items())]
    return "  ".join(parts)


def _events(e: dict) -> str:
    return (f"{_tlbi(e)}  DSB {e['dsb']}  ISB {e['isb']}  TTBR {e['ttbr_writes']}  "
            f"switches {e['context_switches']}")


def format_result(r: dict) -> str:
    c, cfg = r["config"], r["cycles"]
    what = c.get("guest") or c["workload"]
    lines = [f"{what} with {c['pages']} pages, {c['threads']} thread(s) x {c['procs']} process(es) on "
             f"{c['cpus']} CPUs ({c['core']}, speculation {c['speculate']}), strategy {c['strategy']}, "
             f"seed {c['seed']}"]
    out = r["outcome"]
    lines.append("outcome     " + ("completed" if out["completed"] else f"stopped: {out['reason']}")
                 + f"; {r['host']['guest_instructions']} guest instructions in {r['host']['seconds']} s")
    lines.append(f"cycles      total {cfg['total']}  exit latency {cfg['exit_latency']}  teardown "
                 f"{cfg['teardown']}  process sys {cfg['process_sys']}  user {cfg['process_user']}  "
                 f"reaper {cfg['reaper']}")
    lines.append("exit path   " + _events(r["exit_events"]))
    lines.append("whole run   " + _events(r["events"]) + f"  walks {r['events']['walks']}")
    for p in r["processes"]:
        how = p["killed"] or (f"exit({p['status']})" if p["zombie"] else "not reaped")
        lines.append(f"pid {p['pid']:<7} {how}" + (f"  output {p['output']!r}" if p["output"] else ""))
    lines.append(f"violations  {len(r['violations'])}")
    for v in r["violations"][:10]:
        lines.append(f"  {v.get('kind')} cpu{v.get('cpu')} cycle {v.get('cycle')}: {v.get('detail', '')}")
    return "\n".join(lines)


def cmd_run(args) -> int:
    cfg = {"workload": args.workload, "guest": args.guest, "strategy": args.strategy, "pages": args.pages,
           "threads": args.threads, "cpus": args.cpus, "procs": args.procs, "core": args.core,
           "speculate": args.speculate, "touch": args.touch, "strategy_file": args.strategy_file,
           **kernel_config(args)}
    if args.irq_prob is not None and not 0.0 <= args.irq_prob <= 1.0:
        raise RunError(f"--irq-prob {args.irq_prob}: must be a probability from 0 to 1")
    if args.guest and args.workload:
        raise RunError("give --workload or --guest, not both")
    trace_options(args)
    if args.json not in (None, "-"):
        check_writable(args.json, "--json")
    r, _, _ = run_session({k: v for k, v in cfg.items() if v is not None}, args.seed, trace=args.trace,
                          trace_format=args.trace_format, trace_filter=args.trace_filter,
                          trace_insns=args.trace_insns, dump_at=args.dump_at,
                          dump_out=sys.stderr if args.json == "-" else sys.stdout, checker=True)
    failed = guest_failure(r) if args.guest else None
    if failed:
        raise RunError(failed)
    if args.json not in (None, "-"):
        write_json(args.json, r)
    print(json.dumps(r, indent=2) if args.json == "-" else format_result(r))
    if args.stats and args.json != "-":
        print("statistics (emu/stats.py: name, value, what it counts, the gem5 stat it matches)")
        print(stats_table(r["stats"]))
    return 0 if r["outcome"]["completed"] and not r["violations"] else 1


def add_parser(sub) -> None:
    r = sub.add_parser(
        "run", help="run one workload through one exit strategy and count the exit path",
        description="Run a guest workload on C CPUs until it exits and is reaped, through the "
                    "exit path of one strategy; print cycles and the TLBI/DSB/ISB/TTBR counts of "
                    "the exit path and of the whole run. Exit code 0 when the run completed with "
                    "no violation, 1 otherwise, 2 for bad input. "
                    "Example: armmu run --workload threads --strategy purge --pages 256 --threads 4 --cpus 4")
    r.add_argument("--workload", choices=None, metavar="W",
                   help=f"bundled workload: {', '.join(WORKLOADS)} (default {DEFAULTS['workload']})")
    r.add_argument("--guest", metavar="FILE", help="your own guest: a .S/.c source or a static AArch64 ELF")
    r.add_argument("--strategy", default=DEFAULTS["strategy"], metavar="S",
                   help="exit strategy (armmu list shows them; default purge)")
    r.add_argument("--strategy-file", metavar="FILE.py",
                   help="a Python file defining your own ExitStrategy subclasses (then --strategy NAME)")
    r.add_argument("--pages", type=int, default=DEFAULTS["pages"], metavar="N",
                   help="pages the workload maps and touches (default 64)")
    r.add_argument("--touch", type=int, metavar="K",
                   help="touch workload: store to only K of the N populated pages")
    r.add_argument("--threads", type=int, default=DEFAULTS["threads"], metavar="T",
                   help="threads per process, main included (default 4; touch and sparse use 1)")
    r.add_argument("--cpus", type=int, default=DEFAULTS["cpus"], metavar="C", help="CPUs (default 4)")
    r.add_argument("--procs", type=int, default=DEFAULTS["procs"], metavar="P",
                   help="processes started at once (default 1; storm uses several)")
    r.add_argument("--core", default=DEFAULT_CORE, metavar="X",
                   help="core preset name or TOML file (default cortex-a72)")
    r.add_argument("--seed", type=int, default=0, metavar="K", help="seed: the run is a function of it")
    r.add_argument("--speculate", choices=SPECULATE, default=DEFAULTS["speculate"],
                   help="speculative TLB fills (default off)")
    add_kernel_args(r, shell_jobs="--jobs",
                    quantum_help="guest instructions per quantum (default 2000; armmu check draws one per seed)")
    r.add_argument("--stats", action="store_true",
                   help="also print every statistic with its description (the result's stats section)")
    r.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="the result dict (schema 1) as JSON: printed, or written whole to FILE "
                        "(e.g. --json out.json)")
    add_trace_options(r)
    r.set_defaults(func=cmd_run)
