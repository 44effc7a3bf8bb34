"""Host cost of TLB maintenance in the model, measured in one run (issue 7, "Performance").

Prints, on a 4-CPU Cortex-A72 machine (goals from the issue):
  1. one TLBI VAE1IS + DSB ISH issued by cpu0 and reaching 4 CPUs, in host µs, with the
     TLBs nearly empty and with every structure full (goal <= 10 µs, flat in occupancy:
     the full/low ratio stays near 1); for a VA every CPU holds, one other CPU holds, and
     none holds;
     with the compiled by-VA invalidation (emu/_fast_tlbi.c, the default when built) and
     with the pure Python one (Machine(fast=False)), timed in the same loop;
  2. one TLBI ASIDE1IS + DSB ISH on 4 CPUs with full TLBs (goal <= 100 µs): the ASID holding
     a few entries per CPU among other ASIDs' entries (compiled and pure Python, alternated),
     and the ASID holding everything (the removal itself is then O(entries removed));
  3. per page of a pmap_remove (two DSB ISHST; TLBI VAE1IS; DSB ISH; ISB sequences per page,
     as OpenBSD's ttlb_flush for a user pmap), one sequence at a time against
     Cpu.tlbi_flush_batch, and the extrapolation to a 1 GiB teardown (262,144 pages).

Each pair of figures is timed in the same loop, alternating, so that a slow phase of the
machine cannot favour either, in CPU time of the benchmark thread. The refills between
iterations are not timed.

Usage: python benchmarks/bench_tlbi.py [--iterations K] [--pages P] [--json]
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

from emu import fastpath
from emu.machine import Machine
from emu.pagetables import UserTables
from emu.sysregs import SysReg, make_ttbr
from emu.tlbi import TLBIOp, tlbi_operand
from emu.walker import Access

DATA = 0x1000000
CODE = 0x400000
ASID, OTHER = 5, 9
TEARDOWN_PAGES = 262_144          # 1 GiB of 4 KB pages


def machine(fill_pages: int, code_pages: int, asid_of=lambda i: OTHER, fast: bool | None = None):
    """4 CPUs over one address space; each CPU looks up `fill_pages` data pages and
    `code_pages` code pages (with ASID asid_of(i) for page i), filling L1, L2 and walk cache.
    `fast`: Machine's (None: the compiled paths if built)."""
    m = Machine(ncpus=4, mem_size=96 << 20, core="cortex-a72", fast=fast)
    t = UserTables(m.mem, m.frames, "bench")
    k = UserTables(m.mem, m.frames, "kernel")
    pages = max(fill_pages, 1) + 8
    for i in range(pages):
        t.map(DATA + i * 0x1000)
    for i in range(code_pages):
        t.map(CODE + i * 0x1000, ap=0b11, uxn=False, pxn=True)
    m.bench = (t, k, pages)
    for c in m.cpus:
        c.msr(SysReg.TTBR1_EL1, make_ttbr(k.l1, ASID))
        c.msr(SysReg.TTBR0_EL1, make_ttbr(t.l1))
    refill(m, range(fill_pages), range(code_pages), asid_of)
    return m


def switch(c, asid):
    if c.asid != asid:
        c.msr(SysReg.TTBR1_EL1, make_ttbr(c.machine.bench[1].l1, asid))


def refill(m, data_pages, code_pages=(), asid_of=lambda i: OTHER, cpus=None):
    for c in m.cpus if cpus is None else cpus:
        for i in data_pages:
            switch(c, asid_of(i))
            c.lookup(DATA + i * 0x1000, Access.READ, 0)
        for i in code_pages:
            switch(c, asid_of(i))
            c.lookup(CODE + i * 0x1000, Access.FETCH, 0)
        switch(c, ASID)


def occupancy(m) -> str:
    c = m.cpus[1]
    t = c.tlb
    return f"itb {len(t.itlb)}/{t.itlb.entries} dtb {len(t.dtlb)}/{t.dtlb.entries} " \
           f"l2 {len(t.l2)}/{t.l2.entries} walk {len(t.walk_cache)}/{t.walk_cache.entries}"


def timed(fn) -> float:
    """CPU time of fn in µs (this thread's: other jobs' turns on a shared machine are not
    counted, as in bench_emulator.py)."""
    t0 = time.thread_time_ns()
    fn()
    return (time.thread_time_ns() - t0) / 1000.0


def bench_vae1is(iterations: int) -> dict:
    """Low vs full occupancy, interleaved; the TLBI names a VA held by every CPU (refilled
    untimed before each iteration), by one other CPU (the one that ran the process: a
    single-threaded teardown's pages), or by none (most of a large teardown's pages). Each
    configuration twice when the compiled paths are built: compiled ("fast") and pure
    Python ("python"), in the same loop."""
    modes = ("fast", "python") if fastpath.built() else ("python",)
    machines = {(mode, name): machine(*shape, fast=mode == "fast")
                for mode in modes
                for name, shape in (("low", (1, 0, lambda i: ASID)),
                                    ("full", (1400, 60, lambda i: ASID if i == 0 else OTHER)))}
    res = {key: {"held": [], "one": [], "absent": []} for key in machines}
    held = tlbi_operand(va=DATA, asid=ASID)
    absent = tlbi_operand(va=DATA + 0x7F000000, asid=ASID)

    def one(m, xt):
        c = m.cpus[0]
        return timed(lambda: (c.tlbi(TLBIOp.VAE1IS, xt), c.dsb("ish")))

    gc.disable()
    try:
        for _ in range(iterations):
            for key, m in machines.items():
                refill(m, [0], asid_of=lambda i: ASID)
                res[key]["held"].append(one(m, held))
                refill(m, [0], asid_of=lambda i: ASID, cpus=m.cpus[1:2])
                res[key]["one"].append(one(m, held))
                res[key]["absent"].append(one(m, absent))
    finally:
        gc.enable()
    for m in machines.values():
        assert all(c.tlb.probe(DATA, ASID) is None for c in m.cpus)
    out = {mode: {f"{name}_{va}": statistics.median(res[(mode, name)][va])
                  for name in ("low", "full") for va in ("held", "one", "absent")} for mode in modes}
    for fig in out.values():
        fig["full_over_low_held"] = fig["full_held"] / fig["low_held"]
        fig["full_over_low_one"] = fig["full_one"] / fig["low_one"]
        fig["full_over_low_absent"] = fig["full_absent"] / fig["low_absent"]
    if "fast" in out:
        out["python_over_fast"] = {k: out["python"][k] / out["fast"][k]
                                   for k in ("low_held", "full_held", "low_one", "full_one", "low_absent",
                                             "full_absent")}
    out["occupancy_full"] = occupancy(machines[(modes[0], "full")])
    out["occupancy_low"] = occupancy(machines[(modes[0], "low")])
    return out


def bench_aside1is(iterations: int) -> dict:
    """ASIDE1IS on full TLBs: (few) 16 entries of the ASID per CPU among other ASIDs'
    entries; (all) every entry is the ASID's. Interleaved with the same op on empty TLBs,
    and (few) with the pure Python path beside the compiled one (emu/_fast_tlbi.c)."""
    few = machine(1400, 60, asid_of=lambda i: ASID if i < 16 else OTHER)
    few_python = machine(1400, 60, asid_of=lambda i: ASID if i < 16 else OTHER, fast=False)
    every = machine(1400, 60, asid_of=lambda i: ASID)
    empty = machine(0, 0)
    xt = tlbi_operand(asid=ASID)
    res = {"empty": [], "few": [], "few_python": [], "all": []}

    def one(m):
        c = m.cpus[0]
        return timed(lambda: (c.tlbi(TLBIOp.ASIDE1IS, xt), c.dsb("ish")))

    occ = occupancy(every)
    gc.disable()
    try:
        for i in range(iterations):
            res["empty"].append(one(empty))
            for key, m in (("few", few), ("few_python", few_python)):
                res[key].append(one(m))
                refill(m, range(16), asid_of=lambda i: ASID)
            if i < max(3, iterations // 20):                  # refilling everything is slow
                res["all"].append(one(every))
                refill(every, range(1400), range(60), asid_of=lambda i: ASID)
    finally:
        gc.enable()
    out = {k: statistics.median(v) for k, v in res.items()}
    out["occupancy_full"] = occ
    return out


def bench_batch(pages: int) -> dict:
    """A pmap_remove of `pages` pages: two flush sequences per page on cpu0, one at a time
    (as the cpufunc helpers issue them) against one batch; alternated, full TLBs."""
    flushes = []
    for i in range(pages):
        va = DATA + i * 0x1000
        flushes.append((TLBIOp.VAE1IS, tlbi_operand(va=va, asid=ASID)))
        flushes.append((TLBIOp.VAE1IS, tlbi_operand(va=va, asid=ASID | 0x8000)))
    res = {"one_at_a_time": [], "batch": []}
    for _ in range(2):
        for mode in ("one_at_a_time", "batch"):
            m = machine(1400, 60, asid_of=lambda i: ASID)
            c = m.cpus[0]

            def one():
                for op, xt in flushes:
                    c.dsb("ishst")
                    c.tlbi(op, xt)
                    c.dsb("ish")
                    c.isb()
            gc.disable()
            try:
                res[mode].append(timed(one if mode == "one_at_a_time" else lambda: c.tlbi_flush_batch(flushes)))
            finally:
                gc.enable()
            assert c.events["tlbi.VAE1IS"] == 2 * pages and all(len(x.tlb.l2) < 1024 for x in m.cpus)
    one_s, batch_s = min(res["one_at_a_time"]), min(res["batch"])
    return {"pages": pages, "one_at_a_time_us_per_page": one_s / pages, "batch_us_per_page": batch_s / pages,
            "ratio": one_s / batch_s,
            "teardown_1GiB_s_one_at_a_time": one_s / pages * TEARDOWN_PAGES / 1e6,
            "teardown_1GiB_s_batch": batch_s / pages * TEARDOWN_PAGES / 1e6}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--pages", type=int, default=16384, help="pages of the pmap_remove batch")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    a = ap.parse_args(argv)
    if a.iterations < 1 or a.pages < 1:
        print("bench_tlbi: --iterations and --pages must be positive", file=sys.stderr)
        return 2
    v = bench_vae1is(a.iterations)
    s = bench_aside1is(a.iterations)
    b = bench_batch(a.pages)
    main_mode = "fast" if "fast" in v else "python"
    out = {
        "vae1is_dsb_ish_us": dict(v[main_mode], goal=10.0, paths=main_mode,
                                  python=v["python"], python_over_fast=v.get("python_over_fast")),
        "aside1is_dsb_ish_us": {"empty": s["empty"], "full_few_of_asid": s["few"], "full_all_of_asid": s["all"],
                                 "full_few_of_asid_python": s["few_python"], "goal": 100.0},
        "batch": b,
        "occupancy_full": v["occupancy_full"],
    }
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"4 CPUs, Cortex-A72; full TLBs per CPU: {v['occupancy_full']}")
    print("1. TLBI VAE1IS + DSB ISH from cpu0 (host µs, median; goal <= 10, flat in occupancy)")
    if "fast" not in v:
        print("   (the compiled paths are not built: pure Python only)")
    for mode, label in (("fast", "compiled"), ("python", "pure Python")):
        if mode not in v:
            continue
        f = v[mode]
        print(f"   {label + ':':13s} VA held by all CPUs: low occupancy {f['low_held']:6.2f}  full {f['full_held']:6.2f}  "
              f"full/low {f['full_over_low_held']:.2f}")
        print(f"   {'':13s} VA held by one CPU:  low occupancy {f['low_one']:6.2f}  full {f['full_one']:6.2f}  "
              f"full/low {f['full_over_low_one']:.2f}")
        print(f"   {'':13s} VA held by none:     low occupancy {f['low_absent']:6.2f}  full {f['full_absent']:6.2f}  "
              f"full/low {f['full_over_low_absent']:.2f}")
    if "fast" in v:
        r = v["python_over_fast"]
        print(f"   pure Python / compiled: held by all {r['low_held']:.2f} (low) {r['full_held']:.2f} (full), "
              f"by one {r['low_one']:.2f} / {r['full_one']:.2f}, by none {r['low_absent']:.2f} / {r['full_absent']:.2f}")
    print("2. TLBI ASIDE1IS + DSB ISH (host µs, median; goal <= 100 with full TLBs)")
    print(f"   empty TLBs {s['empty']:7.1f}   full, 16 entries of the ASID per CPU {s['few']:7.1f} "
          f"(pure Python {s['few_python']:.1f})   full, every entry of the ASID (O(entries removed)) {s['all']:7.1f}")
    print(f"3. pmap_remove of {b['pages']} pages, 2 flush sequences per page, full TLBs (host µs per page)")
    print(f"   one sequence at a time {b['one_at_a_time_us_per_page']:6.2f}   tlbi_flush_batch "
          f"{b['batch_us_per_page']:6.2f}   ratio {b['ratio']:.1f}")
    print(f"   1 GiB teardown (262,144 pages): {b['teardown_1GiB_s_one_at_a_time']:.2f} s one at a time, "
          f"{b['teardown_1GiB_s_batch']:.2f} s batched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
