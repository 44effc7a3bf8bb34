"""The `armmu` command: one module per subcommand.

Exit codes: 0 ran clean, 1 the run found violations or did not complete (a budget
ended it), 2 bad input (one line on stderr, no traceback).
"""
from __future__ import annotations

import argparse
import sys

from ..physmem import PhysMemError
from . import check, compare, listing, run, sweep, walk
from .common import BadInput, parse_int

__all__ = ["main", "build_parser", "BadInput", "parse_int"]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="armmu", description="ARMv8-A MMU emulator for address-space teardown")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    run.add_parser(sub)
    compare.add_parser(sub)
    sweep.add_parser(sub)
    check.add_parser(sub)
    walk.add_parser(sub)
    listing.add_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except (BadInput, PhysMemError, ValueError) as e:
        print(f"armmu: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("armmu: interrupted", file=sys.stderr)
        return 2
    except BrokenPipeError:                  # `armmu list | head`: the reader went away
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
