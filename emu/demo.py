"""`armmu demo`: one process's address space torn down three ways, side by side.

A real guest (guest/programs/touch.S, built by guest.build) runs at EL0 on cpu0 through a pmap built by
pmap_py, touches its heap pages and calls exit; then the address space is torn down
as OpenBSD arm64 did in 2018 (pmap.c 1.58, the reaper flushes every page), as a
uvm_purge in exit1 would do it without pmap_purge (every page flushed while pm_active
is still 1), and as OpenBSD does it now (pmap_purge, then a teardown with no per-page
flush). The counts are what the emulated hardware saw.

This is an outer module (like cli.py): it composes emu, pmap_py and guest.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from guest.programs import load
from guest.syscalls import Sys
from pmap_py import pmap_bootstrap

from .cpu import StopKind
from .frames import FrameKind
from .machine import Machine
from .scenario import map_program, setregs

PATHS = (
    ("legacy", "1.58", "reaper removes every page, 4 VAE1IS each (pmap.c 1.58, 2018)"),
    ("purge-naive", "1.113", "uvm_purge in exit1 while pm_active == 1: 2 VAE1IS per page"),
    ("purge", "1.113", "pmap_purge (TTBR0 -> zero page, 2 ASIDE1IS), then teardown with no flush"),
)


@dataclass
class DemoRow:
    path: str
    what: str
    guest_instructions: int
    guest_walks: int
    vae1is: int
    aside1is: int
    dsb: int
    isb: int
    ttbr_writes: int
    exit_cycles: int          # on the exiting CPU, from the exit syscall to the switch to idle
    reaper_cycles: int        # on the reaper's CPU
    stale_entries: int        # TLB entries of the dying ASID pair left after the teardown
    frames_leaked: int


def run_path(path: str, revision: str, pages: int, ncpus: int, core: str, seed: int,
             speculate: str, quantum: int, budget: int) -> DemoRow:
    m = Machine(ncpus=ncpus, mem_size=max(64 << 20, (pages + 256) * 4096 * 2), core=core, seed=seed,
                speculate=speculate)
    ps = pmap_bootstrap(m, revision=revision)
    cpu, reaper = m.cpus[0], m.cpus[-1]
    free_before = m.frames.counts()[FrameKind.FREE]
    prog = load("touch", {"NPAGES": pages})
    pm = ps.pmap_create(cpu)
    regions = prog.layout
    user_frames = map_program(m, ps, cpu, pm, prog)
    ps.pmap_activate(cpu, pm)
    ps.pmap_userret(cpu)
    setregs(cpu, prog)
    pc = prog.entry
    while True:
        if cpu.insns > budget:
            raise ValueError(f"guest ran past its budget of {budget} instructions")
        stop = cpu.run(quantum, pc=pc)
        pc = stop.pc
        if stop.kind is not StopKind.QUANTUM:
            break
    if stop.kind is not StopKind.SVC or cpu.reg(8) != Sys.EXIT:
        raise ValueError(f"touch.S stopped unexpectedly: {stop}")
    if cpu.reg(0) != 0:
        raise ValueError("touch.S read back something other than what it stored: the MMU model is wrong")
    ps.pmap_kernel_entry(cpu)
    guest_insns, guest_walks = cpu.insns, cpu.walks
    before = m.events()
    c_exit, c_reaper = cpu.cycles, reaper.cycles

    def teardown(on):
        for reg in regions.values():
            ps.pmap_remove(on, pm, reg.start, reg.start + reg.size)

    if path == "purge":
        ps.pmap_purge(cpu, pm)
        teardown(cpu)
    elif path == "purge-naive":
        teardown(cpu)
    ps.pmap_deactivate(cpu, pm)
    ps.pmap_setttb(cpu, ps.pmap_kernel())            # sched_exit: switch to idle
    exit_cycles = cpu.cycles - c_exit
    if path == "legacy":
        teardown(reaper)
    stale = sum(1 for c in m.cpus for e in c.tlb.entries() if e.asid in (pm.asid, pm.asid | 1))
    for pa in user_frames:                           # uvm_unmap_detach: the pages themselves
        m.frames.free(pa)
    ps.pmap_destroy(reaper, pm)
    ev = m.events() - before
    reaper_cycles = reaper.cycles - c_reaper - (exit_cycles if reaper is cpu else 0)
    return DemoRow(path, dict((p, w) for p, _, w in PATHS)[path], guest_insns, guest_walks,
                   ev["tlbi.VAE1IS"], ev["tlbi.ASIDE1IS"], ev["dsb"], ev["isb"], ev["ttbr_writes"],
                   exit_cycles, reaper_cycles, stale, free_before - m.frames.counts()[FrameKind.FREE])


def cmd_demo(args) -> int:
    if args.pages < 1 or args.pages > 65536:
        raise ValueError(f"--pages {args.pages}: must be between 1 and 65536")
    if args.cpus < 1 or args.cpus > 64:
        raise ValueError(f"--cpus {args.cpus}: must be between 1 and 64")
    rows = [run_path(p, rev, args.pages, args.cpus, args.core, args.seed, args.speculate, args.quantum,
                     args.budget) for p, rev, _ in PATHS]
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    print(f"touch.S with {args.pages} heap pages on {args.cpus} CPUs ({args.core}, seed {args.seed}, "
          f"speculation {args.speculate}); guest: {rows[0].guest_instructions} instructions, "
          f"{rows[0].guest_walks} walks")
    print(f"{'path':<12} {'VAE1IS':>7} {'ASIDE1IS':>8} {'DSB':>6} {'ISB':>6} {'TTBR':>5} "
          f"{'exit cyc':>9} {'reaper cyc':>10} {'stale':>5} {'leaked':>6}")
    for r in rows:
        print(f"{r.path:<12} {r.vae1is:>7} {r.aside1is:>8} {r.dsb:>6} {r.isb:>6} {r.ttbr_writes:>5} "
              f"{r.exit_cycles:>9} {r.reaper_cycles:>10} {r.stale_entries:>5} {r.frames_leaked:>6}")
    print()
    for p, _, what in PATHS:
        print(f"  {p:<12} {what}")
    print("  stale: TLB entries of the dying ASID pair left on any CPU after the teardown "
          "(pmap_destroy's 2 ASIDE1IS remove them before the ASID is reused)")
    return 0


def add_demo_parser(sub) -> None:
    from .cores import DEFAULT_CORE
    d = sub.add_parser("demo", help="tear one address space down three ways and compare the TLB work")
    d.add_argument("--pages", type=int, default=64, help="heap pages the guest touches (default 64)")
    d.add_argument("--cpus", type=int, default=2)
    d.add_argument("--core", default=DEFAULT_CORE, help="core preset name or TOML file")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--speculate", choices=["off", "default", "aggressive"], default="off")
    d.add_argument("--quantum", type=int, default=10_000)
    d.add_argument("--budget", type=int, default=50_000_000, help="guest instruction budget")
    d.add_argument("--json", action="store_true", help="print the rows as JSON")
    d.set_defaults(func=cmd_demo)
