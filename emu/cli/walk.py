"""`armmu walk`: one VA through OpenBSD-style user tables, every descriptor read."""
from __future__ import annotations

from ..descriptors import AP_RO_ALL, AP_RW_ALL, describe, level_index
from ..frames import FrameAllocator
from ..pagetables import UserTables
from ..physmem import PhysMem
from ..sysregs import make_ttbr, openbsd_tcr
from ..walker import Access, Fault, Regime, check_access, perms_str, walk
from .common import BadInput, parse_int


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


def add_parser(sub) -> None:
    w = sub.add_parser("walk", help="translate one VA through OpenBSD-style user tables and print the walk",
                       description="Translate one VA through OpenBSD-style user tables and print every "
                                   "descriptor read. Example: armmu walk 0x1000123 --map 0x1000000:rw "
                                   "--access write --el 0")
    w.add_argument("va", help="virtual address (0x hex)")
    w.add_argument("--map", action="append", default=[], metavar="VA:PROT",
                   help="map a user page (PROT r, rw, rx, rwx); default: the VA's page rw")
    w.add_argument("--access", choices=["read", "write", "fetch"], default="read")
    w.add_argument("--el", type=int, choices=[0, 1], default=0)
    w.add_argument("--asid", default="5", help="ASID in TTBR1 (TCR.A1=1)")
    w.set_defaults(func=cmd_walk)
