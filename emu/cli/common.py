"""What every armmu subcommand shares: the bad-input error, number parsing, loading
--strategy-file and the --jobs/--executor/--scheduler options."""
from __future__ import annotations

from ..run import RunError
from ..run.executor import EXECUTORS


class BadInput(Exception):
    """Bad user input: reported as one line on stderr with exit code 2."""


def parse_int(text: str, what: str) -> int:
    try:
        return int(text.replace("_", ""), 0)
    except ValueError:
        raise BadInput(f"{what}: {text!r} is not a number (use decimal or 0x hex)") from None


def load_strategy_file(path: str | None) -> None:
    """--strategy-file: register its strategies before their names are checked; a bad
    file is a RunError (one line, exit 2)."""
    from pmap_py import strategies
    if path:
        try:
            strategies.load_strategy_file(path)
        except strategies.StrategyError as e:
            raise RunError(str(e)) from None


def guest_failure(r: dict) -> str | None:
    """A user's own guest that never finishes or dies of a fault is bad input (one line, exit
    2), not a result; a stop the checker explains (a violation, a livelock) stays a result."""
    if r["violations"]:
        return None
    guest = r["config"].get("guest", "the guest")
    if not r["outcome"]["completed"]:
        return f"{guest}: the run did not finish: {r['outcome']['reason']}"
    for p in r["processes"]:
        if p["killed"]:
            return f"{guest}: {p['killed']}"
    return None


def add_kernel_args(p, shell_jobs: str = "--shell-jobs",
                    quantum_help: str = "guest instructions per quantum (default 2000)") -> None:
    """The kernel-model options run, compare and check share (KernConfig, the core's ASID
    width); `shell_jobs`: run's flag is --jobs, the others' --jobs is their worker count."""
    p.add_argument("--asid-bits", type=int, metavar="B",
                   help="override the core's ASID width, 8 or 16 (8: ASIDs are reused within a few hundred exits)")
    p.add_argument("--quantum", type=int, metavar="Q", help=quantum_help)
    p.add_argument(shell_jobs, type=int, metavar="J", dest="shell_jobs",
                   help="processes the shell runs at once; the next starts when one is reaped (default all)")
    p.add_argument("--unlocked-exit", action="store_true",
                   help="threads leave exit1 without the kernel lock (the window pmap_purge's spin is for)")
    p.add_argument("--irq-prob", type=float, metavar="P",
                   help="probability of an interrupt after each kernel step (stretches short windows)")


def kernel_config(args) -> dict:
    """The configuration keys of add_kernel_args' options (None: the default)."""
    return {"asid_bits": args.asid_bits, "quantum": args.quantum, "jobs": args.shell_jobs,
            "unlocked_exit": args.unlocked_exit or None, "irq_prob": args.irq_prob}


def add_executor_args(p, jobs_help: str) -> None:
    """--jobs, --executor and --scheduler, as emu.run.executor.make_executor takes them."""
    p.add_argument("--jobs", type=int, metavar="J", help=jobs_help)
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local process pool (default) or dask, e.g. --executor dask --scheduler tcp://h:8786")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="Dask scheduler address (with --executor dask; none: a local cluster)")
