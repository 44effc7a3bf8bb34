"""Workloads: a name and parameters -> the guest program(s) a run spawns.

Each workload builds one guest Program per process from guest/programs with its
constants set from the run configuration, and says which regions are populated at
exec time (the rest are demand-faulted).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from guest.programs import load, load_file

PAGE = 4096


@dataclass(frozen=True)
class Workload:
    name: str
    summary: str
    build: Callable          # cfg -> (Image, {region: populate}, extra populated heap pages)
    threaded: bool = False
    params: str = "--pages N"  # the armmu run options it reads (for armmu list)


def _touch(cfg):
    # the guest stores to `touch` pages (default: all); the rest of the heap is mapped
    # and populated by the runner, so a 1 GiB space needs no 1 GiB of host memory
    touched = min(cfg.get("touch") or cfg["pages"], cfg["pages"])
    populate = cfg.get("populate", True)
    prog = load("touch", {"NPAGES": touched, "POPULATE": int(populate)})
    return prog, {}, cfg["pages"] - touched


def _threads(mode: int):
    def build(cfg):
        prog = load("threads", {"NPAGES": cfg["pages"], "NTHREADS": cfg["threads"],
                                "THREAD_EXIT": cfg.get("thread_exit", mode),
                                "MAIN_WAIT": cfg.get("main_wait", 1)})
        return prog, _populate(cfg), 0
    return build


def _populate(cfg) -> dict:
    return {} if cfg.get("populate") is None else {"heap": bool(cfg["populate"])}


def _spin(cfg):
    prog = load("spin", {"NPAGES": cfg["pages"], "NSPIN": max(1, cfg["threads"] - 1)})
    return prog, _populate(cfg), 0


def _storm(cfg):
    prog = load("storm", {"NTHREADS": cfg["threads"], "NPAGES": max(1, cfg["pages"] // cfg["threads"])})
    return prog, _populate(cfg), 0


def _sparse(cfg):
    return load("sparse", {"NPAGES": cfg["pages"]}), {}, 0


def _guest_file(cfg):
    return load_file(cfg["guest"]), _populate(cfg), 0


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("touch", "one process maps N pages (populated), touches them (or --touch of them) and exits",
             _touch, params="--pages N (populated), --touch K (stored to; default N), --procs P"),
    Workload("threads", "T threads touch their share of N pages and linger (sched_yield); main calls exit",
             _threads(0), True, "--pages N (shared out), --threads T, --procs P"),
    Workload("threxit", "T-1 threads __threxit after their share; main waits for them, then exits",
             _threads(1), True, "--pages N (shared out), --threads T, --procs P"),
    Workload("spin", "T-1 siblings spin in user mode reading one page while main touches N pages and exits",
             _spin, True, "--pages N, --threads T (T-1 spinners), --procs P"),
    Workload("storm", "P processes of T threads (N pages each process) exit at once: the reaper is shared",
             _storm, True, "--procs P, --threads T, --pages N (per process)"),
    Workload("sparse", "N pages 2 MiB apart (one per L3 table, demand-faulted): table frames dominate",
             _sparse, params="--pages N (one per 2 MiB), --procs P"),
)}


def build(cfg) -> tuple:
    if cfg.get("guest"):
        return _guest_file(cfg)
    return WORKLOADS[cfg["workload"]].build(cfg)
