"""Result files are written whole or not at all: into a temporary file in the same
directory, then renamed over the target (rename is atomic within a filesystem)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .common import BadInput


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """Fail before any work (BadInput, exit 2) if `path` cannot be written."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise BadInput(f"{what} {path}: is a directory")
    if not parent.is_dir():
        raise BadInput(f"{what} {path}: directory {parent} does not exist")
    if p.exists() and not os.access(p, os.W_OK):
        raise BadInput(f"{what} {path}: not writable")
    try:                                  # a real probe: root passes access() checks a write fails
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise BadInput(f"{what} {path}: not writable ({e.strerror or e})") from None
    return p


def atomic_write(path: str | os.PathLike, write, binary: bool = False) -> None:
    """write(fh) fills a temporary file next to `path`, which then replaces `path`
    (BadInput if the directory refuses it)."""
    p = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent if str(p.parent) else ".")
    except OSError as e:
        raise BadInput(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path, obj) -> None:
    atomic_write(path, lambda fh: (json.dump(obj, fh, indent=2), fh.write("\n")))


def write_text(path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def save_figure(fig, path) -> None:
    """matplotlib savefig through a temporary file (the format from the target's suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, dpi=110, bbox_inches="tight"), binary=True)
