"""One run as the CLI does it: bad input found before any file is opened, the trace sink
attached to the machine and kernel, --dump-at, and the trace closed on every exit path
with a final event saying why the run ended."""
from __future__ import annotations

import sys
import time

from ..cores import load_preset
from ..run import RunError, build, normalize, result
from . import dump as dump_mod
from .trace_out import TraceFilter, open_sink, trace_instructions


def title(cfg: dict, seed: int) -> str:
    what = cfg.get("guest") or cfg["workload"]
    return (f"{what} {cfg['strategy']} pages={cfg['pages']} threads={cfg['threads']} cpus={cfg['cpus']} "
            f"procs={cfg['procs']} core={cfg['core']} seed={seed}")


def checked(config: dict) -> tuple[dict, object]:
    """The normalized configuration and its core preset, or RunError (exit 2)."""
    cfg = normalize(config)
    try:
        core = load_preset(cfg["core"])
    except ValueError as e:
        raise RunError(str(e)) from None
    return cfg, core


def run_session(config: dict, seed: int = 0, trace: str | None = None, trace_format: str = "text",
                trace_filter: str | None = None, trace_insns: bool = False, dump_at: str | None = None,
                dump_out=None, checker: bool = False):
    """Run one configuration; returns (result dict, machine, kernel)."""
    filt = TraceFilter.parse(trace_filter)
    cfg, core = checked(config)
    if checker:
        from ..run.check import install
        install()
    sink = None
    if trace or dump_at:
        sink = open_sink(trace, trace_format, filt, freq_ghz=core.freq_ghz, ncpus=cfg["cpus"],
                         title=title(cfg, seed))
        cfg["trace"] = sink
    try:
        t0 = time.perf_counter()
        cfg, m, k = build(cfg, seed)
    except ValueError:                       # bad input (RunError, a guest that does not build)
        if sink is not None:
            sink.discard()
        raise
    except BaseException as e:               # interrupted or failed while building: say so
        if sink is not None:
            sink.close("interrupted while building" if isinstance(e, KeyboardInterrupt)
                       else f"error while building: {type(e).__name__}: {e}")
        raise
    reason = ""
    ended = "completed"
    dumps: list = []
    try:
        if sink is not None:
            sink.attach(m, k)
            if dump_at:
                out = dump_out or sys.stdout
                sink.dump_at = dump_at
                def dump(cycle, cpu, f):
                    dumps.append(cycle)
                    print(dump_mod.dump(m, k, cycle, cpu, f), file=out)
                sink.dump = dump
            if trace_insns:
                trace_instructions(m, sink)
        if getattr(m, "checker", None) is not None:
            from ..run.check import reproducer
            m.checker.reproducer = reproducer(cfg, seed)
        from pmap_py.kern import RunEnded
        try:
            k.run()
        except RunEnded as e:
            reason = str(e)
            ended = f"stopped: {reason}"
        r = result(cfg, seed, m, k, reason, time.perf_counter() - t0)
        if dump_at and not dumps:
            print(f"armmu: --dump-at {dump_at}: the kernel never reached {dump_at} in this run "
                  f"(kernel events are named as in the text trace, e.g. pmap_purge, exit1, reaper)",
                  file=sys.stderr)
        if r["violations"]:
            ended += f"; {len(r['violations'])} violation(s)"
        return r, m, k
    except KeyboardInterrupt:
        ended = "interrupted"
        raise
    except BaseException as e:
        ended = f"error: {type(e).__name__}: {e}"
        raise
    finally:
        if sink is not None:
            sink.close(ended)


def add_trace_options(p) -> None:
    """--trace, --trace-format, --trace-filter, --trace-insns, --dump-at (run, compare)."""
    p.add_argument("--trace", metavar="FILE",
                   help="write every event to FILE as the run goes (e.g. --trace purge.txt)")
    p.add_argument("--trace-format", choices=("text", "jsonl", "perfetto"), default="text",
                   help="text: one event per line 'cycle cpu event key=value'; jsonl: one JSON object "
                        "per line (pandas.read_json(lines=True)); perfetto: Chrome trace-event JSON "
                        "for ui.perfetto.dev (e.g. --trace run.json --trace-format perfetto)")
    p.add_argument("--trace-filter", metavar="SPEC",
                   help="keep only events matching every KEY=VALUE (keys cpu, asid, kind, va; a key "
                        "twice: either), e.g. cpu=1,asid=0x4,kind=tlbi,va=0x400000-0x500000")
    p.add_argument("--trace-insns", action="store_true",
                   help="also trace every guest instruction, disassembled (capstone); slow, for small runs")
    p.add_argument("--dump-at", metavar="EVENT",
                   help="at each kernel event EVENT print the process's page tables (a tree of decoded "
                        "descriptors) and every CPU's TLB contents, e.g. --dump-at pmap_purge "
                        "(also exit1, reaper, pmap_destroy, uvm_purge, cpu_switchto)")


def trace_options(args) -> None:
    """Check the trace options before anything runs (BadInput: exit 2, no file)."""
    from .common import BadInput
    from .files import check_writable
    given = args.trace_filter or args.trace_insns or args.trace_format != "text"
    if given and not args.trace:
        raise BadInput("--trace-format, --trace-filter and --trace-insns need --trace FILE")
    TraceFilter.parse(args.trace_filter)
    if args.trace:
        check_writable(args.trace, "--trace")
