"""Tests for guest/: the keystone front end, the bundled programs and the syscall table.

End-to-end tests run the programs on raw Unicorn (UC_TLB_CPU, MMU off = identity
mapping) with a tiny in-test kernel that emulates the handful of syscalls they use.
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from capstone import CS_ARCH_ARM64, CS_MODE_ARM, Cs
from unicorn import UC_ARCH_ARM64, UC_HOOK_CODE, UC_HOOK_INTR, UC_MODE_ARM, Uc, UcError
from unicorn.arm64_const import (UC_ARM64_REG_NZCV, UC_ARM64_REG_PC, UC_ARM64_REG_SP,
                                 UC_ARM64_REG_X0, UC_ARM64_REG_X8)

from guest import programs
from guest.asm import AssembleError, Program, assemble
from guest.syscalls import Sys, asm_constants, by_name

BASE = 0x100000
CS = Cs(CS_ARCH_ARM64, CS_MODE_ARM)


def _err(src: str, **kw) -> AssembleError:
    with pytest.raises(AssembleError) as ei:
        assemble(src, BASE, "t.S", **kw)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("t.S:")
    return ei.value


def _disasm(prog: Program) -> dict[int, tuple[str, str]]:
    """Independent capstone pass over the instruction words of ``prog``."""
    out = {}
    for va in prog.insns:
        ins = next(CS.disasm(prog.code[va - prog.base: va - prog.base + 4], va))
        out[va] = (ins.mnemonic, ins.op_str)
    return out


# ---------------------------------------------------------------------------------------
# the assembler

def test_symbols_entry_and_branch_targets():
    src = """
        // a comment
        nop
    _start:  mov x0, #1          /* block */ ; mov x1, #2
    loop:    subs x0, x0, #1
             b.ne loop
             cbz x1, out
             tbnz x1, #0, loop
             bl  func
    out:     b   .
    func:    ret
    """
    p = assemble(src, BASE)
    assert p.symbols == {"_start": BASE + 4, "loop": BASE + 12, "out": BASE + 32, "func": BASE + 36}
    assert p.entry == BASE + 4
    d = _disasm(p)
    assert d[BASE + 16] == ("b.ne", f"#{BASE + 12:#x}")
    assert d[BASE + 20] == ("cbz", f"x1, #{BASE + 32:#x}")
    assert d[BASE + 24] == ("tbnz", f"w1, #0, #{BASE + 12:#x}")
    assert d[BASE + 28] == ("bl", f"#{BASE + 36:#x}")
    assert d[BASE + 32] == ("b", f"#{BASE + 32:#x}")
    assert p.lines[BASE + 4] == 4 and p.lines[BASE + 8] == 4 and p.lines[BASE + 36] == 11
    assert assemble("nop", BASE).entry == BASE          # no _start: entry = base


def test_local_labels_and_data_directives():
    src = """
    _start: ldr x0, value
            adr x1, table
    1:      subs x0, x0, #1
            b.ne 1b
            cbz x0, 1f
            nop
    1:      ldr x2, =0x123456789
            ldr w3, =table
            b   .
    value:  .quad 3
    table:  .word 1, 2
            .hword 3
            .byte 4, 5
            .balign 8
    ptr:    .quad table, .
            .space 16
    tail:   .ascii "ab"
    """
    p = assemble(src, BASE)
    s = p.symbols
    assert s["value"] == BASE + 36 and s["table"] == BASE + 44
    assert s["ptr"] == BASE + 56 and s["tail"] == BASE + 56 + 16 + 16
    d = _disasm(p)
    assert d[BASE + 0] == ("ldr", f"x0, #{s['value']:#x}")
    assert d[BASE + 4] == ("adr", f"x1, #{s['table']:#x}")
    assert d[BASE + 12] == ("b.ne", f"#{BASE + 8:#x}")
    assert d[BASE + 16] == ("cbz", f"x0, #{BASE + 24:#x}")

    def q(va, n=8):
        return int.from_bytes(p.code[va - BASE: va - BASE + n], "little")
    assert q(s["value"]) == 3
    assert [q(s["table"], 4), q(s["table"] + 4, 4), q(s["table"] + 8, 2)] == [1, 2, 3]
    assert q(s["ptr"]) == s["table"] and q(s["ptr"] + 8) == s["ptr"] + 8
    assert p.code[s["tail"] - BASE:][:2] == b"ab"
    # literal pool after the code holds the right values
    lit = int(d[BASE + 24][1].split("#")[1], 16)
    assert q(lit) == 0x123456789
    assert d[BASE + 28][0] == "ldr" and q(int(d[BASE + 28][1].split("#")[1], 16), 4) == s["table"]


def test_barriers_sys_insns_and_svcs():
    src = """
    _start: mov x0, #0
            tlbi vae1is, x0
            dsb ish
            isb
            msr ttbr0_el1, x0
            at s1e1r, x1
            msr elr_el1, x0
            dmb ishld
            mov x8, #SYS_getpid
            svc #0
            dsb nsh
            isb
            .inst 0xd5033f9f
    """
    p = assemble(src, BASE)
    assert p.barriers == [(BASE + 8, "dsb"), (BASE + 12, "isb"), (BASE + 28, "dmb"),
                          (BASE + 40, "dsb"), (BASE + 44, "isb"), (BASE + 48, "dsb")]
    assert p.insns[BASE + 8] == "dsb ish" and p.insns[BASE + 48] == "dsb sy"
    assert p.sys_insns == [(BASE + 4, "tlbi vae1is, x0"), (BASE + 16, "msr ttbr0_el1, x0"),
                           (BASE + 20, "at s1e1r, x1"), (BASE + 24, "msr elr_el1, x0")]
    # the hand encodings this project once got wrong, checked against keystone + capstone
    assert p.code[20:24] == bytes.fromhex("017808d5")
    assert p.svcs == [BASE + 36]
    assert p.constants["SYS_getpid"] == 20
    assert p.syscall_return(BASE + 36) == BASE + 48            # skips OpenBSD's dsb nsh; isb
    q = assemble("svc #0\nnop", BASE)
    assert q.syscall_return(BASE) == BASE + 4


@pytest.mark.parametrize("name", sorted(programs.list_programs()))
def test_program_barriers_match_capstone(name):
    p = programs.load(name)
    found = []
    for ins in CS.disasm(p.code, p.base):     # the programs keep their data out of the code
        if ins.mnemonic in ("dsb", "dmb", "isb"):
            found.append((ins.address, ins.mnemonic))
        if ins.mnemonic == "svc":
            assert ins.address in p.svcs
    assert p.barriers == found
    for va in p.svcs:                          # every syscall uses the OpenBSD sequence
        assert (p.insns[va + 4], p.insns[va + 8]) == ("dsb nsh", "isb")


def test_udf_pseudo_instruction():
    p = assemble("_start: nop\nboom: udf #0x2a\nudf #65535", BASE)
    assert p.code[4:8] == (0x2A).to_bytes(4, "little")
    assert p.insns[p.symbols["boom"]] == "udf #0x2a" and p.insns[BASE + 8] == "udf #0xffff"
    assert _err("nop\nudf #0x10000").line == 2
    assert assemble(".equ U, 0x12\nudf #U + 1", BASE).insns[BASE] == "udf #0x13"
    assert "does not fit" in _err("nop\n.word 1 << 40").message       # keystone emits nothing
    assert _err("udf x0").line == 1
    b = programs.load("bad_undef")
    assert b.insns[b.symbols["fault"]] == "udf #0xbad"


def test_errors_name_the_line():
    e = _err("nop\nnop\nfoo x1\nnop")
    assert (e.line, str(e)) == (3, "t.S:3: unknown instruction 'foo'")
    assert _err("nop\n\n  add x0, x0, #0x12345\n").line == 3
    assert _err("nop\nb nowhere").message == "undefined symbol 'nowhere'"
    assert _err("/* two\nlines */ nop\nmov x0, x1, x2").line == 3
    assert _err("nop\ncas x0, x1, [x2]").line == 2
    assert "defined later" in _err("mov x0, #N\n.equ N, 4").message
    assert _err("a: nop\na: nop").line == 2
    assert _err("nop\n.macro FOO\nnop\n.endm").line == 2        # keystone drops macros silently
    assert _err(".data\n.quad 1").line == 1
    assert _err("#include <x.h>\nnop").line == 1
    assert _err("nop\n.byte 1\nnop").line == 3                  # unaligned instruction
    assert _err("nop\n.word far\n.equ far, 0x140000000").line == 2   # keystone truncates .word
    assert _err("b 1f").line == 1
    assert _err("").line == 1
    assert re.fullmatch(r"t\.S:\d+: .+", str(_err("ldr x0, [x1, #0x10000]")))
    assert _err(".equ A, 2\n.equ B, A +\nnop").line == 2
    assert _err("nop\nb x+)\nx: nop").line == 2           # found via the symbol table pass
    assert _err("b later\nfoo x1\nlater: nop").line == 2


def test_far_branches_are_detected_not_silently_broken():
    # numeric target: keystone silently emits `b #0`
    assert _err("nop\nb 0x10000000").line == 2
    # symbol target out of range: keystone would abort the whole process (LLVM ERROR)
    e = _err("nop\nnop\ntbz x0, #1, far\n.space 0x8000\nfar: nop")
    assert e.line == 3 and "out of range" in e.message
    assert _err(".equ FAR, 0x40000000\nbl FAR").line == 2
    assert _err("tbz x0, #1, x\n.space 0x8000\nx: nop").line == 1
    assert _err("cbz x0, x\n.space 0x100000\nx: nop").line == 1
    assert _err("adr x0, x\n.space 0x100000\nx: nop").line == 1
    # in range just below the limit works
    p = assemble("tbz x0, #1, x\n.space 0x7ff8\nx: nop", BASE)
    assert _disasm(p)[BASE][1].endswith(f"#{p.symbols['x']:#x}")
    # keystone gets adrp wrong when base != 0: caught by the capstone check
    assert "mis-assembled" in _err("adrp x0, x\nnop\nx: nop").message


def test_keystone_abort_case_does_not_kill_the_process():
    """Bare keystone aborts the process on this source (LLVM ERROR + exit) and silently
    mis-assembles a cbz just out of range; assemble() turns both into AssembleError."""
    code = ("from keystone import *; Ks(KS_ARCH_ARM64, KS_MODE_LITTLE_ENDIAN)"
            ".asm('tbz x0, #1, x\\n.space 0x8000\\nx: nop', 0x100000); print('survived')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "survived" not in r.stdout and "fixup value out of range" in r.stderr
    assert _err("tbz x0, #1, x\n.space 0x8000\nx: nop").line == 1
    from keystone import KS_ARCH_ARM64, KS_MODE_LITTLE_ENDIAN, Ks
    enc, _ = Ks(KS_ARCH_ARM64, KS_MODE_LITTLE_ENDIAN).asm("cbz x0, x\n.space 0x100000\nx: nop", BASE)
    assert next(CS.disasm(bytes(enc[:4]), BASE)).op_str == "x0, #4"       # silently wrong
    assert _err("cbz x0, x\n.space 0x100000\nx: nop").line == 1


def test_keystone_hangs_and_silent_drops_are_refused():
    assert "malformed" in _err("nop\n.quad (1+)").message            # keystone loops forever
    assert "malformed" in _err(".equ A, 1+)\nnop").message            # keystone drops the line
    assert _err(".space 0x100000000\nnop").line == 1                  # keystone hangs
    assert _err(".align 40\nnop").line == 1
    assert _err("nop\nadd x0, x0, #:lo12:x\nx: nop").line == 2        # keystone aborts
    assert _err(".equ X, Y\n.equ Y, X\nnop").line == 1
    assert _err("nop\n.equ X, nothing\nnop").message == "undefined symbol 'nothing'"
    assert "define it first" in _err("b x\n.equ x, 0x100010\nnop").message   # keystone adds base
    assert assemble(".equ x, 0x100008\nb x\nnop\nnop", BASE).insns[BASE] == "b #0x100008"
    p = assemble("nop\n.inst 0xd503201f\nnop", BASE)                  # keystone emits nothing for .inst
    assert len(p.code) == 12 and p.insns[BASE + 4] == "nop"
    p = assemble(".text\n.global _start\n_start: nop", BASE)           # .text would empty the output
    assert len(p.code) == 4


def test_defines():
    src = ".equ N, 4\nmov x0, #N\nmov x1, #M"
    p = assemble(src, BASE, defines={"N": 0x10, "M": "N * 2"})
    assert p.constants["N"] == 16 and p.constants["M"] == 32
    assert p.insns[BASE] == "mov x0, #0x10" and p.insns[BASE + 4] == "mov x1, #0x20"
    with pytest.raises(AssembleError):
        assemble("nop", BASE, defines={"N": 1.5})
    p = programs.load("touch", {"NPAGES": 256})
    assert p.constants["NPAGES"] == 256 and p.layout["heap"].size == 256 * 4096
    with pytest.raises(ValueError, match="NPAGES"):
        programs.load("touch", {"NPAGE": 3})
    with pytest.raises(ValueError, match="unknown guest program"):
        programs.load("nosuch")


def test_layout_errors_point_at_the_constant():
    with pytest.raises(AssembleError, match=r"touch\.S:\d+: bad layout: HEAP_BASE 0x20000001 is not page aligned"):
        programs.load("touch", {"HEAP_BASE": 0x20000001})
    with pytest.raises(AssembleError, match="overlaps"):
        programs.load("touch", {"HEAP_BASE": programs.DEFAULT_BASE})
    with pytest.raises(AssembleError, match="negative"):
        programs.load("touch", {"NPAGES": -1})
    assert "heap" not in programs.load("touch", {"NPAGES": 0}).layout


def test_every_program_assembles_with_layout_and_docs():
    progs = programs.list_programs()
    assert {"touch", "threads", "loop", "stride", "bad_undef", "bad_jump", "bad_loop"} <= set(progs)
    for name, desc in progs.items():
        assert desc and not desc.startswith("//")
        p = programs.load(f"{name}.S")
        assert p.entry == p.symbols["_start"] == p.base == programs.DEFAULT_BASE
        assert p.entry in p.layout["code"] and p.end <= p.layout["code"].end
        assert len(p.code) % 4 == 0 and p.insns
        pinfo = programs.info(name)
        if name.startswith("bad_"):
            assert set(p.layout) == {"code"}
            continue
        assert set(p.layout) == {"code", "heap", "stack"}
        assert p.layout["stack"].end == p.constants["STACK_TOP"] < (1 << 39)
        assert {"HEAP_BASE", "HEAP_SIZE", "STACK_TOP", "STACK_SIZE"} <= set(pinfo.layout)
        assert pinfo.params
        for r in p.layout.values():
            assert r.start % 4096 == 0 and r.size % 4096 == 0 and r.size > 0
        regions = sorted(p.layout.values(), key=lambda r: r.start)
        assert all(a.end <= b.start for a, b in zip(regions, regions[1:]))
    assert set(programs.info("threads").params) == {"NPAGES", "NTHREADS", "THREAD_EXIT", "MAIN_WAIT"}
    assert set(programs.info("loop").params) == {"ITERS", "NPAGES"}
    assert set(programs.info("stride").params) == {"NPAGES", "PASSES", "STRIDE"}


def test_load_file(tmp_path):
    f = tmp_path / "mine.S"
    f.write_text("// my guest\n.equ N, 3\n_start: mov x0, #N\n  mov x8, #SYS_exit\n  svc #0\n")
    p = programs.load_file(f, {"N": 7})
    assert p.name == "mine.S" and p.insns[p.entry] == "mov x0, #7" and p.svcs == [p.entry + 8]
    assert MiniKernel(p).run() == 7
    with pytest.raises(ValueError, match="no constant"):
        programs.load_file(f, {"M": 1})
    with pytest.raises(ValueError, match="cannot read"):
        programs.load_file(tmp_path / "missing.S")
    f.write_text("nop\nbogus x0\n")
    with pytest.raises(AssembleError, match=r"^mine\.S:2: unknown instruction 'bogus'$"):
        programs.load_file(f)


def test_syscall_numbers():
    assert (Sys.EXIT, Sys.FORK, Sys.READ, Sys.WRITE, Sys.TFORK, Sys.WAIT4, Sys.GETPID) == (1, 2, 3, 4, 8, 11, 20)
    assert (Sys.MMAP, Sys.MUNMAP, Sys.MPROTECT, Sys.SCHED_YIELD, Sys.THREXIT) == (49, 73, 74, 298, 302)
    assert asm_constants()["SYS___tfork"] == 8 and asm_constants()["SYS_sched_yield"] == 298
    assert by_name("__threxit") is Sys.THREXIT and by_name("SYS_exit") is Sys.EXIT


# ---------------------------------------------------------------------------------------
# end to end on raw Unicorn (MMU off: VA == PA)

class MiniKernel:
    """Just enough of a kernel to run the guests: exit, getpid, sched_yield, __tfork,
    __threxit; round-robin threads on one Unicorn instance with context save/restore."""

    QUANTUM = 400
    SENTINEL = 0xFFFFFFFFFFF0

    def __init__(self, prog: Program):
        self.prog = prog
        uc = self.uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        for r in prog.layout.values():
            uc.mem_map(r.start, r.size)
        uc.mem_write(prog.base, prog.code)
        uc.hook_add(UC_HOOK_INTR, self._intr)
        self.event = None
        self.status = None
        self.fault = None
        self.next_tid = 100
        self.threads: list[list] = []      # [tid, context]
        self.insns = 0

    def _intr(self, uc, intno, _ud):
        self.event = (intno, uc.reg_read(UC_ARM64_REG_PC))
        uc.emu_stop()

    def _ret(self, value: int, error: bool = False):
        self.uc.reg_write(UC_ARM64_REG_X0, value)
        nzcv = self.uc.reg_read(UC_ARM64_REG_NZCV)
        self.uc.reg_write(UC_ARM64_REG_NZCV, nzcv | (1 << 29) if error else nzcv & ~(1 << 29))

    def run(self, max_quanta: int = 20000) -> int | None:
        uc = self.uc
        uc.reg_write(UC_ARM64_REG_PC, self.prog.entry)
        self.threads = [[1, uc.context_save()]]
        cur = 0
        for _ in range(max_quanta):
            uc.context_restore(self.threads[cur][1])
            self.event = None
            try:
                uc.emu_start(uc.reg_read(UC_ARM64_REG_PC), self.SENTINEL, count=self.QUANTUM)
            except UcError as e:
                self.fault = (e.errno, uc.reg_read(UC_ARM64_REG_PC))
                return None
            switch = self.event is None
            if self.event is not None:
                intno, pc = self.event
                if intno != 2:
                    self.fault = ("intr", intno, pc)
                    return None
                svc = pc - 4
                num = uc.reg_read(UC_ARM64_REG_X8)
                uc.reg_write(UC_ARM64_REG_PC, self.prog.syscall_return(svc))
                if num == Sys.EXIT:
                    self.status = uc.reg_read(UC_ARM64_REG_X0) & 0xFF
                    return self.status
                if num == Sys.GETPID:
                    self._ret(4242)
                elif num == Sys.SCHED_YIELD:
                    self._ret(0)
                    switch = True
                elif num == Sys.TFORK:
                    param = uc.reg_read(UC_ARM64_REG_X0)
                    _tcb, tidp, stack = (int.from_bytes(uc.mem_read(param + 8 * k, 8), "little") for k in range(3))
                    tid, self.next_tid = self.next_tid, self.next_tid + 1
                    uc.mem_write(tidp, tid.to_bytes(4, "little"))
                    sp = uc.reg_read(UC_ARM64_REG_SP)
                    self._ret(0)
                    uc.reg_write(UC_ARM64_REG_SP, stack)
                    self.threads.append([tid, uc.context_save()])
                    uc.reg_write(UC_ARM64_REG_SP, sp)
                    self._ret(tid)
                elif num == Sys.THREXIT:
                    notdead = uc.reg_read(UC_ARM64_REG_X0)
                    if notdead:
                        uc.mem_write(notdead, bytes(4))
                    del self.threads[cur]
                    if not self.threads:
                        self.status = 0
                        return 0
                    cur %= len(self.threads)
                    continue
                else:
                    self._ret(78, error=True)             # ENOSYS
            self.threads[cur][1] = uc.context_save()
            if switch:
                cur = (cur + 1) % len(self.threads)
        return None

    def u64(self, va: int) -> int:
        return int.from_bytes(self.uc.mem_read(va, 8), "little")


def test_e2e_touch_stores_to_every_page_and_exits_0():
    n = 48
    p = programs.load("touch", {"NPAGES": n})
    k = MiniKernel(p)
    assert k.run() == 0
    heap = p.constants["HEAP_BASE"]
    for i in range(n):
        assert k.u64(heap + i * 4096) == heap + i * 4096
    assert k.u64(heap + n * 4096 - 4096 + 8) == 0           # only one word per page
    assert k.u64(p.constants["STACK_TOP"] - 16) == 0


def test_e2e_touch_zero_pages():
    assert MiniKernel(programs.load("touch", {"NPAGES": 0})).run() == 0


def test_e2e_loop_runs_k_iterations():
    iters, npages = 300, 4
    p = programs.load("loop", {"ITERS": iters, "NPAGES": npages})
    k = MiniKernel(p)
    hits = []
    k.uc.hook_add(UC_HOOK_CODE, lambda uc, a, s, d: hits.append(a), None,
                  p.symbols["outer"], p.symbols["outer"])
    assert k.run() == 0
    heap = p.constants["HEAP_BASE"]
    assert [k.u64(heap + i * 4096) for i in range(npages)] == [iters] * npages
    assert k.u64(heap + p.constants["RESULT"]) == iters
    assert len(hits) == iters + 1                          # the loop test ran K+1 times


def test_e2e_stride():
    p = programs.load("stride", {"NPAGES": 40, "PASSES": 3, "STRIDE": 8192})
    k = MiniKernel(p)
    assert k.run() == 0
    heap = p.constants["HEAP_BASE"]
    assert [k.u64(heap + i * 8192) for i in range(40)] == [3] * 40
    assert k.u64(heap + 4096) == 0


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_e2e_threads(mode):
    nthreads, npages = 4, 10                          # PER = 2, main also takes pages 8, 9
    p = programs.load("threads", {"NTHREADS": nthreads, "NPAGES": npages, "THREAD_EXIT": mode})
    k = MiniKernel(p)
    assert k.run() == 0 and k.fault is None
    ctrl = p.constants["HEAP_BASE"]
    data = ctrl + 4096
    assert [k.u64(data + i * 4096) for i in range(npages)] == [data + i * 4096 for i in range(npages)]
    assert [k.u64(ctrl + 8 * i) for i in range(1, nthreads)] == [1] * (nthreads - 1)
    tids = [k.u64(ctrl + p.constants["TID_OFF"] + 8 * i) & 0xFFFFFFFF for i in range(1, nthreads)]
    assert tids == [100, 101, 102]
    alive = len(k.threads)
    assert alive == (1 if mode == 1 else nthreads)      # threxit'ed threads are gone


def test_e2e_getpid_and_syscall_abi():
    src = """
    _start: mov x8, #SYS_getpid
            svc #0
            dsb nsh
            isb
            mov x8, #SYS_exit
            svc #0
            dsb nsh
            isb
    """
    p = assemble(src, BASE)
    k = MiniKernel(p)
    assert k.run() == 4242 & 0xFF


def test_e2e_bad_programs():
    p = programs.load("bad_undef")
    k = MiniKernel(p)
    assert k.run() is None and k.fault == ("intr", 1, p.symbols["fault"])   # UNDEF at the udf
    p = programs.load("bad_jump", {"BAD_TARGET": 0xBAD000})
    k = MiniKernel(p)
    assert k.run() is None and k.fault[1] == 0xBAD000
    p = programs.load("bad_loop")
    k = MiniKernel(p)
    assert k.run(max_quanta=5) is None and k.fault is None and k.status is None
    assert k.uc.reg_read(UC_ARM64_REG_PC) == p.symbols["spin"]
