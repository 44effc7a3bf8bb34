"""`armmu list`: core presets, workloads, exit strategies, guest programs."""
from __future__ import annotations


def cmd_list(args) -> int:
    from guest.programs import info, list_programs
    from pmap_py import strategies

    from ..cores import list_presets, load_preset
    from ..run.workloads import WORKLOADS
    print("core presets:")
    for name in list_presets():
        print(f"  {name:<14} {load_preset(name).description}")
    print("workloads (armmu run --workload W):")
    for w in WORKLOADS.values():
        print(f"  {w.name:<14} {w.summary}")
    print("exit strategies (armmu run --strategy S):")
    for name, summary in strategies.describe().items():
        print(f"  {name:<14} {summary}")
    print("guest programs:")
    for name, desc in list_programs().items():
        print(f"  {name:<14} {desc}")
        knobs = " ".join(f"{p.name}={p.default}" for p in info(name).params.values())
        if knobs:
            print(f"  {'':<14} knobs: {knobs}")
    return 0


def add_parser(sub) -> None:
    li = sub.add_parser("list", help="core presets, workloads, strategies and guest programs",
                        description="List core presets, workloads, exit strategies and guest programs. "
                                    "Example: armmu list")
    li.set_defaults(func=cmd_list)
