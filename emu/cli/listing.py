"""`armmu list`: core presets, workloads, exit strategies, guest programs, and which model paths run."""
from __future__ import annotations

from .. import fastpath


def cmd_list(args) -> int:
    from guest.programs import info, list_programs
    from pmap_py import strategies

    from ..cores import list_presets, load_preset
    from ..run.workloads import WORKLOADS
    print("core presets:")
    for name in list_presets():
        p = load_preset(name)
        print(f"  {name:<14} {p.description}")
        print(f"  {'':<14} {p.freq_ghz} GHz, {p.asid_bits}-bit ASIDs, L2 TLB {p.l2.entries}x{p.l2.ways}-way"
              + (", TLBI repeated (erratum 1286807)" if p.repeat_tlbi else "") + f", {p.ci_flush_bp}")
    print("workloads (armmu run --workload W):")
    for w in WORKLOADS.values():
        print(f"  {w.name:<14} {w.summary}")
        print(f"  {'':<14} options: {w.params}")
    print("exit strategies (armmu run --strategy S):")
    for name, summary in strategies.describe().items():
        print(f"  {name:<14} {summary}")
    print("guest programs:")
    for name, desc in list_programs().items():
        print(f"  {name:<14} {desc}")
        knobs = " ".join(f"{p.name}={p.default}" for p in info(name).params.values())
        if knobs:
            print(f"  {'':<14} knobs: {knobs}")
    print("model:")
    print(f"  {fastpath.describe()}")
    return 0


def add_parser(sub) -> None:
    li = sub.add_parser("list", help="core presets, workloads, strategies and guest programs",
                        description="List core presets, workloads, exit strategies and guest programs. "
                                    "Example: armmu list")
    li.set_defaults(func=cmd_list)
