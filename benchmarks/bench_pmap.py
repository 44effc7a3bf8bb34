"""Host cost of pmap_py on the exit path, measured in one run (issue 9, "Scale").

Prints, on a 4-CPU Cortex-A72 machine:
  1. building a populated address space: pmap_enter of P pages (default 262,144 = 1 GiB)
     into an inactive pmap, in host µs per page and in seconds for the whole space;
  2. pmap_remove of those P pages with pm_active == 0 (the purge path: no TLBI), µs/page;
  3. pmap_remove with pm_active == 1 on 4 CPUs (the legacy and purge-naive paths: two
     broadcast VAE1IS flush sequences per page, four in pmap.c 1.58), with the flushes of
     one call applied through Cpu.tlbi_flush_batch against one sequence at a time
     (PmapSystem.batch_flushes), alternating in the same loop; the ratio, and the
     extrapolation to P pages.

Usage: python benchmarks/bench_pmap.py [--pages P] [--active-pages A] [--rounds R] [--json]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from emu.frames import FrameKind
from emu.machine import Machine
from pmap_py import PROT_READ, PROT_WRITE, pmap_bootstrap

VA = 0x1000_0000
RW = PROT_READ | PROT_WRITE


def machine(pages: int, revision: str = "1.113"):
    m = Machine(ncpus=4, mem_size=pages * 4096 + (64 << 20), core="cortex-a72")
    ps = pmap_bootstrap(m, revision=revision)
    pm = ps.pmap_create(m.cpus[0])
    frames = [m.frames.alloc(FrameKind.USER, owner=pm) for _ in range(pages)]
    return m, ps, pm, frames


def populate(ps, cpu, pm, frames) -> float:
    t = time.perf_counter()
    for i, pa in enumerate(frames):
        ps.pmap_enter(cpu, pm, VA + i * 4096, pa, RW)
    return time.perf_counter() - t


def remove(ps, cpu, pm, n) -> float:
    t = time.perf_counter()
    ps.pmap_remove(cpu, pm, VA, VA + n * 4096)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=262_144)
    ap.add_argument("--active-pages", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    gc.disable()
    out = {"pages": args.pages, "active_pages": args.active_pages, "cpus": 4, "core": "cortex-a72"}

    m, ps, pm, frames = machine(args.pages)
    c0 = m.cpus[0]
    t = populate(ps, c0, pm, frames)
    out["enter_us_per_page"] = t / args.pages * 1e6
    out["enter_total_s"] = t
    t = remove(ps, c0, pm, args.pages)
    out["remove_inactive_us_per_page"] = t / args.pages * 1e6
    out["remove_inactive_total_s"] = t
    del m, ps, pm, frames
    gc.collect()

    for revision in ("1.113", "1.58"):
        n = args.active_pages
        m, ps, pm, frames = machine(n, revision)
        c0 = m.cpus[0]
        for c in m.cpus:
            ps.pmap_activate(c, pm)
        times = {True: [], False: []}
        for r in range(args.rounds):
            for batch in ((True, False) if r % 2 == 0 else (False, True)):
                populate(ps, c0, pm, frames)
                ps.batch_flushes = batch
                times[batch].append(remove(ps, c0, pm, n) / n * 1e6)
        one, batched = statistics.median(times[False]), statistics.median(times[True])
        out[f"remove_active_{revision}"] = {
            "one_at_a_time_us_per_page": one, "batched_us_per_page": batched,
            "speedup": one / batched, "batched_total_s_for_pages": batched * args.pages / 1e6}
        del m, ps, pm, frames
        gc.collect()

    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"pmap_enter, inactive pmap:   {out['enter_us_per_page']:6.2f} µs/page, "
          f"{out['enter_total_s']:.2f} s for {args.pages} pages")
    print(f"pmap_remove, pm_active == 0: {out['remove_inactive_us_per_page']:6.2f} µs/page, "
          f"{out['remove_inactive_total_s']:.2f} s for {args.pages} pages")
    for revision in ("1.113", "1.58"):
        r = out[f"remove_active_{revision}"]
        print(f"pmap_remove, pm_active == 1, 4 CPUs, pmap.c {revision}: one at a time "
              f"{r['one_at_a_time_us_per_page']:6.2f} µs/page, batched {r['batched_us_per_page']:6.2f} "
              f"µs/page (x{r['speedup']:.1f}); {args.pages} pages batched: {r['batched_total_s_for_pages']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
