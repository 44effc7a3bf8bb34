r"""Assemble AArch64 guest programs with keystone, and verify the result with capstone.

``assemble(source, base, name, defines)`` returns a :class:`Program` or raises
:class:`AssembleError` whose message is one line, ``name:LINE: message``.

Keystone 0.9.2 (AArch64) has traps that this module guards against; each was checked on
this machine:

* A branch/adr/tbz/cbz/ldr-literal to a *label or symbol* out of range does not raise:
  LLVM prints ``LLVM ERROR: fixup value out of range`` and **exits the process**.
  It also aborts for a branch at a misaligned address, even ``b .``. So every
  PC-relative instruction is first replaced by ``nop`` (same size) in a layout pass
  whose appended ``.quad`` table gives every label, constant and target; targets and
  alignment are checked, and only then is the real program assembled.
* The same with a *numeric* target (``b 0x10000000``) silently assembles to ``b #0``,
  and a label just out of range (``cbz`` at +1 MiB+4) silently wraps to a wrong target.
* ``adrp`` is mis-assembled when base != 0 (the page comes out wrong); caught by the
  capstone check below (so adrp is effectively unusable; use adr or movz/movk).
* ``.inst``, ``.text`` (anywhere, even the first line), ``.macro`` expansions and sections
  silently produce **no bytes**. ``.inst`` and ``udf #imm`` are rewritten to ``.word``;
  ``.text`` is dropped; ``.macro``/``.rept``/``.if``/``.section``/``.data``/``.bss`` are
  rejected with an error.
* Keystone's ``sym_resolver`` option is process-global: it outlives its ``Ks`` object
  (a dangling callback) and makes later assemblies in other instances fail; not used.
* ``udf``, ``csdb``, ``sb`` and the v8.1 LSE atomics (``cas``, ``ldadd``...) are unknown.
* Numeric local labels (``1:`` / ``1b`` / ``1f``) are rejected by keystone; this module
  renames them, so they work.
* Keystone **hangs** (infinite loop) on a statement that starts with punctuation
  (``\``, ``(``, ``+``, ``[``...), on malformed expressions in directives
  (``.quad (1+)``) and on huge ``.space``/``.align``; it silently drops a statement
  with trailing junk (``add x0, x1, x2)``), or returns *no output at all and no error*
  (``mov x9, #1)``), and drops a malformed ``.equ``. All are refused here before
  keystone sees them, or caught afterwards (size and sentinel checks) with the line.
* ``:lo12:``-style relocation modifiers abort the process: refused.
* Branches/adr to a ``.equ`` address defined *after* the use come out wrong (keystone
  adds the base): caught by the capstone check.
* Constants used in immediates must be defined (``.equ``) *before* use; a forward
  reference is an error ("invalid operand"), not a fixup.
* ``.word`` of a value that does not fit is truncated silently: checked here.
* An instruction placed after an odd-sized datum (``.byte``, ``.ascii``) is emitted
  unaligned without complaint: checked here (use ``.balign 4``).
* ``ldr xN, =expr`` works (literal pool after the code, or a ``mov`` when it fits);
  ``.ltorg``/``.pool`` are rejected (the pool always goes at the end).
* Supported data: ``.quad/.xword/.8byte/.dword``, ``.word/.long/.int/.4byte``,
  ``.hword/.short/.2byte``, ``.byte``, ``.space/.skip/.zero``, ``.fill``, ``.ascii``,
  ``.asciz/.string``, ``.align N`` (= 2**N bytes), ``.balign``, ``.p2align`` (sizes and
  alignments must be constant: numbers and .equ constants, at most 16 MiB / 64 KiB);
  ``.equ/.set/.equiv`` and ``NAME = expr``. Alignment is relative to ``base``, so use a
  page-aligned base. Comments: ``//``, ``/* */`` and lines starting with ``#``
  (C preprocessor directives are rejected: there is no cpp). ``;`` separates statements.
  ``.global/.globl/.type/.size/.local/.weak/.hidden/.arch/.cfi_*`` are ignored.
* Encodings of system instructions (MSR/MRS/TLBI/AT/DC/IC) are checked against
  capstone's decoding of the emitted word (hand encodings of AT and MSR ELR_EL1 were
  wrong in this project before; keystone's own encodings of them are right).

After assembling, every instruction word is decoded with capstone: undecodable words,
branch targets that differ from the label in the source, wrong literal-pool values and
mis-encoded system instructions are errors.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from capstone import CS_ARCH_ARM64, CS_MODE_ARM, Cs
from capstone.arm64 import ARM64_OP_IMM
from keystone import KS_ARCH_ARM64, KS_MODE_LITTLE_ENDIAN, Ks, KsError

from . import syscalls

PAGE_SIZE = 4096
USER_VA_LIMIT = 1 << 48       # no region may end above this (the loader may demand less, e.g. 39 bits)
MAX_SPACE = 16 << 20           # largest .space/.fill accepted (keystone is slow or hangs beyond)
BARRIER_MNEMONICS = frozenset({"dsb", "dmb", "isb", "ssbb", "pssbb", "sb", "csdb"})
SYS_MNEMONICS = frozenset({"tlbi", "at", "dc", "ic", "sys", "sysl", "msr", "mrs"})
RESERVED_PREFIX = "__armmu_"
_CHECKED_SYS = frozenset({"tlbi", "at", "dc", "ic", "msr", "mrs"})


class AssembleError(ValueError):
    """A guest source could not be assembled; ``str(e)`` is ``name:LINE: message``."""

    def __init__(self, name: str, line: int, message: str):
        self.name, self.line, self.message = name, line, message
        super().__init__(f"{name}:{line}: {message}")


@dataclass(frozen=True)
class Region:
    """One virtual memory region a program expects mapped."""

    name: str
    start: int
    size: int
    prot: str           # "r-x" or "rw-"

    @property
    def end(self) -> int:
        return self.start + self.size

    def __contains__(self, va: int) -> bool:
        return self.start <= va < self.end


@dataclass
class Program:
    """An assembled guest program.

    ``code`` is loaded at ``base``. ``symbols`` maps every label to its absolute VA,
    ``constants`` every ``.equ``/``.set`` name to its value. ``barriers`` lists
    ``(va, mnemonic)`` for every DSB/DMB/ISB (the full text, e.g. ``"dsb ish"``, is
    ``insns[va]``); ``sys_insns`` lists ``(va, text)`` for TLBI/AT/DC/IC/SYS/MSR/MRS;
    ``svcs`` the VA of every ``svc``. ``insns`` maps each instruction VA to capstone's
    text and ``lines`` to its source line.
    """

    code: bytes
    base: int
    symbols: dict[str, int]
    entry: int
    barriers: list[tuple[int, str]] = field(default_factory=list)
    sys_insns: list[tuple[int, str]] = field(default_factory=list)
    svcs: list[int] = field(default_factory=list)
    constants: dict[str, int] = field(default_factory=dict)
    insns: dict[int, str] = field(default_factory=dict)
    lines: dict[int, int] = field(default_factory=dict)
    name: str = "<guest>"
    constant_lines: dict[str, int] = field(default_factory=dict)   # where each constant is defined

    @property
    def size(self) -> int:
        return len(self.code)

    @property
    def end(self) -> int:
        return self.base + len(self.code)

    @cached_property
    def layout(self) -> dict[str, Region]:
        """Regions to map: ``code`` (r-x, whole pages from base), and, when the program
        defines them, ``heap`` = [HEAP_BASE, HEAP_BASE+HEAP_SIZE) and
        ``stack`` = [STACK_TOP-STACK_SIZE, STACK_TOP) (both rw-, sizes rounded up to
        pages; a zero-sized heap is left out). Raises AssembleError (pointing at the
        constant) for misaligned, negative, overlapping or beyond-48-bit regions."""
        start = self.base & ~(PAGE_SIZE - 1)
        regions = {"code": Region("code", start, _page_up(self.end) - start, "r-x")}
        c = self.constants
        if "HEAP_BASE" in c:
            base, size = c["HEAP_BASE"], c.get("HEAP_SIZE", PAGE_SIZE)
            self._layout_check("HEAP_BASE", base % PAGE_SIZE == 0 and base >= 0, f"HEAP_BASE {base:#x} is not page aligned")
            self._layout_check("HEAP_SIZE", size >= 0, f"HEAP_SIZE {size} is negative")
            if size:
                regions["heap"] = Region("heap", base, _page_up(size), "rw-")
        if "STACK_TOP" in c:
            top, size = c["STACK_TOP"], c.get("STACK_SIZE", PAGE_SIZE)
            self._layout_check("STACK_TOP", top % PAGE_SIZE == 0 and top > 0, f"STACK_TOP {top:#x} is not page aligned")
            self._layout_check("STACK_SIZE", 0 < size <= top, f"STACK_SIZE {size:#x} must be 1..STACK_TOP")
            size = _page_up(size)
            regions["stack"] = Region("stack", top - size, size, "rw-")
        for r in regions.values():
            key = {"heap": "HEAP_SIZE", "stack": "STACK_TOP"}.get(r.name, "")
            self._layout_check(key, r.end <= USER_VA_LIMIT, f"{r.name} region ends at {r.end:#x}, beyond "
                                                             f"the 48-bit user address space")
        rs = sorted(regions.values(), key=lambda r: r.start)
        for a, b in zip(rs, rs[1:]):
            key = {"heap": "HEAP_BASE", "stack": "STACK_TOP"}.get(b.name if b.name != "code" else a.name, "")
            self._layout_check(key, a.end <= b.start, f"{a.name} region [{a.start:#x}, {a.end:#x}) overlaps "
                                                       f"{b.name} region [{b.start:#x}, {b.end:#x})")
        return regions

    def _layout_check(self, const: str, ok: bool, msg: str) -> None:
        if not ok:
            raise AssembleError(self.name, self.constant_lines.get(const, 0), f"bad layout: {msg}")

    def line_of(self, va: int) -> int | None:
        """Source line of the instruction at ``va`` (None for data / outside)."""
        return self.lines.get(va)

    def syscall_return(self, svc_va: int) -> int:
        """Where the kernel resumes after the ``svc`` at ``svc_va``: past OpenBSD's
        ``dsb nsh; isb`` speculation barrier if it follows, else the next instruction."""
        if (self.insns.get(svc_va + 4), self.insns.get(svc_va + 8)) == syscalls.SVC_SPEC_BARRIER:
            return svc_va + 4 + syscalls.SVC_RESUME_SKIP
        return svc_va + 4

    def disassemble(self) -> str:
        """A listing ``va: text  // line N`` of every instruction (data omitted)."""
        return "\n".join(f"{va:#x}: {t:32s} // line {self.lines.get(va)}" for va, t in sorted(self.insns.items()))


# ---------------------------------------------------------------------------------------
# Light parser

_IDENT_START = "A-Za-z_.$"
_LABEL_RE = re.compile(rf"\s*([{_IDENT_START}][\w.$]*|\d+)\s*:(?!:)")
_ASSIGN_RE = re.compile(rf"^([{_IDENT_START}][\w.$]*)\s*=\s*(.+)$")
_IDENT_RE = re.compile(rf"(?<![\w.$])([{_IDENT_START}][\w.$]*)")
_HERE_RE = re.compile(r"(?<![\w.$])\.(?![\w.$])")
_LOCAL_REF_RE = re.compile(r"(?<![\w.$])(\d+)([bf])(?![\w.$])")
_CPP_RE = re.compile(r"#\s*(include|define|undef|if|ifdef|ifndef|else|elif|endif|error|pragma)\b")
_COND = "eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le|al|nv"
_BCOND_RE = re.compile(rf"b\.?({_COND})")
_NUM_RE = re.compile(r"\b(0x[0-9a-f]+|\d+)\b")
_GENERIC_SYSREG_RE = re.compile(r"\bs\d_\d_c\d+_c\d+_\d\b")

_DATA_WIDTH = {".quad": 8, ".xword": 8, ".8byte": 8, ".dword": 8,
               ".word": 4, ".long": 4, ".int": 4, ".4byte": 4, ".inst": 4,
               ".hword": 2, ".short": 2, ".2byte": 2, ".byte": 1}
_PASS_DIRECTIVES = {".space", ".skip", ".zero", ".fill", ".align", ".balign", ".p2align",
                    ".ascii", ".asciz", ".string"}
_IGNORED_DIRECTIVES = {".text", ".global", ".globl", ".type", ".size", ".local", ".weak",
                       ".hidden", ".arch", ".file", ".ident", ".cpu"}
_CONST_DIRECTIVES = {".equ", ".set", ".equiv"}
_REJECTED_DIRECTIVES = {
    ".data": "sections are not supported (keystone emits nothing after .text/.data); put data after the code",
    ".bss": "sections are not supported; put data after the code (.space)",
    ".section": "sections are not supported; put data after the code",
    ".rodata": "sections are not supported; put data after the code",
    ".pushsection": "sections are not supported",
    ".popsection": "sections are not supported",
    ".previous": "sections are not supported",
    ".macro": "macros are not supported (keystone silently emits no code for macro expansions)",
    ".endm": "macros are not supported",
    ".rept": ".rept is not supported; write the instructions out",
    ".irp": ".irp is not supported", ".irpc": ".irpc is not supported", ".endr": ".endr is not supported",
    ".if": "conditional assembly is not supported", ".ifdef": "conditional assembly is not supported",
    ".ifndef": "conditional assembly is not supported", ".else": "conditional assembly is not supported",
    ".endif": "conditional assembly is not supported",
    ".include": ".include is not supported", ".incbin": ".incbin is not supported",
    ".ltorg": "literal pools are always placed at the end; .ltorg/.pool are not supported",
    ".pool": "literal pools are always placed at the end; .ltorg/.pool are not supported",
    ".org": ".org is not supported; use .space",
}
# target kind -> (low, high) byte-offset range and required alignment
_RANGES = {"b26": (-(1 << 27), 1 << 27, 4), "b19": (-(1 << 20), 1 << 20, 4),
           "b14": (-(1 << 15), 1 << 15, 4), "lit19": (-(1 << 20), 1 << 20, 4),
           "adr": (-(1 << 20), 1 << 20, 1), "adrp": (-(1 << 32), 1 << 32, 1)}
_RANGE_TEXT = {"b26": "+-128 MiB", "b19": "+-1 MiB", "b14": "+-32 KiB", "lit19": "+-1 MiB",
               "adr": "+-1 MiB", "adrp": "+-4 GiB"}

_MAGIC = (0x5F554D4D52415F5F, 0x454C4241545F4D53)   # "__ARMMU_" "SM_TABLE"
_M64 = (1 << 64) - 1


@dataclass
class _Stmt:
    line: int
    kind: str                     # "insn", "data", "dir", "const", "empty"
    text: str                     # final text (pass 2)
    text1: str                    # text for pass 1 (targets neutralised)
    src: str = ""                 # the statement as written (for messages)
    mnemonic: str = ""
    labels: list[str] = field(default_factory=list)
    target: str | None = None     # branch-like target expression ('.' resolved)
    target_kind: str | None = None
    pool: str | None = None       # ldr Rn, =expr
    pool_width: int = 8
    data: list[tuple[str, int]] = field(default_factory=list)   # symbolic data (expr, width)
    data_size: int | None = None  # expected bytes for fixed-width data
    udf: int | None = None


def _page_up(x: int) -> int:
    return (x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _strip_comments(source: str, name: str) -> list[str]:
    """Lines of ``source`` without comments (line count preserved)."""
    lines: list[str] = []
    cur: list[str] = []
    i, n = 0, len(source)
    block_start = 0
    in_block = in_str = False
    while i < n:
        c = source[i]
        if in_block:
            if source.startswith("*/", i):
                in_block = False
                cur.append(" ")
                i += 2
                continue
            if c == "\n":
                lines.append("".join(cur))
                cur = []
            i += 1
            continue
        if in_str:
            cur.append(c)
            if c == "\\" and i + 1 < n and source[i + 1] != "\n":
                cur.append(source[i + 1])
                i += 2
                continue
            if c == '"':
                in_str = False
            elif c == "\n":
                raise AssembleError(name, len(lines) + 1, "unterminated string")
            i += 1
            continue
        if c == '"':
            in_str = True
            cur.append(c)
        elif source.startswith("//", i):
            j = source.find("\n", i)
            i = n if j < 0 else j
            continue
        elif source.startswith("/*", i):
            in_block, block_start = True, len(lines) + 1
            i += 2
            continue
        elif c == "\n":
            lines.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    if in_block:
        raise AssembleError(name, block_start, "unterminated /* comment")
    if in_str:
        raise AssembleError(name, len(lines) + 1, "unterminated string")
    lines.append("".join(cur))
    out = []
    for ln, text in enumerate(lines, 1):
        s = text.strip()
        if s.startswith("#"):
            if _CPP_RE.match(s):
                raise AssembleError(name, ln, f"C preprocessor directive '{s.split()[0]}' is not supported "
                                              "(no cpp is run); use .equ and assemble(..., defines=...)")
            text = ""
        out.append(text)
    return out


def _split_top(text: str, sep: str, brackets: bool = True) -> list[str]:
    """Split at ``sep`` outside quotes (and outside brackets if ``brackets``)."""
    parts, cur, depth, in_str, i = [], [], 0, False, 0
    while i < len(text):
        c = text[i]
        if in_str:
            cur.append(c)
            if c == "\\" and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            cur.append(c)
        elif c in "([{":
            depth += 1
            cur.append(c)
        elif c in ")]}":
            depth -= 1
            cur.append(c)
        elif c == sep and (depth <= 0 or not brackets):
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _idents(expr: str) -> list[str]:
    """Symbol names used in an expression (``.`` excluded, quoted text skipped)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])\'?', " ", expr)
    return [m for m in _IDENT_RE.findall(expr) if m != "."]


_TOKEN_RE = re.compile(r"""\s*(?:
      (?P<num>0[xX][0-9a-fA-F]+|0[bB][01]+|\d+)(?![\w.$])
    | (?P<chr>'(?:\\.|[^'\\])'?)
    | (?P<id>[A-Za-z_.$][\w.$]*)
    | (?P<op><<|>>|<=|>=|==|!=|<>|&&|\|\||[-+*/%&|^~!<>()])
    )""", re.X)
_BINOPS = {"<<", ">>", "<=", ">=", "==", "!=", "<>", "&&", "||", "+", "-", "*", "/", "%", "&", "|", "^", "!", "<", ">"}


def _expr_ok(expr: str) -> bool:
    """Syntax check of a GAS expression (keystone hangs on some malformed ones)."""
    toks, pos, text = [], 0, expr.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            return False
        toks.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    i = 0

    def primary() -> bool:
        nonlocal i
        while i < len(toks) and toks[i] in (("op", "-"), ("op", "+"), ("op", "~"), ("op", "!")):
            i += 1
        if i >= len(toks):
            return False
        kind, val = toks[i]
        i += 1
        if kind in ("num", "chr", "id"):
            return True
        if val == "(":
            if not expression() or i >= len(toks) or toks[i] != ("op", ")"):
                return False
            i += 1
            return True
        return False

    def expression() -> bool:
        nonlocal i
        if not primary():
            return False
        while i < len(toks) and toks[i][0] == "op" and toks[i][1] in _BINOPS:
            i += 1
            if not primary():
                return False
        return True
    return bool(toks) and expression() and i == len(toks)


# GAS operator precedence (as LLVM's GNU-mode parser): higher binds tighter
_PREC = {"||": 1, "&&": 1, "==": 2, "!=": 2, "<>": 2, "<": 2, "<=": 2, ">": 2, ">=": 2,
         "+": 3, "-": 3, "|": 4, "&": 4, "^": 4, "!": 4, "*": 5, "/": 5, "%": 5, "<<": 5, ">>": 5}


def _evaluate(expr: str, const) -> int | None:
    """Evaluate a GAS expression with 64-bit two's-complement arithmetic; ``const(name)``
    gives symbol values (None = unknown). Returns a signed value or None."""
    if not _expr_ok(expr):
        return None
    toks, pos, text = [], 0, expr.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        toks.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    i = 0

    def wrap(v: int) -> int:
        v &= _M64
        return v - (1 << 64) if v >> 63 else v

    def primary() -> int | None:
        nonlocal i
        kind, val = toks[i]
        i += 1
        if kind == "op" and val in "-+~!":
            v = primary()
            if v is None:
                return None
            return wrap({"-": -v, "+": v, "~": ~v, "!": int(v == 0)}[val])
        if kind == "num":
            return wrap(int(val, 0))
        if kind == "chr":
            body = val[1:].rstrip("'")
            return ord(body[-1]) if body else None
        if kind == "id":
            return None if val == "." else const(val)
        v = binary(0)                        # "(" expr ")"
        i += 1
        return v

    def binary(min_prec: int) -> int | None:
        nonlocal i
        left = primary()
        while i < len(toks) and toks[i][0] == "op" and toks[i][1] in _PREC and _PREC[toks[i][1]] > min_prec:
            op = toks[i][1]
            i += 1
            right = binary(_PREC[op])
            if left is None or right is None:
                left = None
                continue
            a, b = left, right
            if op in ("/", "%") and b == 0:
                left = None
                continue
            left = wrap({
                "*": lambda: a * b, "/": lambda: int(a / b), "%": lambda: a - b * int(a / b),
                "<<": lambda: (a << (b & 63)) if 0 <= b < 64 else 0, ">>": lambda: a >> (b & 63) if 0 <= b < 64 else 0,
                "|": lambda: a | b, "&": lambda: a & b, "^": lambda: a ^ b, "!": lambda: a | ~b,
                "+": lambda: a + b, "-": lambda: a - b,
                "==": lambda: -int(a == b), "!=": lambda: -int(a != b), "<>": lambda: -int(a != b),
                "<": lambda: -int(a < b), "<=": lambda: -int(a <= b), ">": lambda: -int(a > b),
                ">=": lambda: -int(a >= b), "&&": lambda: int(bool(a) and bool(b)),
                "||": lambda: int(bool(a) or bool(b)),
            }[op]())
        return left
    return binary(0)


def _branch_kind(mn: str, ops: list[str]) -> tuple[int, str] | None:
    """Index of the PC-relative operand and its kind, for instructions that have one."""
    if mn in ("b", "bl"):
        return 0, "b26"
    if _BCOND_RE.fullmatch(mn) and mn not in ("bl",):
        return 0, "b19"
    if mn in ("cbz", "cbnz"):
        return 1, "b19"
    if mn in ("tbz", "tbnz"):
        return 2, "b14"
    if mn == "adr":
        return 1, "adr"
    if mn == "adrp":
        return 1, "adrp"
    if mn in ("ldr", "ldrsw", "prfm") and len(ops) == 2:
        o = ops[1].strip()
        if o and not o.startswith(("[", "=")):
            return 1, "lit19"
    return None


class _Assembler:
    def __init__(self, source: str, base: int, name: str, defines: dict[str, int | str] | None,
                 syscall_constants: bool):
        self.source, self.base, self.name = source, base, name
        self.defines = dict(defines or {})
        self.syscall_constants = syscall_constants
        self.stmts: list[_Stmt] = []
        self.labels: dict[str, int] = {}          # user label -> statement index
        self.consts: dict[str, int] = {}          # constant -> line of first definition
        self.local_defs: dict[str, list[tuple[int, str]]] = {}   # "1" -> [(stmt_index, unique)]
        self.local_names: set[str] = set()
        self.const_exprs: dict[str, str] = {}     # constant -> its (last) expression

    def err(self, line: int, msg: str) -> AssembleError:
        return AssembleError(self.name, line, msg)

    # -- parsing --------------------------------------------------------------------------
    def parse(self) -> None:
        raw: list[tuple[int, list[str], str]] = []     # (line, labels, statement text)
        for ln, text in enumerate(_strip_comments(self.source, self.name), 1):
            for part in _split_top(text, ";", brackets=False):    # keystone splits there too
                labels = []
                while True:
                    m = _LABEL_RE.match(part)
                    if not m:
                        break
                    labels.append(m.group(1))
                    part = part[m.end():]
                part = part.strip()
                if not part.isascii():
                    raise self.err(ln, "non-ASCII character outside a comment")
                if labels or part:
                    raw.append((ln, labels, part))

        # constant definitions first (names, first line, defines substitution)
        applied: set[str] = set()
        for idx, (ln, labels, part) in enumerate(raw):
            cname, expr, head = self._const_def(part)
            if cname is None:
                continue
            if cname.startswith(RESERVED_PREFIX):
                raise self.err(ln, f"names starting with {RESERVED_PREFIX} are reserved")
            if cname != "." and not re.fullmatch(rf"[{_IDENT_START}][\w.$]*", cname):
                raise self.err(ln, f"bad constant name '{cname}'")     # keystone hangs on some
            if cname == ".":
                raise self.err(ln, "assigning the location counter is not supported; use .space")
            if cname in self.defines and cname not in applied:
                applied.add(cname)
                raw[idx] = (ln, labels, f"{head} {cname}, {self._define_text(cname)}")
            self.consts.setdefault(cname, ln)
            self.const_exprs[cname] = self._define_text(cname) if cname in self.defines else (expr or "")
        prelude = []
        for cname in self.defines:
            if cname not in applied:
                if not re.fullmatch(rf"[{_IDENT_START}][\w.$]*", cname) or cname == ".":
                    raise self.err(0, f"bad define name {cname!r}")
                prelude.append((0, [], f".equ {cname}, {self._define_text(cname)}"))
                self.consts[cname] = 0
                self.const_exprs[cname] = self._define_text(cname)
        if self.syscall_constants:
            used = {i for _, _, part in raw for i in _idents(part)}
            for sname, value in syscalls.asm_constants().items():
                if sname in used and sname not in self.consts:
                    prelude.append((0, [], f".equ {sname}, {value}"))
                    self.consts[sname] = 0
                    self.const_exprs[sname] = str(value)
        raw = prelude + raw

        # labels (numeric local labels get unique names)
        for idx, (ln, labels, _) in enumerate(raw):
            for lab in labels:
                if lab.isdigit():
                    uniq = f"{RESERVED_PREFIX}L{lab}_{len(self.local_defs.get(lab, []))}"
                    self.local_defs.setdefault(lab, []).append((idx, uniq))
                    self.local_names.add(uniq)
                    continue
                if lab.startswith(RESERVED_PREFIX):
                    raise self.err(ln, f"names starting with {RESERVED_PREFIX} are reserved")
                if lab in self.labels or lab in self.consts:
                    raise self.err(ln, f"symbol '{lab}' is already defined")
                self.labels[lab] = idx

        for idx, (ln, labels, part) in enumerate(raw):
            self.stmts.append(self._classify(idx, ln, labels, part))
        if not any(s.kind in ("insn", "data", "dir") for s in self.stmts):
            raise self.err(1, "empty program: no instructions or data")

    def _define_text(self, cname: str) -> str:
        v = self.defines[cname]
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise self.err(0, f"define {cname}: value must be an int or an expression string, not {v!r}")
        if isinstance(v, int):
            return hex(v) if v >= 0 else str(v)
        if not v.strip() or re.search(r"[;\n]|//|/\*", v):
            raise self.err(0, f"define {cname}: bad expression {v!r}")
        return v

    @staticmethod
    def _const_def(part: str) -> tuple[str | None, str | None, str]:
        low = part.lower()
        for d in _CONST_DIRECTIVES:
            if low.startswith(d) and (len(low) == len(d) or low[len(d)].isspace()):
                body = part[len(d):].strip()
                name, _, expr = body.partition(",")
                return name.strip(), expr.strip(), d
        m = _ASSIGN_RE.match(part)
        if m:
            return m.group(1), m.group(2), ".set"
        return None, None, ""

    def _resolve_locals(self, idx: int, ln: int, text: str) -> str:
        def sub(m: re.Match) -> str:
            num, d = m.group(1), m.group(2)
            defs = self.local_defs.get(num, [])
            if d == "b":
                cands = [u for i, u in defs if i <= idx]
                if cands:
                    return cands[-1]
            else:
                cands = [u for i, u in defs if i > idx]
                if cands:
                    return cands[0]
            raise self.err(ln, f"local label {num}{d}: no label '{num}:' "
                               f"{'before' if d == 'b' else 'after'} this line")
        return _LOCAL_REF_RE.sub(sub, text)

    def _known(self, ident: str) -> bool:
        return ident in self.labels or ident in self.consts or ident in self.local_names

    def _check_expr(self, ln: int, expr: str, src: str) -> None:
        if not _expr_ok(expr):
            raise self.err(ln, f"malformed expression '{expr.strip()}' in '{src}'")

    def _eval(self, expr: str, seen: frozenset = frozenset()) -> int | None:
        """Value of an expression made of numbers and constants (None if it uses labels,
        ``.``, or cannot be evaluated). Only used to refuse sizes keystone chokes on."""
        def const(name: str) -> int | None:
            if name not in self.const_exprs or name in seen:
                return None
            return self._eval(self.const_exprs[name], seen | {name})
        return _evaluate(expr, const)

    def _check_size(self, ln: int, d: str, args: list[str], src: str) -> None:
        vals = [self._eval(a) for a in args]
        if None in vals:
            # keystone hangs on some label-based sizes (".space x, x")
            raise self.err(ln, f"'{src}': arguments must be constant expressions of numbers and "
                               ".equ constants (no labels, '.', or forward label arithmetic)")
        if d in (".space", ".skip", ".zero", ".fill"):
            count = vals[0]
            if d == ".fill" and count is not None and len(vals) > 1:
                count = None if vals[1] is None else count * max(vals[1], 1)
            if count is not None and not 0 <= count <= MAX_SPACE:
                raise self.err(ln, f"'{src}': size {count:#x} must be 0..{MAX_SPACE:#x} bytes "
                                   "(keystone hangs on huge sizes; put big buffers in the heap)")
        else:
            a = vals[0]
            if a is not None:
                align = a if d == ".balign" else (1 << a if 0 <= a < 64 else -1)
                if not 1 <= align <= PAGE_SIZE * 16 or align & (align - 1):
                    raise self.err(ln, f"'{src}': alignment must be a power of two up to {PAGE_SIZE * 16:#x}")

    def _check_defined(self, ln: int, expr: str) -> None:
        for ident in _idents(expr):
            if not self._known(ident):
                raise self.err(ln, f"undefined symbol '{ident}'")

    def _here(self, idx: int, expr: str, offset: int = 0) -> str:
        here = f"({RESERVED_PREFIX}s{idx}+{offset})" if offset else f"{RESERVED_PREFIX}s{idx}"
        return _HERE_RE.sub(here, expr)

    def _classify(self, idx: int, ln: int, labels: list[str], part: str) -> _Stmt:
        labs = [self.local_defs_name(idx, lab) if lab.isdigit() else lab for lab in labels]
        st = _Stmt(ln, "empty", "", "", src=part, labels=labs)
        if not part:
            return st
        cname, _, _ = self._const_def(part)
        if cname is not None:
            st.kind, st.text = "const", self._resolve_locals(idx, ln, part)
            st.text1 = st.text
            _, expr, _ = self._const_def(st.text)
            self._check_expr(ln, expr or "", part)
            self._check_defined(ln, expr or "")
            return st
        if re.search(r":[A-Za-z_][\w]*:", part):
            raise self.err(ln, "relocation modifiers (:lo12:, :abs_g0: ...) are not supported "
                               "(keystone aborts on them); use adr, ldr =, or movz/movk with #(EXPR >> n) & 0xffff")
        m = re.match(r"(\S+)\s*(.*)$", part, re.S)
        head, rest = m.group(1), m.group(2)
        mn = head.lower()
        if not re.fullmatch(r"\.?[a-z][\w.]*", mn):
            # keystone loops forever on statements that start with punctuation
            raise self.err(ln, f"syntax error: expected an instruction, directive, label or "
                               f"NAME = value, got '{part}'")
        rest = self._resolve_locals(idx, ln, rest.strip())
        if mn.startswith(RESERVED_PREFIX):
            raise self.err(ln, f"names starting with {RESERVED_PREFIX} are reserved")
        if mn.startswith("."):
            return self._directive(st, idx, ln, mn, rest)
        st.kind, st.mnemonic = "insn", mn
        ops = [o.strip() for o in _split_top(rest, ",")] if rest else []
        if mn == "udf":
            expr = ops[0].lstrip("#") if len(ops) == 1 else ""
            v = self._eval(expr) if _expr_ok(expr) else None
            if v is None or not 0 <= v <= 0xFFFF:
                raise self.err(ln, f"udf needs one constant immediate 0..65535, got {rest!r}")
            st.udf = v
            st.text = st.text1 = f".word {v:#x}"
            return st
        text = f"{mn} {rest}" if rest else mn
        st.text = st.text1 = text
        bk = _branch_kind(mn, ops)
        if bk is not None and len(ops) > bk[0]:
            i, kind = bk
            target = ops[i].strip()
            if target.startswith("#"):
                target = target[1:].strip()
            self._check_expr(ln, target, part)
            self._check_defined(ln, target)
            st.target, st.target_kind = self._here(idx, target), kind
            st.text1 = "nop"          # pass 1 has no PC-relative fixups at all (see run())
        elif mn == "ldr" and len(ops) == 2 and ops[1].startswith("="):
            expr = ops[1][1:].strip()
            self._check_expr(ln, expr, part)
            self._check_defined(ln, expr)
            st.pool = self._here(idx, expr)
            st.pool_width = 4 if ops[0].lower().startswith("w") else 8
            st.text1 = "nop"
        return st

    def local_defs_name(self, idx: int, lab: str) -> str:
        for i, u in self.local_defs.get(lab, []):
            if i == idx:
                return u
        raise AssertionError(lab)

    def _directive(self, st: _Stmt, idx: int, ln: int, d: str, rest: str) -> _Stmt:
        if d in _REJECTED_DIRECTIVES:
            raise self.err(ln, f"{d}: {_REJECTED_DIRECTIVES[d]}")
        if d in _IGNORED_DIRECTIVES or d.startswith(".cfi_"):
            return st
        if d in _PASS_DIRECTIVES:
            if d not in (".ascii", ".asciz", ".string"):
                args = [a.strip() for a in _split_top(rest, ",")] if rest else []
                if not args:
                    raise self.err(ln, f"{d} needs an argument")
                for a in args:
                    self._check_expr(ln, a, st.src)
                self._check_size(ln, d, args, st.src)
            for ident in _idents(rest) if d not in (".ascii", ".asciz", ".string") else []:
                if not self._known(ident):
                    raise self.err(ln, f"undefined symbol '{ident}'")
            st.kind, st.text = "dir", f"{d} {rest}".strip()
            st.text1 = st.text
            return st
        if d in _DATA_WIDTH:
            width = _DATA_WIDTH[d]
            dname = ".word" if d == ".inst" else d
            items = [o.strip() for o in _split_top(rest, ",")] if rest else []
            if not items or any(not o for o in items):
                raise self.err(ln, f"{d} needs a comma-separated list of values")
            st.kind, st.data_size = "data", width * len(items)
            if d == ".inst":
                st.kind = "insn"          # an instruction word: decode-checked like the others
                st.mnemonic = ".inst"
                if len(items) != 1:
                    raise self.err(ln, ".inst takes one word per line here")
            for o in items:
                self._check_expr(ln, o, st.src)
                if width < 8 and not _idents(o) and not _HERE_RE.search(o):
                    v = self._eval(o)
                    if v is not None and not -(1 << (8 * width - 1)) <= v < (1 << (8 * width)):
                        raise self.err(ln, f"value {o} does not fit in {width} byte(s) in '{st.src}'")
            items1 = []
            for k, o in enumerate(items):
                if _idents(o) or _HERE_RE.search(o):
                    self._check_defined(ln, o)
                    st.data.append((self._here(idx, o, k * width), width))
                    items1.append(o if width == 8 else "0")
                else:
                    items1.append(o)
            st.text = f"{dname} {', '.join(items)}"
            st.text1 = f"{dname} {', '.join(items1)}"
            return st
        raise self.err(ln, f"unsupported directive {d}")

    # -- assembling -----------------------------------------------------------------------
    def _lines(self, pass1: bool) -> list[str]:
        """One line per statement, each behind its own label. Pass 1 lines are followed by
        the symbol table, pass 2 lines by the end label: keystone rejects a program whose
        last statement is ``.space 0``."""
        out = []
        for i, st in enumerate(self.stmts):
            labs = "".join(f"{lab}: " for lab in st.labels)
            out.append(f"{RESERVED_PREFIX}s{i}: {labs}{st.text1 if pass1 else st.text}")
        return out if pass1 else out + [f"{RESERVED_PREFIX}end:"]

    def _ks(self, text: str) -> bytes:
        ks = Ks(KS_ARCH_ARM64, KS_MODE_LITTLE_ENDIAN)
        enc, _ = ks.asm(text, self.base)
        return bytes(enc or b"")

    def _neutral(self, i: int) -> str:
        """Statement ``i`` reduced to the symbols it defines (for error bisection)."""
        st = self.stmts[i]
        labs = "".join(f"{lab}: " for lab in st.labels)
        text = ""
        if st.kind == "const":
            cname, _, head = self._const_def(st.text)
            text = f"{head} {cname}, 0"
        return f"{RESERVED_PREFIX}s{i}: {labs}{text}"

    def _locate(self, lines: list[str], tail: list[tuple[int, str, str]], exc: KsError | None) -> AssembleError:
        """Find the statement keystone rejects: bisect on k, assembling statements < k as
        written and the rest reduced to their label/constant definitions (so that forward
        references still resolve), followed by a sentinel. A prefix fails if keystone raises
        or if the sentinel is missing (keystone sometimes drops everything silently).
        Keystone's sym_resolver is not used: it is process-global (it outlives its Ks
        instance) and changes how later assemblies evaluate expressions."""
        n = len(self.stmts)
        neutral = [self._neutral(i) for i in range(n)]
        total = n + len(tail)
        line_of = [st.line for st in self.stmts] + [t[0] for t in tail]
        head = [t[1] for t in tail[:4]]          # end label, .balign 8, the two magic words

        def attempt(k: int) -> KsError | str | None:
            if k <= n:
                text, need = lines[:k] + neutral[k:] + head, 0
            else:
                text, need = lines + [t[1] for t in tail[:max(k - n, 4)]], max(0, k - n - 4)
            try:
                out = self._ks("\n".join(text))
            except KsError as e:
                return e
            pos = _find_magic(out)
            return None if pos >= 0 and len(out) >= pos + 16 + 8 * need else "silent"
        if attempt(0) is not None or attempt(total) is None:
            return self.err(1, f"keystone rejected the program: {exc or 'no output'}")
        lo, hi = 0, total
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if attempt(mid) is None:
                lo = mid
            else:
                hi = mid
        bad = hi - 1
        why = attempt(hi)
        if bad >= n:
            return self.err(line_of[bad], tail[bad - n][2] + (f" ({why})" if why != "silent" else ""))
        src = self.stmts[bad].src
        if why == "silent" or why is None:
            return self.err(line_of[bad], f"syntax error in '{src}' (keystone silently discards "
                                          "the whole program from here)")
        return self.err(line_of[bad], self._explain(why, src))

    def _entry_desc(self, kind: str, expr: str, i: int) -> str:
        if kind == "const":
            return f"cannot evaluate constant '{expr}' (undefined, circular or invalid expression)"
        if kind in ("stmt", "end", "label"):
            return f"cannot place '{expr}'"
        return f"cannot evaluate '{self._unhere(expr)}' in '{self.stmts[i].src}'"

    @staticmethod
    def _unhere(expr: str) -> str:
        return re.sub(rf"\(?{RESERVED_PREFIX}s\d+(\+\d+\))?", ".", expr)

    def _explain(self, e: KsError, src: str) -> str:
        mn = src.split()[0].lower() if src.split() else ""
        errno = e.errno
        if errno == 514:
            msg = f"unknown instruction '{mn}'"
        elif errno == 512:
            msg = f"invalid operand in '{src}'"
        elif errno == 513:
            msg = f"instruction needs an architecture feature keystone does not enable: '{src}'"
        elif errno > 514:
            msg = f"invalid operand or immediate out of range in '{src}'"
        elif errno == 144:
            msg = f"undefined symbol in '{src}'"
        elif errno == 129:
            msg = f"value out of range in '{src}'"
        else:
            msg = f"{e} in '{src}'"
        if re.fullmatch(r"(cas|casp|swp|ld(add|clr|eor|set|smax|smin|umax|umin)|st(add|clr|eor|set|smax|smin|umax|umin))"
                        r"[alhb]*", mn):
            msg += " (keystone supports ARMv8.0 only: no LSE atomics; use ldxr/stxr)"
        elif mn in ("csdb", "sb", "ssbb", "pssbb", "bti", "pacia", "autia", "xpaclri"):
            msg += " (unknown to keystone; write the encoding with .inst)"
        later = [i for i in _idents(src) if i in self.consts and self.consts[i] > 0
                 and self.consts[i] > self._line_of_src(src)]
        if later:
            msg += (f" (constant '{later[0]}' is defined later, at line {self.consts[later[0]]}; "
                    "keystone needs .equ constants defined before use)")
        return msg

    def _line_of_src(self, src: str) -> int:
        for st in self.stmts:
            if st.src == src:
                return st.line
        return 0

    def run(self) -> Program:
        self.parse()
        n = len(self.stmts)
        # ---- pass 1 (layout): PC-relative instructions replaced by nop, sub-8-byte symbolic
        # data by 0, and a table of .quad values appended after a magic marker: the address
        # of every statement, the end, every label, constant, target, literal and datum ----
        entries: list[tuple[str, str, int, int]] = []   # (kind, expr, stmt index/-1, line)
        for i, st in enumerate(self.stmts):
            entries.append(("stmt", f"{RESERVED_PREFIX}s{i}", i, st.line))
        entries.append(("end", f"{RESERVED_PREFIX}end", -1, 0))
        for lab, i in self.labels.items():
            entries.append(("label", lab, i, self.stmts[i].line))
        for cname, ln in self.consts.items():
            entries.append(("const", cname, -1, ln))
        for i, st in enumerate(self.stmts):
            if st.target is not None:
                entries.append(("target", st.target, i, st.line))
            if st.pool is not None:
                entries.append(("pool", st.pool, i, st.line))
            for k, (expr, _w) in enumerate(st.data):
                entries.append((f"data{k}", expr, i, st.line))
        tail = [(0, f"{RESERVED_PREFIX}end:", "internal error"), (0, ".balign 8", "internal error"),
                (0, f".quad {_MAGIC[0]:#x}", "internal error"), (0, f".quad {_MAGIC[1]:#x}", "internal error")]
        tail += [(ln, f".quad ({expr})", self._entry_desc(kind, expr, i)) for kind, expr, i, ln in entries]
        lines1 = self._lines(pass1=True)
        try:
            out1 = self._ks("\n".join(lines1 + [t[1] for t in tail]))
        except KsError as e:
            raise self._locate(lines1, tail, e) from None
        pos = _find_magic(out1)
        if pos < 0 or pos + 16 + 8 * len(entries) > len(out1):
            raise self._locate(lines1, tail, None)      # keystone dropped output without an error
        vals = [int.from_bytes(out1[pos + 16 + 8 * k: pos + 24 + 8 * k], "little") for k in range(len(entries))]
        addr = vals[:n]
        end = vals[n]
        symbols, constants, targets, pools, datav = {}, {}, {}, {}, {}
        for (kind, expr, i, _ln), v in zip(entries[n + 1:], vals[n + 1:]):
            if kind == "label":
                symbols[expr] = v
            elif kind == "const":
                constants[expr] = v if v < (1 << 63) else v - (1 << 64)
            elif kind == "target":
                targets[i] = v
            elif kind == "pool":
                pools[i] = v
            else:
                datav[(i, int(kind[4:]))] = v
        if any(a < self.base or a > end for a in addr):
            raise self.err(1, "internal error: statement addresses outside the program")

        # ---- checks that need the layout, before keystone sees the real targets ----
        npool = sum(1 for st in self.stmts if st.pool is not None)
        pool_end = ((end + 7) & ~7) + 8 * (npool + 1)
        for i, st in enumerate(self.stmts):
            va = addr[i]
            nxt = addr[i + 1] if i + 1 < n else end
            if st.kind == "insn":
                if (va - self.base) % 4:
                    raise self.err(st.line, f"instruction at {va:#x} is not 4-byte aligned "
                                            "(odd-sized data before it? add .balign 4)")
                if nxt - va != 4:
                    raise self.err(st.line, f"keystone emitted {nxt - va} bytes for '{st.src}' (expected 4)")
            elif st.kind == "data" and st.data_size is not None and nxt - va != st.data_size:
                raise self.err(st.line, f"keystone emitted {nxt - va} bytes for '{st.src}' "
                                        f"(expected {st.data_size})")
            if i in targets:
                t = targets[i]
                lo, hi, align = _RANGES[st.target_kind]
                off = ((t & ~0xFFF) - (va & ~0xFFF)) if st.target_kind == "adrp" else t - va
                if not lo <= off < hi:
                    raise self.err(st.line, f"target {t:#x} of '{st.src}' at {va:#x} is out of range "
                                            f"({_RANGE_TEXT[st.target_kind]}); keystone would "
                                            "silently mis-assemble it (or abort)")
                if off % align:
                    raise self.err(st.line, f"target {t:#x} of '{st.src}' is not {align}-byte aligned")
            if i in pools and pool_end - va >= (1 << 20):
                raise self.err(st.line, f"literal pool for '{st.src}' would be beyond +-1 MiB")
            for k, (_expr, w) in enumerate(st.data):
                if w < 8:
                    v = datav[(i, k)]
                    sv = v - (1 << 64) if v >= (1 << 63) else v
                    if not -(1 << (8 * w - 1)) <= sv < (1 << (8 * w)):
                        raise self.err(st.line, f"value {sv:#x} does not fit in {w} byte(s) in '{st.src}' "
                                                "(keystone would truncate it silently)")

        # ---- pass 2: the real program ----
        lines2 = self._lines(pass1=False)
        try:
            code = self._ks("\n".join(lines2))
        except KsError as e:
            raise self._locate_pass2(e) from None
        if len(code) < end - self.base:
            raise self._locate_pass2(None)
        # the layout must be the same as in pass 1 (only neutralised statements may differ)
        for i, st in enumerate(self.stmts):
            if st.target is not None or st.pool is not None or any(w < 8 for _, w in st.data):
                continue
            a, b = addr[i] - self.base, (addr[i + 1] if i + 1 < n else end) - self.base
            if code[a:b] != out1[a:b]:
                raise self.err(st.line, f"internal error: '{st.src}' assembled differently in the final pass")

        prog = Program(code=code, base=self.base, symbols=symbols,
                       entry=symbols.get("_start", self.base), constants=constants, name=self.name,
                       constant_lines=dict(self.consts))
        self._verify(prog, addr, end, targets, pools)
        return prog

    def _locate_pass2(self, e: KsError | None) -> AssembleError:
        """Pass 2 only differs from pass 1 in restored targets/pool/data: try each alone."""
        base_lines = self._lines(pass1=True) + [f"{RESERVED_PREFIX}end:"]
        try:
            full = len(self._ks("\n".join(base_lines)))
        except KsError:
            return self.err(1, f"keystone rejected the program: {e or 'no output'}")
        for i, st in enumerate(self.stmts):
            if st.text == st.text1:
                continue
            trial = list(base_lines)
            trial[i] = f"{RESERVED_PREFIX}s{i}: {''.join(f'{lab}: ' for lab in st.labels)}{st.text}"
            try:
                if len(self._ks("\n".join(trial))) < full:
                    return self.err(st.line, f"syntax error in '{st.src}' (keystone silently discards "
                                             "the whole program from here)")
            except KsError as e2:
                return self.err(st.line, self._explain(e2, st.src))
        return self.err(1, f"keystone rejected the program: {e or 'no output'}")

    def _verify(self, prog: Program, addr: list[int], end: int, targets: dict, pools: dict) -> None:
        cs = _capstone()
        code, base = prog.code, self.base
        for i, st in enumerate(self.stmts):
            if st.kind != "insn":
                continue
            va = addr[i]
            word = code[va - base: va - base + 4]
            insns = list(cs.disasm(word, va))
            if not insns:
                if st.mnemonic == ".inst":
                    continue      # a raw word the user chose; nothing to compare with
                raise self.err(st.line, f"keystone emitted {int.from_bytes(word, 'little'):#010x} for "
                                        f"'{st.src}', which capstone cannot decode")
            ins = insns[0]
            text = f"{ins.mnemonic} {ins.op_str}".strip()
            prog.insns[va] = text
            prog.lines[va] = st.line
            if st.udf is not None and (ins.mnemonic != "udf" or _last_imm(ins) != st.udf):
                raise self.err(st.line, f"udf #{st.udf} came out as '{text}'")
            if i in targets:
                want = targets[i] & ~0xFFF if st.target_kind == "adrp" else targets[i]
                got = _last_imm(ins)
                if got != want:
                    fwd = [c for c in _idents(st.target) if self.consts.get(c, 0) > st.line]
                    hint = (f" (keystone mis-handles constant '{fwd[0]}' defined after its use; define it first)"
                            if fwd else "")
                    raise self.err(st.line, f"keystone mis-assembled '{st.src}': target is "
                                            f"{'none' if got is None else hex(got)}, the source says {want:#x}{hint}")
            if i in pools:
                self._check_pool(prog, st, ins, text, pools[i])
            mn = ins.mnemonic
            if mn in BARRIER_MNEMONICS:
                prog.barriers.append((va, mn))
            elif mn in SYS_MNEMONICS:
                prog.sys_insns.append((va, text))
                if st.mnemonic in _CHECKED_SYS and not _GENERIC_SYSREG_RE.search(st.src.lower()):
                    if _norm(st.src) != _norm(text):
                        raise self.err(st.line, f"keystone mis-encoded '{st.src}' as '{text}'")
            elif mn == "svc":
                prog.svcs.append(va)

    def _check_pool(self, prog: Program, st: _Stmt, ins, text: str, value: int) -> None:
        mask = (1 << (8 * st.pool_width)) - 1
        got = _last_imm(ins)
        if ins.mnemonic == "ldr" and got is not None:
            off = got - prog.base
            lit = int.from_bytes(prog.code[off: off + st.pool_width], "little")
            if off < 0 or lit != value & mask:
                raise self.err(st.line, f"literal pool for '{st.src}' holds {lit:#x}, expected {value & mask:#x}")
        elif ins.mnemonic == "mov" and got is not None:
            if got & mask != value & mask:
                raise self.err(st.line, f"'{st.src}' came out as '{text}'")
        else:
            raise self.err(st.line, f"'{st.src}' came out as '{text}'")


def _find_magic(out: bytes) -> int:
    magic = _MAGIC[0].to_bytes(8, "little") + _MAGIC[1].to_bytes(8, "little")
    pos = out.find(magic)
    while pos >= 0 and pos % 8:
        pos = out.find(magic, pos + 1)
    return pos


def _last_imm(ins) -> int | None:
    imms = [o.imm for o in ins.operands if o.type == ARM64_OP_IMM]
    return (imms[-1] & _M64) if imms else None


def _norm(text: str) -> str:
    t = re.sub(r"[\s#]", "", text.lower())
    return _NUM_RE.sub(lambda m: str(int(m.group(1), 0)), t)


_CS: Cs | None = None


def _capstone() -> Cs:
    global _CS
    if _CS is None:
        _CS = Cs(CS_ARCH_ARM64, CS_MODE_ARM)
        _CS.detail = True
    return _CS


def assemble(source: str, base: int, name: str = "<guest>",
             defines: dict[str, int | str] | None = None, *, syscall_constants: bool = True) -> Program:
    """Assemble AArch64 ``source`` to run at VA ``base``.

    ``defines`` overrides constants: ``{"NPAGES": 256}`` replaces the value of the first
    ``.equ/.set NPAGES, ...`` in the source, or is prepended as ``.equ`` if the source
    does not define it. With ``syscall_constants`` the ``SYS_*`` names of
    :mod:`guest.syscalls` (``SYS_exit``, ``SYS___tfork``...) that the source uses without
    defining them are predefined. Raises :class:`AssembleError` (``name:LINE: message``).
    """
    if not isinstance(base, int) or base < 0 or base % 4 or base >= (1 << 64):
        raise AssembleError(name, 0, f"base {base!r} must be a 4-byte aligned address")
    prog = _Assembler(source, base, name, defines, syscall_constants).run()
    prog.layout                      # validate the layout now, so errors surface here
    return prog
