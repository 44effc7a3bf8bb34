"""Trace files of a run: text, jsonl or Perfetto (Chrome trace-event JSON), written as the run goes.

A sink is an emu.trace.Trace whose add() filters, formats and writes each record at
once (line-buffered), so a trace is complete up to the moment a run fails; close(reason)
writes a final ``end`` event saying why the run ended and closes the file (the CLI calls
it on every exit path). Only TLBI records are kept in memory (the checker's story of a
violation looks for the last TLBI that could have removed an entry).

Kernel steps become nested slices in the Perfetto output. The kernel model's paths are
generators (pmap_py/kern), so the Python call stack at a record *is* the kernel's call
stack at that moment, like ftrace's function_graph: each record of a CPU's current proc
is tagged with the chain of kernel functions it was issued from (KERNEL_STEPS), a
function's slice begins at the first record issued inside it and ends at the first
record of that CPU issued outside it (a user quantum, another proc after a switch).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

from ..trace import Ev, Trace
from .common import BadInput, parse_int

FORMATS = ("text", "jsonl", "perfetto")
KINDS = tuple(e.value for e in Ev) + ("insn", "end")

# The kernel functions that are steps worth a slice (pmap_py/kern, uvm, pmap, strategy hooks).
KERNEL_STEPS = frozenset({
    "syscall", "trap_fault", "ast", "sigexit", "exit1", "single_thread_set", "tsleep", "sched_exit",
    "reaper", "dowait4", "exit1_purge", "thread_exit", "cpu_exit", "uvm_exit", "teardown", "spin",
    "uvm_purge", "uvmspace_purge", "uvmspace_free", "uvm_map_teardown", "pmap_remove_chunked",
    "uvm_uarea_free", "uvm_fault", "uvm_unmap", "uvm_map_protect", "exit_mmap", "mmdrop",
    "pmap_remove_pages", "pmap_release", "pmap_exit", "pmap_purge", "pmap_purge_nowait", "pmap_remove",
    "pmap_destroy", "pmap_destroy_noflush", "pmap_deactivate", "pmap_activate", "pmap_setttb",
    "pmap_free_asid", "pmap_allocate_asid", "pmap_kremove", "pmap_kenter_pa", "pmap_protect",
    "pmap_fault_fixup", "pmap_enter", "cpu_switchto", "acquire"})
_STEP_CODE = "_step"                 # Kernel._step(self, ci): one step of the CPU furthest behind
_CPU_FILE = os.path.join("emu", "cpu.py")      # Cpu.run: a guest quantum
_HEX = frozenset({"va", "pa", "xt", "value", "table", "desc", "asid", "pc", "sva", "eva", "pt0pa",
                  "x0", "x8", "desc_pa"})
_MNEMONIC = {Ev.ISB: "ISB"}
_USER_SIDE = (Ev.FILL, Ev.SPEC_FILL, Ev.WALK_FAULT, Ev.PERM_FAULT, Ev.SVC, Ev.UNDEF)


# ---------------------------------------------------------------- filter
@dataclass
class TraceFilter:
    """--trace-filter cpu=1,asid=0x5,kind=tlbi,va=0x400000-0x500000: a record passes when it
    has every field named and each matches (a key given twice: either value)."""
    cpus: set = field(default_factory=set)
    asids: set = field(default_factory=set)
    kinds: set = field(default_factory=set)
    vas: list = field(default_factory=list)      # [(lo, hi)] half-open

    @classmethod
    def parse(cls, spec: str | None) -> "TraceFilter":
        f = cls()
        if not spec:
            return f
        for part in spec.split(","):
            key, eq, value = part.strip().partition("=")
            if not eq or not value:
                raise BadInput(f"--trace-filter {spec!r}: {part!r} is not KEY=VALUE "
                               "(keys cpu, asid, kind, va; e.g. cpu=1,kind=tlbi,va=0x400000-0x500000)")
            if key == "cpu":
                n = parse_int(value, "--trace-filter cpu")
                if n < 0:
                    raise BadInput(f"--trace-filter cpu={value}: a CPU number is 0 or more")
                f.cpus.add(n)
            elif key == "asid":
                n = parse_int(value, "--trace-filter asid")
                if not 0 <= n < 1 << 16:
                    raise BadInput(f"--trace-filter asid={value}: an ASID is 0 to 0xffff")
                f.asids.add(n)
            elif key == "kind":
                if value not in KINDS:
                    raise BadInput(f"--trace-filter kind={value}: one of {', '.join(KINDS)}")
                f.kinds.add(value)
            elif key == "va":
                lo_s, dash, hi_s = value.partition("-")
                lo = parse_int(lo_s, "--trace-filter va")
                hi = parse_int(hi_s, "--trace-filter va") if dash else lo + 1
                if not 0 <= lo < hi <= 1 << 64:
                    raise BadInput(f"--trace-filter va={value}: want LO-HI with LO < HI")
                f.vas.append((lo, hi))
            else:
                raise BadInput(f"--trace-filter: unknown key {key!r} (keys cpu, asid, kind, va)")
        return f

    def passes(self, cpu: int, kind: str, f: dict) -> bool:
        if self.cpus and cpu not in self.cpus:
            return False
        if self.kinds and kind not in self.kinds:
            return False
        if self.asids and f.get("asid") not in self.asids:
            return False
        if self.vas:
            va = f.get("va", f.get("sva"))
            if not isinstance(va, int) or not any(lo <= va < hi for lo, hi in self.vas):
                return False
        return True


# ---------------------------------------------------------------- formatting
def _walk_str(reads) -> str:
    return ";".join(f"L{lvl}@{pa:#x}={val:#x}" for pa, val, lvl in reads)


def _value(k: str, v) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int) and k in _HEX:
        return f"{v:#x}"
    if k == "walk":
        return _walk_str(v)
    if isinstance(v, str) and (" " in v or not v):
        return json.dumps(v)
    return str(v)


def event_name(kind: Ev, f: dict) -> tuple[str, dict]:
    """The event column of the text format (the exact mnemonic for instructions) and the
    fields left for key=value."""
    rest = dict(f)
    if kind is Ev.TLBI:
        return f"TLBI {rest.pop('op')}", rest
    if kind is Ev.DSB:
        return f"DSB {rest.pop('barrier').upper()}", rest
    if kind is Ev.MSR:
        return f"MSR {rest.pop('reg')}", rest
    if kind is Ev.KERNEL:
        return rest.pop("op"), rest
    if kind is Ev.SVC:
        return f"SVC #{rest.pop('imm')}", rest
    return _MNEMONIC.get(kind, kind.value), rest


def text_line(cycle: int, cpu, kind: Ev, f: dict) -> str:
    name, rest = event_name(kind, f)
    where = f"cpu{cpu}" if isinstance(cpu, int) else str(cpu)
    body = " ".join(f"{k}={_value(k, v)}" for k, v in rest.items())
    return f"{cycle:>12} {where:<5} {name} {body}".rstrip()


def _jsonable(v):
    if isinstance(v, Ev):
        return v.value
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return str(v)


def json_record(cycle: int, cpu, kind: Ev | str, f: dict) -> dict:
    out = {"cycle": cycle, "cpu": cpu, "event": kind.value if isinstance(kind, Ev) else kind}
    if isinstance(kind, Ev):
        name, _ = event_name(kind, f)
        out["name"] = name
    for k, v in f.items():
        if k == "walk":
            out[k] = [{"level": lvl, "desc_pa": pa, "desc": val} for pa, val, lvl in v]
        else:
            out[k] = _jsonable(v)
    return out


def with_fsc(ev: Ev, f: dict) -> dict:
    """A fault record with its fault status code (DFSC/IFSC = kind base + level)."""
    from ..walker import FSC_BASE, FaultKind
    kind = FaultKind.PERMISSION if ev is Ev.PERM_FAULT else FaultKind(f.get("fault"))
    level = f.get("level")
    return {**f, "fsc": f"{FSC_BASE[kind] + level:#04x}"} if isinstance(level, int) else f


# ---------------------------------------------------------------- kernel stacks
@dataclass
class StepContext:
    """Where the code that issued a record runs: inside a kernel-loop step or not, in a
    guest quantum or kernel code, and the kernel functions (outermost first) as frames."""
    stepping: bool
    user: bool
    frames: list


def step_context(depth: int = 2) -> StepContext:
    """The kernel call stack at this moment (see the module docstring). A record is
    stamped with the CPU that issued it, the one Kernel._step is running; `user`: it was
    issued inside a guest quantum (Cpu.run is on the stack: Unicorn's hooks call back
    from inside it)."""
    frames = []
    user = False
    f = sys._getframe(depth)
    while f is not None:
        code = f.f_code
        name = code.co_name
        if name == _STEP_CODE:
            frames.reverse()
            return StepContext(True, user, frames)
        if name == "run" and code.co_filename.endswith(_CPU_FILE):
            user = True
        elif name in KERNEL_STEPS:
            frames.append(f)
        f = f.f_back
    return StepContext(False, False, [])


# ---------------------------------------------------------------- sinks
class TraceSink(Trace):
    """A trace written as it goes. add() is what the machine and kernel call; the file is
    opened by the constructor (BadInput if it cannot be) and closed by close(reason)."""

    def __init__(self, path: str | None, filt: TraceFilter | None = None, freq_ghz: float = 2.0,
                 ncpus: int = 1, title: str = "armmu run"):
        super().__init__()
        self.path = path
        self.filter = filt or TraceFilter()
        self.freq_ghz, self.ncpus, self.title = freq_ghz, ncpus, title
        self.machine = None
        self.kernel = None
        self.dump = None                    # fn(cycle, cpu, fields) when a record's op is dump_at
        self.dump_at: str | None = None
        self.closed = False
        self.fh = None
        if path is not None:
            try:
                self.fh = open(path, "w", buffering=1, encoding="utf-8")
            except OSError as e:
                raise BadInput(f"--trace {path}: cannot write: {e.strerror or e}") from None
            self.start()

    def start(self) -> None:
        """What the file begins with."""

    def attach(self, machine, kernel) -> None:
        self.machine, self.kernel = machine, kernel

    def add(self, cycle: int, cpu: int, ev: Ev, **fields) -> None:
        if ev is Ev.TLBI:
            self.records.append((cycle, cpu, ev, fields))
        if self.dump is not None and ev is Ev.KERNEL and fields.get("op") == self.dump_at:
            self.dump(cycle, cpu, fields)
        if self.fh is not None and not self.closed:
            if ev is Ev.WALK_FAULT or ev is Ev.PERM_FAULT:
                fields = with_fsc(ev, fields)
            self.emit(cycle, cpu, ev, fields)

    def emit(self, cycle, cpu, ev, fields) -> None:
        if self.filter.passes(cpu, ev.value, fields):
            self.write_record(cycle, cpu, ev, fields)

    def insn(self, cycle: int, cpu: int, pc: int, text: str) -> None:
        if self.fh is not None and not self.closed and self.filter.passes(cpu, "insn", {"va": pc}):
            self.write_insn(cycle, cpu, pc, text)

    def now(self) -> int:
        return max((c.cycles for c in self.machine.cpus), default=0) if self.machine is not None else 0

    def close(self, reason: str) -> None:
        """The final `end` event (why the run ended), then flush and close. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.fh is None:
            return
        try:
            self.write_end(self.now(), reason)
        finally:
            self.fh.close()

    def discard(self) -> None:
        """Bad input found before the run started: no file is left behind."""
        import os
        self.closed = True
        if self.fh is not None:
            self.fh.close()
            try:
                os.unlink(self.path)
            except OSError:
                pass


class TextSink(TraceSink):
    def write_record(self, cycle, cpu, ev, fields) -> None:
        self.fh.write(text_line(cycle, cpu, ev, fields) + "\n")

    def write_insn(self, cycle, cpu, pc, text) -> None:
        self.fh.write(f"{cycle:>12} cpu{cpu:<2} insn pc={pc:#x} {text}\n")

    def write_end(self, cycle, reason) -> None:
        self.fh.write(f"{cycle:>12} -     end reason={json.dumps(reason)}\n")


class JsonlSink(TraceSink):
    def write_record(self, cycle, cpu, ev, fields) -> None:
        self.fh.write(json.dumps(json_record(cycle, cpu, ev, fields)) + "\n")

    def write_insn(self, cycle, cpu, pc, text) -> None:
        self.fh.write(json.dumps({"cycle": cycle, "cpu": cpu, "event": "insn", "pc": pc, "insn": text}) + "\n")

    def write_end(self, cycle, reason) -> None:
        self.fh.write(json.dumps({"cycle": cycle, "cpu": None, "event": "end", "reason": reason}) + "\n")


PID_MACHINE, PID_KERNEL, PID_THREADS = 1, 2, 100        # a workload process: 100 + its pid
TID_COUNTERS, TID_REAPER = 0, 1


class PerfettoSink(TraceSink):
    """Chrome trace-event JSON (the array form, which Perfetto and chrome://tracing read even
    without the closing bracket). Process 1 "machine": one thread track per CPU (tid cpu+1)
    with its kernel steps as B/E slices, guest quanta as X slices, TLBIs, TTBR writes,
    barriers and faults as thread-scoped instants, and counter tracks (live ASIDs, TLB
    entries per CPU). Process 2 "kernel": the reaper thread's steps wherever it runs.
    Process 100 + pid for each workload process: a track per thread, its kernel slices
    kept open while it sleeps (exit1 across single_thread_set's wait), its guest quanta.
    Timestamps: cycles through the core's frequency, in microseconds."""

    def __init__(self, *a, **kw):
        self._first = True
        self.stacks: dict = {}          # (pid, tid) -> [(frame, name)] open B slices
        self.last_ts: dict = {}         # (pid, tid) -> last timestamp written
        self.pending: dict = {}         # cpu -> records of a guest quantum not yet written
        self.asids = 0
        self.tlb_seen: dict = {}        # cpu -> last occupancy written
        self.idle_seen: dict = {}       # cpu -> its idle cycles at its last record
        self.named: set = set()         # workload (pid, tid) tracks given their metadata
        super().__init__(*a, **kw)

    def start(self) -> None:
        self.fh.write("[\n")
        meta = [(PID_MACHINE, TID_COUNTERS, "process_name", {"name": f"machine: {self.title}"}),
                (PID_MACHINE, TID_COUNTERS, "thread_name", {"name": "counters"}),
                (PID_KERNEL, TID_REAPER, "process_name", {"name": "kernel threads"}),
                (PID_KERNEL, TID_REAPER, "thread_name", {"name": "reaper"})]
        for i in range(self.ncpus):
            meta += [(PID_MACHINE, i + 1, "thread_name", {"name": f"cpu{i}"}),
                     (PID_MACHINE, i + 1, "thread_sort_index", {"sort_index": i + 1})]
        for pid, tid, name, args in meta:
            self._event({"name": name, "ph": "M", "ts": 0, "pid": pid, "tid": tid, "args": args})

    def ts(self, cycle: int) -> float:
        return round(cycle / (self.freq_ghz * 1000.0), 4)

    def _event(self, e: dict, merged: bool = False) -> None:
        """Write one event. merged: a track fed by several CPU clocks (the reaper, which
        migrates; the counters; the end), which the kernel model keeps only loosely in step:
        its events are held at the track's last timestamp rather than run back. A CPU's own
        track needs no such help: its records come in the order of its clock."""
        if e["ph"] != "M":
            track = (e["pid"], e["tid"]) if e["ph"] != "C" else (e["pid"], e["name"])
            if merged:
                e["ts"] = max(e["ts"], self.last_ts.get(track, 0.0))
            # on a merged track nothing may start inside a quantum's X slice
            self.last_ts[track] = e["ts"] + (e["dur"] if merged and e["ph"] == "X" else 0)
        self.fh.write(("" if self._first else ",\n") + json.dumps(e))
        self._first = False

    # slices ---------------------------------------------------------
    def _sync(self, track: tuple, frames: list, ts: float, end_ts: float | None = None,
              proc: str | None = None) -> None:
        """Close the open slices that are no longer on the stack (LIFO) at end_ts (default
        ts), open the new ones at ts (args: the proc running them)."""
        merged = track[0] != PID_MACHINE                # the reaper's and the threads' tracks
        stack = self.stacks.setdefault(track, [])
        keep = 0
        while keep < len(stack) and keep < len(frames) and stack[keep][0] is frames[keep]:
            keep += 1
        end = ts if end_ts is None else end_ts
        while len(stack) > keep:
            _, name = stack.pop()
            self._event({"name": name, "ph": "E", "ts": end, "pid": track[0], "tid": track[1]}, merged)
        for fr in frames[keep:]:
            name = fr.f_code.co_name
            stack.append((fr, name))
            b = {"name": name, "cat": "kernel", "ph": "B", "ts": ts, "pid": track[0], "tid": track[1]}
            if proc:
                b["args"] = {"proc": proc}
            self._event(b, merged)

    def _kernel_frames(self, ctx: StepContext, cpu: int) -> list:
        return ctx.frames if self.filter.passes(cpu, "kernel", {}) else []

    def emit(self, cycle, cpu, ev, f) -> None:
        if self.closed:
            return
        ctx = step_context()
        if ctx.stepping and ev is not Ev.SPEC_FILL and ev is not Ev.FILL:
            if ctx.user and ev is not Ev.USER:          # inside a guest quantum: after its X slice
                self.pending.setdefault(cpu, []).append((cycle, ev, f))
                return
            ts = self.ts(cycle)
            frames = [] if ev is Ev.USER else self._kernel_frames(ctx, cpu)
            track = (PID_MACHINE, cpu + 1)
            end_ts = None
            if self.kernel is not None:          # it idled since its last record: slices ended there
                idle = self.kernel.cpus[cpu].idle_cycles
                if idle != self.idle_seen.get(cpu, idle):
                    end_ts = self.last_ts.get(track)
                self.idle_seen[cpu] = idle
            cur = self.kernel.cpus[cpu].ci_curproc if self.kernel is not None else None
            self._sync(track, frames, ts, end_ts, cur.p_name if cur is not None else None)
            reaper = cur is not None and cur is self.kernel.reaper
            if reaper or self.stacks.get((PID_KERNEL, TID_REAPER)):
                names = [fr.f_code.co_name for fr in frames] if reaper else []
                first = names.index("reaper") if "reaper" in names else len(frames)
                self._sync((PID_KERNEL, TID_REAPER), frames[first:] if reaper else [], ts)
            if cur is not None and cur.p_p in self.kernel.workload:
                self._thread(cur, ev, f, frames, ts)
        if ev is Ev.USER:
            self._quantum(cycle, cpu, f)
            return
        self._instant(cycle, cpu, ev, f)
        if ev is Ev.TLBI_DONE and self.machine is not None:
            for c in self.machine.cpus:
                self._counters(c.index, cycle)
        if ev is Ev.KERNEL and f.get("op") in ("pmap_allocate_asid", "pmap_free_asid"):
            self.asids += 1 if f["op"] == "pmap_allocate_asid" else -1
            self._event({"name": "live ASIDs", "ph": "C", "ts": self.ts(cycle), "pid": PID_MACHINE,
                         "tid": TID_COUNTERS, "args": {"asids": self.asids}}, merged=True)

    def _thread(self, p, ev, f, frames, ts) -> None:
        """A workload thread's own track (process 100 + pid): its kernel slices stay open
        while it sleeps or waits for a CPU, and end when it returns to user mode or dies."""
        track = (PID_THREADS + p.p_p.ps_pid, p.p_tid)
        if track not in self.named:
            self.named.add(track)
            for name, args in (("process_name", {"name": f"{p.p_p} (pid {p.p_p.ps_pid})"}),
                               ("thread_name", {"name": p.p_name})):
                self._event({"name": name, "ph": "M", "ts": 0, "pid": track[0], "tid": track[1], "args": args})
        if frames and frames[0].f_code.co_name == "cpu_switchto":   # the switch away from it
            if p.p_stat.name == "SDEAD":              # after sched_exit: gone for good
                self._sync(track, [], ts)
            return                                    # asleep or preempted: still in its kernel path
        self._sync(track, frames, ts)

    def _quantum(self, cycle, cpu, f) -> None:
        """A guest quantum: an X slice, then what happened inside it, then the TLB counters."""
        end = self.machine.cpus[cpu].cycles if self.machine is not None else cycle
        if self.filter.passes(cpu, "user", f):
            start, stop = self.ts(cycle), self.ts(end)        # dur from the rounded ends: no overlap
            x = {"name": f"user {f.get('proc')}", "cat": "user", "ph": "X", "ts": start,
                 "dur": round(max(0.0, stop - start), 4), "pid": PID_MACHINE,
                 "tid": cpu + 1, "args": {"insns": f.get("insns"), "stop_pc": hex(f.get("pc") or 0)}}
            self._event(dict(x))
            p = self.kernel.cpus[cpu].ci_curproc if self.kernel is not None else None
            if p is not None and p.p_p in self.kernel.workload:
                self._event({**x, "name": "user", "pid": PID_THREADS + p.p_p.ps_pid, "tid": p.p_tid}, merged=True)
        for c, e2, f2 in self.pending.pop(cpu, []):
            self._instant(c, cpu, e2, f2)
        self._counters(cpu, end)

    def _instant(self, cycle, cpu, ev, f) -> None:
        if ev in (Ev.FILL, Ev.SPEC_FILL, Ev.KERNEL) or not self.filter.passes(cpu, ev.value, f):
            return                          # fills: the TLB counters; kernel: the slices
        name, rest = event_name(ev, f)
        self._event({"name": name, "cat": ev.value, "ph": "i", "s": "t", "ts": self.ts(cycle),
                     "pid": PID_MACHINE, "tid": cpu + 1,
                     "args": {k: (_value(k, v) if k in _HEX or k == "walk" else _jsonable(v))
                              for k, v in rest.items()}})

    def _counters(self, cpu: int, cycle: int) -> None:
        if self.machine is None:
            return
        t = self.machine.cpus[cpu].tlb
        occ = (len(t.l2), len(t.dtlb), len(t.itlb))
        if self.tlb_seen.get(cpu) == occ:
            return
        self.tlb_seen[cpu] = occ
        self._event({"name": f"cpu{cpu} TLB entries", "ph": "C", "ts": self.ts(cycle), "pid": PID_MACHINE,
                     "tid": cpu + 1, "args": {"L2": occ[0], "L1D": occ[1], "L1I": occ[2]}},
                    merged=True)             # also changed at another CPU's DSB, on that CPU's clock

    def write_insn(self, cycle, cpu, pc, text) -> None:
        pass                                # instructions: text and jsonl only (too many for a timeline)

    def write_end(self, cycle, reason) -> None:
        for cpu, recs in list(self.pending.items()):     # a quantum the run ended inside
            for c, e2, f2 in recs:
                self._instant(c, cpu, e2, f2)
        self.pending.clear()
        ts = self.ts(cycle)
        for track in list(self.stacks):
            self._sync(track, [], max(ts, self.last_ts.get(track, 0.0)))
        self._event({"name": "end", "cat": "run", "ph": "i", "s": "g", "ts": ts, "pid": PID_MACHINE,
                     "tid": TID_COUNTERS, "args": {"reason": reason}}, merged=True)
        self.fh.write("\n]\n")


def open_sink(path: str | None, fmt: str = "text", filt: TraceFilter | None = None, **meta) -> TraceSink:
    """The sink for --trace PATH --trace-format FMT (path None: no file, dumps only);
    meta: freq_ghz, ncpus, title."""
    cls = {"text": TextSink, "jsonl": JsonlSink, "perfetto": PerfettoSink}.get(fmt)
    if cls is None:
        raise BadInput(f"--trace-format {fmt}: one of {', '.join(FORMATS)}")
    return cls(path, filt, **meta)


# ---------------------------------------------------------------- guest instructions
def trace_instructions(machine, sink: TraceSink) -> None:
    """--trace-insns: every guest instruction, disassembled with capstone, into the sink.
    A Unicorn code hook per CPU (an observer: it changes no state and no count); the cycle
    stamp is the CPU's clock plus base CPI per instruction so far in the quantum (Cpu.run
    adds the instructions' cycles when the quantum ends)."""
    from capstone import CS_ARCH_ARM64, CS_MODE_ARM, Cs
    from unicorn import UC_HOOK_CODE
    cs = Cs(CS_ARCH_ARM64, CS_MODE_ARM)
    text_of: dict = {}
    in_quantum = [0] * len(machine.cpus)          # instructions so far in each CPU's quantum
    seen_at = [None] * len(machine.cpus)          # the clock when the quantum's count started

    def hook_for(cpu):
        cpi = cpu.cost.base_cpi
        i = cpu.index

        def on_insn(uc, address, size, _):
            if seen_at[i] != cpu.insns:           # Cpu.run counts retired instructions per quantum
                seen_at[i] = cpu.insns
                in_quantum[i] = 0
            word = cpu._read_code(address)
            text = text_of.get(word)
            if text is None:
                d = next(cs.disasm(word, address), None)
                text = text_of[word] = f"{d.mnemonic} {d.op_str}".strip() if d else f".word {word.hex()}"
            sink.insn(cpu.cycles + in_quantum[i] * cpi, i, address, text)
            in_quantum[i] += 1
        return on_insn

    for cpu in machine.cpus:
        cpu.uc.hook_add(UC_HOOK_CODE, hook_for(cpu))
