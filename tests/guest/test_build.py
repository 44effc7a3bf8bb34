"""guest.build / guest.image / guest.asm: what the real toolchain gives users (GNU
assembler syntax with .macro, .include, adrp/:lo12:, sections; C), the content cache,
and one clear GuestBuildError per bad input."""
from __future__ import annotations

import struct
import time

import pytest
from capstone import CS_ARCH_ARM64, CS_MODE_ARM, Cs

import guest.asm
import guest.build
from guest import programs, toolchain
from guest.asm import assemble
from guest.build import build
from guest.image import GuestBuildError, load_elf
from guest.syscalls import Sys, asm_constants, by_name, header_text

from .minikernel import MiniKernel

CS = Cs(CS_ARCH_ARM64, CS_MODE_ARM)
BASE = 0x400000


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty build cache and no in-process memo: every build starts cold."""
    monkeypatch.setenv("ARMMU_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(guest.build, "_memo", {})
    monkeypatch.setattr(guest.asm, "_memo", {})
    return tmp_path / "cache"


def _err(fn, *a, **kw) -> GuestBuildError:
    with pytest.raises(GuestBuildError) as ei:
        fn(*a, **kw)
    msg = str(ei.value)
    assert "\n" not in msg and "Traceback" not in msg
    return ei.value


def _insn(image, va):
    i = next(CS.disasm(image.code[va - image.base: va - image.base + 4], va))
    return f"{i.mnemonic} {i.op_str}".strip()


# ---------------------------------------------------------------------------------------
# what the toolchain gives

def test_macro_include_adrp_lo12_and_sections_run(tmp_path):
    (tmp_path / "defs.inc").write_text(".macro LOADW reg, sym\n\tadrp \\reg, \\sym\n"
                                       "\tldr \\reg, [\\reg, :lo12:\\sym]\n.endm\n")
    (tmp_path / "knobs.h").write_text("#define ANSWER (40 + 2)\n")
    src = tmp_path / "user.S"
    src.write_text("""// a user's own guest
#include <armmu/asm.h>
#include "knobs.h"
.include "defs.inc"
	ARMMU_REGION stack, 0x7fffff0000, 0x8000, PROT_RW, REGION_POPULATE
	.text
	.globl _start
_start:
	LOADW	x0, value		// adrp + ldr :lo12: from .rodata
	adrp	x1, counter
	add	x1, x1, :lo12:counter
	ldr	x2, [x1]
	add	x0, x0, x2
	str	x0, [x1]		// .data is writable
	.rept 3
	add	x0, x0, #1
	.endr
	SYSTRAP SYS_exit
	.section .rodata
value:	.quad ANSWER
	.data
counter: .quad 100
""")
    p = programs.load_file(src)
    assert p.name == str(src)
    assert {s.name: s.prot for s in p.segments} == {"text": 5, "rodata": 1, "data": 3}
    ro, data = (next(s for s in p.segments if s.name == n) for n in ("rodata", "data"))
    assert ro.va == p.base + 0x1000 and data.va == p.base + 0x2000     # each on its own page
    assert _insn(p, p.entry) == f"adrp x0, #{ro.va:#x}"                  # not relaxed to adr
    assert _insn(p, p.entry + 8) == f"adrp x1, #{data.va:#x}"
    k = MiniKernel(p)
    assert k.run() == (42 + 100 + 3) & 0xFF
    assert k.u64(p.symbols["counter"]) == 142


def test_snippet_api():
    p = assemble("""
    _start:  mov x0, #1          /* block */ ; mov x1, #2
    loop:    subs x0, x0, #1
             b.ne loop
             bl   func
             mov  x8, #SYS_getpid
             svc  #0
             dsb  nsh
             isb
    func:    ret
    """, BASE)
    assert p.entry == BASE and p.symbols["loop"] == BASE + 8 and p.symbols["func"] == BASE + 36
    assert _insn(p, BASE + 12) == f"b.ne #{BASE + 8:#x}" and _insn(p, BASE + 16) == f"bl #{BASE + 36:#x}"
    assert p.svcs == [BASE + 24] and p.syscall_return(BASE + 24) == BASE + 36
    assert p.barriers == [(BASE + 28, "dsb"), (BASE + 32, "isb")]
    q = assemble("nop\nsvc #0\nnop", BASE)
    assert q.entry == BASE and q.syscall_return(BASE + 4) == BASE + 8    # no barrier pair: svc+4
    assert assemble("nop\nsvc #0\nnop", BASE) is q                          # memoised
    assert MiniKernel(assemble("mov x0, #7\nSYSTRAP SYS_exit", BASE)).run() == 7


def test_c_guest_spawns_threads_and_touches_pages(tmp_path):
    """The thread ABI from C: struct __tfork, __tfork_thread, C11 atomics, page touches,
    memset emitted by the compiler for a large zeroed struct, main's value to exit."""
    src = tmp_path / "mine.c"
    src.write_text("""// two threads from C
#include <armmu.h>
#define HEAP 0x30000000UL
ARMMU_REGION(heap, HEAP, 16 * PAGE_SIZE, PROT_RW, REGION_DEMAND);
ARMMU_REGION(tstack, 0x7ffff00000UL, 0x4000, PROT_RW, REGION_POPULATE);
static unsigned long count;
struct big { long v[64]; };
static void worker(void *arg) {
	for (unsigned long p = 8; p < 16; p++)
		*(volatile unsigned long *)(HEAP + p * PAGE_SIZE) = p;
	atomic_inc(&count);
	for (;;) sched_yield();
}
int main(void) {
	pid_t tid = 0;
	struct __tfork tf = { 0, &tid, (void *)0x7ffff04000UL };
	volatile struct big b = { { 0 } };
	if (__tfork_thread(&tf, sizeof tf, worker, 0) < 0)
		return 9;
	for (unsigned long p = 0; p < 8; p++)
		*(volatile unsigned long *)(HEAP + p * PAGE_SIZE) = p;
	while (atomic_load_acq(&count) == 0)
		sched_yield();
	return 40 + (tid == 100) + (getpid() == 4242) + (int)b.v[3];
}
""")
    p = programs.load_file(src)
    assert "__tfork_thread" in p.symbols and "main" in p.symbols
    k = MiniKernel(p)
    assert k.run() == 42
    assert [k.u64(0x30000000 + i * 4096) for i in range(16)] == list(range(16))
    assert sorted(k.faults) == [0x30000000 + i * 4096 for i in range(16)]      # demand region
    assert k.syscalls.count(Sys.TFORK) == 1 and k.syscalls[-1] == Sys.EXIT
    for va in p.svcs:
        assert p.syscall_return(va) == va + 12


def test_regions_are_read_from_the_elf(tmp_path):
    src = tmp_path / "r.S"
    src.write_text("#include <armmu/asm.h>\n"
                   "\tARMMU_REGION heap, 0x20000000, 0x3001, PROT_RW, REGION_POPULATE\n"
                   "\tARMMU_REGION lazy, 0x30000000, 0x10000, PROT_READ, REGION_DEMAND\n"
                   "\tARMMU_REGION empty, 0x40000000, 0, PROT_RW, REGION_POPULATE\n"
                   ".globl _start\n_start: b .\n")
    p = programs.load_file(src)
    assert [(r.name, r.start, r.size, r.prot, r.populate) for r in p.regions] == [
        ("heap", 0x20000000, 0x4000, 3, True), ("lazy", 0x30000000, 0x10000, 1, False)]
    assert p.initial_sp is None


def test_syscall_numbers_and_generated_header():
    assert (Sys.EXIT, Sys.FORK, Sys.READ, Sys.WRITE, Sys.TFORK, Sys.WAIT4, Sys.GETPID) == (1, 2, 3, 4, 8, 11, 20)
    assert (Sys.MMAP, Sys.MUNMAP, Sys.MPROTECT, Sys.SCHED_YIELD, Sys.THREXIT) == (49, 73, 74, 298, 302)
    assert asm_constants()["SYS___tfork"] == 8 and by_name("__threxit") is Sys.THREXIT
    # the committed header is what `python -m guest.syscalls` writes
    assert (toolchain.INCLUDE_DIR / "armmu" / "syscall.h").read_text() == header_text()
    # and what a guest sees: each number reaches x8
    for s in Sys:
        p = assemble(f"mov x8, #{s.asm_name}\nsvc #0", BASE)
        assert _insn(p, BASE) == f"mov x8, #{int(s):#x}" if int(s) > 9 else f"mov x8, #{int(s)}"


# ---------------------------------------------------------------------------------------
# the cache

def test_cache_second_build_does_not_run_the_compiler(fresh_cache, tmp_path, capsys):
    (tmp_path / "inc.h").write_text("#define N 3\n")
    src = tmp_path / "c.S"
    src.write_text('#include "inc.h"\n.globl _start\n_start: mov x0, #N\nSYSTRAP SYS_exit\n')
    runs = toolchain.runs
    t0 = time.perf_counter()
    a = build(src, {"M": 1}, force_include=("armmu/asm.h",))
    cold = time.perf_counter() - t0
    assert toolchain.runs == runs + 2                         # clang, then ld.lld
    guest.build._memo.clear()                                 # as a new process would
    t0 = time.perf_counter()
    b = build(src, {"M": 1}, force_include=("armmu/asm.h",))
    hit = time.perf_counter() - t0
    assert toolchain.runs == runs + 2 and a == b and b is not a
    with capsys.disabled():
        print(f"\n  guest build: cold {cold * 1e3:.0f} ms, cache hit {hit * 1e3:.1f} ms")
    # a different define, or an edited header, is a new build
    build(src, {"M": 2}, force_include=("armmu/asm.h",))
    assert toolchain.runs == runs + 4
    (tmp_path / "inc.h").write_text("#define N 4\n")
    guest.build._memo.clear()
    c = build(src, {"M": 1}, force_include=("armmu/asm.h",))
    assert toolchain.runs == runs + 6 and MiniKernel(c).run() == 4
    # a cache entry whose ELF went missing is rebuilt, not trusted
    for f in fresh_cache.rglob("*.elf"):
        f.unlink()
    guest.build._memo.clear()
    assert MiniKernel(build(src, {"M": 1}, force_include=("armmu/asm.h",))).run() == 4
    assert not list((fresh_cache / "tmp").iterdir())          # no build directory left behind


def test_cache_tracks_assembler_include_files(fresh_cache, tmp_path):
    (tmp_path / "m.inc").write_text(".macro SEVEN\n\tmov x0, #7\n.endm\n")
    src = tmp_path / "i.S"
    src.write_text('.include "m.inc"\n.globl _start\n_start: SEVEN\nmov x8, #1\nsvc #0\n')
    assert MiniKernel(build(src)).run() == 7
    (tmp_path / "m.inc").write_text(".macro SEVEN\n\tmov x0, #8\n.endm\n")
    guest.build._memo.clear()
    assert MiniKernel(build(src)).run() == 8


# ---------------------------------------------------------------------------------------
# bad input: one line each

def test_syntax_errors_name_file_and_line():
    e = _err(assemble, "nop\nnop\nfoo x1\nnop", BASE, "t.S")
    assert str(e) == "t.S:3: unrecognized instruction mnemonic: foo x1"
    assert _err(assemble, "nop\n\n  add x0, x0, #0x12345\n", BASE, "t.S").line == 3
    assert _err(assemble, ".macro M\n bogus\n.endm\nnop\nM\n", BASE, "t.S").line == 5      # the macro's use
    e = _err(assemble, "nop\ntbz x0, #1, far\n.space 0x8000\nfar: nop", BASE, "t.S")
    assert (e.file, e.line) == ("t.S", 2) and "out of range" in e.message


def test_undefined_symbol():
    e = _err(assemble, "nop\nb nowhere\n", BASE, "t.S")
    assert str(e) == "t.S:2: undefined symbol 'nowhere'"


def test_missing_files(tmp_path):
    e = _err(programs.load_file, tmp_path / "missing.S")
    assert str(e) == f"{tmp_path / 'missing.S'}: cannot read guest source: No such file or directory"
    e = _err(assemble, "#include <nothere.h>\n", BASE, "t.S")
    assert str(e) == "t.S:1: 'nothere.h' file not found"
    assert "Could not find include file 'zz.inc'" in str(_err(assemble, 'nop\n.include "zz.inc"', BASE, "t.S"))
    e = _err(programs.load_file, tmp_path / "prog.txt")
    assert "neither a guest source" in str(e) or "cannot read" in str(e)


def test_c_that_needs_libc(tmp_path):
    src = tmp_path / "hello.c"
    src.write_text('#include <stdio.h>\nint main(void) { printf("hi\\n"); return 0; }\n')
    e = _err(programs.load_file, src)
    assert (e.file, e.line) == (str(src), 1) and "'stdio.h' file not found" in e.message
    assert "no libc" in e.message
    src.write_text('int printf(const char *, ...);\nint main(void) {\n  printf("hi");\n  return 0;\n}\n')
    e = _err(programs.load_file, src)
    assert (e.file, e.line) == (str(src), 3) and e.message.startswith("undefined symbol 'printf' (") and \
        "no libc" in e.message
    src.write_text('int main(void) { return strlen("x"); }\n')
    assert "no libc" in _err(programs.load_file, src).message


def _elf(name="touch"):
    return bytearray(programs.load(name).elf)


def test_elf_that_is_not_aarch64_or_not_static(tmp_path):
    elf = _elf()
    struct.pack_into("<H", elf, 18, 62)                     # e_machine = EM_X86_64
    f = tmp_path / "x86.elf"
    f.write_bytes(elf)
    e = _err(programs.load_file, f)
    assert str(e) == f"{f}: not a 64-bit little-endian AArch64 executable (ELF64, EM_X86_64)"
    elf = _elf()
    struct.pack_into("<H", elf, 16, 3)                      # e_type = ET_DYN
    f.write_bytes(elf)
    assert "not a static executable (ET_DYN)" in str(_err(programs.load_file, f))
    f.write_bytes(b"\x7fELF" + bytes(60))
    assert "not a valid ELF file" in str(_err(programs.load_file, f))
    assert MiniKernel(load_elf(bytes(_elf()), "ok.elf")).run() == 0     # the unpatched ELF loads


def test_elf_with_an_interpreter_is_not_static():
    elf = _elf()
    phoff, phentsize = struct.unpack_from("<Q", elf, 32)[0], struct.unpack_from("<H", elf, 54)[0]
    struct.pack_into("<I", elf, phoff, 3)                   # first program header -> PT_INTERP
    e = _err(load_elf, bytes(elf), "dyn.elf")
    assert e.message == "not a static executable (it asks for an interpreter, PT_INTERP); link with -static"


def test_segments_and_regions_outside_the_user_range_or_overlapping(tmp_path):
    top = (1 << 39) - 0x8000
    e = _err(assemble, "nop\n.space 0x1ffc", top - 0x1000, "t.S")
    assert str(e) == (f"t.S: bad layout: segment text [{top - 0x1000:#x}, {top + 0x1000:#x}) is outside "
                      f"the user address range [0x1000, {top:#x})")
    assert "segment text [0x0, 0x1000) is outside" in str(_err(assemble, "nop", 0x800, "t.S"))   # the null page
    e = _err(assemble, "ARMMU_REGION heap, 0x7fffff8000, 0x1000, PROT_RW, REGION_POPULATE\nnop", BASE, "t.S")
    assert "region 'heap' [0x7fffff8000, 0x7fffff9000) is outside" in str(e)
    e = _err(assemble, "ARMMU_REGION heap, 0x3ff000, 0x2000, PROT_RW, REGION_POPULATE\nnop", BASE, "t.S")
    assert str(e) == ("t.S: bad layout: region 'heap' [0x3ff000, 0x401000) overlaps "
                      "segment text [0x400000, 0x401000)")
    e = _err(assemble, "ARMMU_REGION a, 0x20000000, 0x2000, PROT_RW, 1\n"
                       "ARMMU_REGION b, 0x20001000, 0x1000, PROT_RW, 1\nnop", BASE, "t.S")
    assert "region 'a' [0x20000000, 0x20002000) overlaps region 'b'" in str(e)
    assert "not page aligned" in str(_err(assemble, "ARMMU_REGION a, 0x20000010, 1, PROT_RW, 1\nnop", BASE, "t.S"))
    assert "declared twice" in str(_err(assemble, "ARMMU_REGION a, 0x20000000, 1, 3, 1\n"
                                                  "ARMMU_REGION a, 0x30000000, 1, 3, 1\nnop", BASE, "t.S"))


def test_bad_defines_and_entry(tmp_path):
    src = tmp_path / "e.S"
    src.write_text("_start: nop\n")                            # not .globl
    assert "no entry point" in str(_err(build, src))
    assert "is not a C identifier" in str(_err(build, src, {"1X": 1}))
    assert "not an expression" in str(_err(build, src, {"X": "1\n#include <x>"}))
    assert "must be an integer" in str(_err(build, src, {"X": 1.5}))


def test_a_runaway_compile_is_killed_at_its_time_limit(fresh_cache, tmp_path):
    src = tmp_path / "slow.S"
    src.write_text(".globl _start\n_start:\n.rept 100000000\nnop\n.endr\n")
    t0 = time.perf_counter()
    e = _err(build, src, timeout=1.0)
    assert e.message == "the toolchain did not finish within 1 s" and time.perf_counter() - t0 < 10


def test_concurrent_builders_share_one_cache(fresh_cache, tmp_path):
    """Two processes building the same guest into one empty cache at once (as pytest-xdist
    workers do) both succeed with the same ELF; the entry is complete afterwards."""
    import os
    import subprocess
    import sys
    src = tmp_path / "par.S"
    src.write_text(".globl _start\n_start: mov x0, #5\nSYSTRAP SYS_exit\n")
    code = ("import sys, hashlib; from guest.build import build; "
            "print(hashlib.sha256(build(sys.argv[1], force_include=('armmu/asm.h',)).elf).hexdigest())")
    env = {**os.environ, "ARMMU_CACHE": str(fresh_cache)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(src)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outs[0] == outs[1] and len(outs[0]) == 64
    runs = toolchain.runs
    image = build(src, force_include=("armmu/asm.h",))
    assert toolchain.runs == runs and MiniKernel(image).run() == 5         # a cache hit


def test_region_names_longer_than_16_characters_are_refused(tmp_path):
    assert assemble("ARMMU_REGION exactly16chars__, 0x20000000, 1, PROT_RW, 1\nnop", BASE).regions[0].name == \
        "exactly16chars__"
    e = _err(assemble, "nop\nARMMU_REGION seventeen_chars__, 0x20000000, 1, PROT_RW, 1\nnop", BASE, "t.S")
    assert str(e) == "t.S:2: ARMMU_REGION: a region name has at most 16 characters"
    src = tmp_path / "long.c"
    src.write_text("#include <armmu.h>\nARMMU_REGION(seventeen_chars__, 0x20000000, 1, PROT_RW, 1);\n"
                   "int main(void) { return 0; }\n")
    e = _err(programs.load_file, src)
    assert e.line == 2 and "initializer-string for char array is too long" in e.message
