"""The `armmu` command.

Exit codes: 0 ran clean, 1 violations found, 2 bad input (one line on stderr, no traceback).
"""
from __future__ import annotations

import argparse
import sys

from .descriptors import AP_RO_ALL, AP_RW_ALL, describe, level_index
from .frames import FrameAllocator
from .pagetables import UserTables
from .physmem import PhysMem, PhysMemError
from .sysregs import make_ttbr, openbsd_tcr
from .walker import Access, Fault, Regime, check_access, perms_str, walk


class BadInput(Exception):
    """Bad user input: reported as one line on stderr with exit code 2."""


def parse_int(text: str, what: str) -> int:
    try:
        return int(text.replace("_", ""), 0)
    except ValueError:
        raise BadInput(f"{what}: {text!r} is not a number (use decimal or 0x hex)") from None


def parse_mapping(spec: str) -> tuple[int, str]:
    """VA:PROT, PROT in r, rw, rx, rwx (user pages, as OpenBSD maps them)."""
    va_s, _, prot = spec.partition(":")
    prot = prot or "rw"
    if not set(prot) <= set("rwx") or "r" not in prot:
        raise BadInput(f"--map {spec}: protection must be r, rw, rx or rwx")
    va = parse_int(va_s, "--map")
    if va % 4096:
        raise BadInput(f"--map {spec}: VA is not page aligned")
    if not 0 <= va < 1 << 39:
        raise BadInput(f"--map {spec}: VA is outside the 39-bit user range")
    return va, prot


# ---------------------------------------------------------------- armmu walk
def cmd_walk(args) -> int:
    """Build OpenBSD-style user tables (T0SZ=25, L1 -> L2 -> L3) and show one walk."""
    va = parse_int(args.va, "VA")
    mappings = [parse_mapping(s) for s in args.map] or [(va & ~0xFFF, "rw")]
    mem = PhysMem(4 << 20)
    tables = UserTables(mem, FrameAllocator(mem), "pmap")
    for mva, prot in mappings:
        tables.map(mva, ap=AP_RW_ALL if "w" in prot else AP_RO_ALL, uxn="x" not in prot, pxn=True)
    l1 = tables.l1
    asid = parse_int(args.asid, "--asid")
    tcr = openbsd_tcr(as16=True)
    ttbr0, ttbr1 = make_ttbr(l1), make_ttbr(0, asid)
    regime = Regime(ttbr0, ttbr1, tcr)
    access = Access[args.access.upper()]
    print(f"TTBR0_EL1 {ttbr0:#018x}  TTBR1_EL1 {ttbr1:#018x}  TCR_EL1 {tcr.value:#x}")
    print(f"T0SZ={tcr.t0sz}: {4 - regime.start[0]} levels from L{regime.start[0]}; "
          f"A1={int(tcr.a1)}: ASID {regime.asid:#x} from TTBR1")
    r = walk(mem, regime, va)
    for pa, value, level in r.reads:
        print(f"  L{level}[{level_index(va, level):3d}] @ {pa:#010x} = {value:#018x}  {describe(value, level)}")
    if isinstance(r, Fault):
        r.access, r.el = access, args.el
        print(f"=> {r}")
        return 0
    f = check_access(r, access, args.el)
    size = {1 << 12: "4 KB page", 1 << 21: "2 MB block", 1 << 30: "1 GB block"}[r.size]
    print(f"=> PA {r.pa:#x} ({size}, level {r.level}) {perms_str(r.perms)} "
          + (f"nG, ASID {r.asid:#x}" if r.ng else "global"))
    if f is not None:
        print(f"=> {f}")
    return 0


# ---------------------------------------------------------------- armmu list
def cmd_list(args) -> int:
    from guest.programs import info, list_programs

    from .cores import list_presets, load_preset
    print("core presets:")
    for name in list_presets():
        p = load_preset(name)
        print(f"  {name:<14} {p.description}")
    print("guest programs:")
    for name, desc in list_programs().items():
        print(f"  {name:<14} {desc}")
        knobs = " ".join(f"{p.name}={p.default}" for p in info(name).params.values())
        if knobs:
            print(f"  {'':<14} knobs: {knobs}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="armmu", description="ARMv8-A MMU emulator for address-space teardown")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("walk", help="translate one VA through OpenBSD-style user tables and print the walk")
    w.add_argument("va", help="virtual address (0x hex)")
    w.add_argument("--map", action="append", default=[], metavar="VA:PROT",
                   help="map a user page (PROT r, rw, rx, rwx); default: the VA's page rw")
    w.add_argument("--access", choices=["read", "write", "fetch"], default="read")
    w.add_argument("--el", type=int, choices=[0, 1], default=0)
    w.add_argument("--asid", default="5", help="ASID in TTBR1 (TCR.A1=1)")
    w.set_defaults(func=cmd_walk)
    li = sub.add_parser("list", help="core presets and guest programs")
    li.set_defaults(func=cmd_list)
    from .demo import add_demo_parser
    add_demo_parser(sub)
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


if __name__ == "__main__":
    sys.exit(main())
