"""Exit strategies: one module each, registered by name (docs/strategies.md).

``get(name)`` returns a new instance; ``register_strategy(cls)`` adds one (a class
with a unique ``name``, usually a subclass of ExitStrategy); ``load_strategy_file(path)``
imports a user's Python file and registers every ExitStrategy subclass it defines,
without touching the kernel model.
"""
from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

from .base import ExitStrategy


class StrategyError(ValueError):
    """Unknown strategy, bad strategy class or an unloadable strategy file."""


_REGISTRY: dict[str, type] = {}


def register_strategy(cls: type) -> type:
    """Register a strategy class under cls.name (usable as a class decorator)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name == "base":
        raise StrategyError(f"strategy class {cls.__name__} needs a unique `name`")
    if not (isinstance(cls, type) and issubclass(cls, ExitStrategy)):
        raise StrategyError(f"strategy {name!r} must subclass pmap_py.strategies.base.ExitStrategy")
    old = _REGISTRY.get(name)
    if old is not None and old is not cls and old.__module__.startswith(__name__):
        raise StrategyError(f"strategy {name!r} is built in and cannot be replaced")
    _REGISTRY[name] = cls
    return cls


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> ExitStrategy:
    cls = _REGISTRY.get(name)
    if cls is None:
        raise StrategyError(f"unknown strategy {name!r} (one of {', '.join(_REGISTRY)})")
    return cls()


def describe() -> dict[str, str]:
    return {n: c.summary for n, c in _REGISTRY.items()}


def load_strategy_file(path: str | Path) -> list[str]:
    """Import a Python file and register the ExitStrategy subclasses it defines.
    Returns their names."""
    path = Path(path)
    if not path.is_file():
        raise StrategyError(f"strategy file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"armmu_user_strategy_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:                       # a user's file: report it in one line
        raise StrategyError(f"cannot load strategy file {str(path)!r}: {type(e).__name__}: {e}") from None
    found = [c for _, c in inspect.getmembers(mod, inspect.isclass)
             if issubclass(c, ExitStrategy) and c.__module__ == mod.__name__]
    if not found:
        raise StrategyError(f"strategy file {str(path)!r} defines no ExitStrategy subclass")
    for c in found:
        register_strategy(c)
    return [c.name for c in found]


from . import (asid_noflush, freebsd, legacy_reaper, linux, purge, purge_early, purge_naive,  # noqa: E402
               purge_nowait, purge_unsafe, reaper)

for _m in (legacy_reaper, reaper, purge_naive, purge, purge_nowait, purge_unsafe, purge_early,
           asid_noflush, linux, freebsd):
    register_strategy(_m.STRATEGY)

OPENBSD = ("legacy-reaper", "reaper", "purge-naive", "purge", "purge-nowait", "purge-unsafe",
           "purge-early", "asid-noflush")

__all__ = ["ExitStrategy", "StrategyError", "register_strategy", "get", "names", "describe",
           "load_strategy_file", "OPENBSD"]
