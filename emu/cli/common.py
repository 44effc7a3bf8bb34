"""What every armmu subcommand shares: the bad-input error and number parsing."""
from __future__ import annotations


class BadInput(Exception):
    """Bad user input: reported as one line on stderr with exit code 2."""


def parse_int(text: str, what: str) -> int:
    try:
        return int(text.replace("_", ""), 0)
    except ValueError:
        raise BadInput(f"{what}: {text!r} is not a number (use decimal or 0x hex)") from None
