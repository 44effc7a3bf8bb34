"""Event trace: one record per hardware event, read like ftrace or gem5 --debug-flags=TLB.

Records are tuples (cycle, cpu, kind, fields) appended only when tracing is on, so the
hot paths pay one `if trace is not None` when it is off.
"""
from __future__ import annotations

from enum import Enum


class Ev(Enum):
    FILL = "fill"            # TLB fill after a walk
    SPEC_FILL = "spec-fill"  # speculative walk and fill
    WALK_FAULT = "walk-fault"
    PERM_FAULT = "perm-fault"
    TLBI = "tlbi"
    TLBI_DONE = "tlbi-done"  # completion by DSB
    DSB = "dsb"
    ISB = "isb"
    MSR = "msr"
    SVC = "svc"
    UNDEF = "undef"
    KERNEL = "kernel"        # a named kernel operation (pmap_remove, ...)
    USER = "user"            # a guest quantum at EL0 (instructions executed, where it stopped)


def _fmt_value(k: str, v) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and k in _HEX_FIELDS:
        return f"{k}={v:#x}"
    return f"{k}={v}"


_HEX_FIELDS = frozenset({"va", "pa", "xt", "value", "table", "desc", "asid", "pc"})


class Trace:
    def __init__(self, limit: int | None = None):
        self.records: list[tuple] = []
        self.limit = limit
        self.dropped = 0

    def add(self, cycle: int, cpu: int, ev: Ev, **fields) -> None:
        if self.limit is not None and len(self.records) >= self.limit:
            self.dropped += 1
            return
        self.records.append((cycle, cpu, ev, fields))

    def of_kind(self, kind: Ev) -> list[tuple]:
        return [r for r in self.records if r[2] is kind]

    def format_text(self) -> str:
        lines = []
        for cycle, cpu, kind, f in self.records:
            if kind is Ev.TLBI:                  # the exact mnemonic, as a kernel developer writes it
                rest = dict(f)
                body = f"TLBI {rest.pop('op')} " + " ".join(_fmt_value(k, v) for k, v in rest.items())
            elif kind is Ev.DSB:
                body = f"DSB {f['barrier'].upper()}" + (f" completes={f['completes']}" if f["completes"] else "")
            elif kind is Ev.ISB:
                body = "ISB"
            elif kind is Ev.MSR:
                body = f"MSR {f['reg']}, {f['value']:#x}"
            else:
                body = " ".join(_fmt_value(k, v) for k, v in f.items())
            lines.append(f"{cycle:>12} cpu{cpu} {kind.value:<10} {body}".rstrip())
        return "\n".join(lines)
