"""Syscalls from real guests, and bad guest behaviour: each gets what OpenBSD returns
(PSTATE.C set, errno in x0) or is killed with a clear reason; the run always ends.

Each guest exits with the errno it got (0 if the call succeeded), so the exit status
says what the kernel returned."""
from __future__ import annotations

import textwrap

import pytest

from guest.programs import PROGRAM_DIR

from .conftest import go, write_asm

EXIT_ERRNO = """
	b.cs	1f
	mov	x0, #0
1:	SYSTRAP	SYS_exit
"""


def guest(tmp_path, body: str, name: str = "g") -> str:
    return write_asm(tmp_path, name, textwrap.dedent(body) + EXIT_ERRNO + "\n.data\nmsg: .ascii \"hello\\n\"\n",
                     heap=0x4000)


def status(tmp_path, body, **kw):
    res, m, k = go(guest=guest(tmp_path, body), strategy=kw.pop("strategy", "purge"),
                   cpus=kw.pop("cpus", 2), pages=4, **kw)
    assert res["outcome"]["completed"], res["outcome"]["reason"]
    return res["processes"][0], res


def test_unknown_syscall_is_enosys(tmp_path):
    p, _ = status(tmp_path, "\tmov x8, #999\n\tsvc #0\n\tdsb nsh\n\tisb\n")
    assert p["status"] == 78 and not p["killed"]


def test_write_goes_to_the_output(tmp_path):
    p, res = status(tmp_path, """
	mov	x0, #1
	adrp	x1, msg
	add	x1, x1, :lo12:msg
	mov	x2, #6
	SYSTRAP	SYS_write
	cmp	x0, #6
	b.ne	2f
	mov	x0, #0
	SYSTRAP SYS_exit
2:	mov	x0, #100
	""")
    assert p["status"] == 0 and p["output"] == "hello\n"


def test_write_bad_pointer_is_efault(tmp_path):
    p, _ = status(tmp_path, """
	mov	x0, #1
	MOV48	x1, 0x5000000000
	mov	x2, #6
	SYSTRAP	SYS_write
	""")
    assert p["status"] == 14 and p["output"] == ""


def test_write_bad_fd_is_ebadf(tmp_path):
    p, _ = status(tmp_path, "\tmov x0, #7\n\tmov x1, #0\n\tmov x2, #0\n\tSYSTRAP SYS_write\n")
    assert p["status"] == 9


def test_getpid_and_sched_yield(tmp_path):
    p, _ = status(tmp_path, """
	SYSTRAP	SYS_sched_yield
	SYSTRAP	SYS_getpid
	mov	x19, x0
	SYSTRAP	SYS_getpid
	cmp	x0, x19
	b.ne	2f
	cmp	x0, #0
	b.eq	2f
	mov	x0, #0
	SYSTRAP	SYS_exit
2:	mov	x0, #100
	""")
    assert p["status"] == 0


def test_mmap_more_than_memory_is_enomem(tmp_path):
    """mmap(NULL, 1 GiB, RW, MAP_PRIVATE|MAP_ANON|MAP_POPULATE) on a 64 MiB machine."""
    p, _ = status(tmp_path, """
	mov	x0, #0
	mov	x1, #0x40000000
	mov	x2, #PROT_RW
	MOV32	x3, (MAP_PRIVATE | MAP_ANON | MAP_POPULATE)
	mov	x4, #-1
	mov	x5, #0
	SYSTRAP	SYS_mmap
	""", mem_mb=64)
    assert p["status"] == 12


def test_mmap_munmap_mprotect_and_demand_faults(tmp_path):
    """Map 4 pages on demand, store to them (demand faults), make them read-only,
    unmap them; a store after munmap would kill the process (it does not happen)."""
    p, res = status(tmp_path, """
	mov	x0, #0
	mov	x1, #0x4000
	mov	x2, #PROT_RW
	MOV32	x3, (MAP_PRIVATE | MAP_ANON)
	mov	x4, #-1
	mov	x5, #0
	SYSTRAP	SYS_mmap
	b.cs	1f
	mov	x19, x0
	str	x19, [x19]
	str	x19, [x19, #0x1000]
	str	x19, [x19, #0x3000]
	ldr	x20, [x19, #0x1000]
	cmp	x20, x19
	b.ne	2f
	mov	x0, x19
	mov	x1, #0x4000
	mov	x2, #PROT_READ
	SYSTRAP	SYS_mprotect
	b.cs	1f
	ldr	x20, [x19]
	mov	x0, x19
	mov	x1, #0x4000
	SYSTRAP	SYS_munmap
	b.cs	1f
	mov	x0, #0
	SYSTRAP	SYS_exit
2:	mov	x0, #100
	""")
    assert p["status"] == 0
    assert res["events"]["faults"] >= 3              # the three first stores faulted the pages in


def test_store_to_readonly_after_mprotect_kills(tmp_path):
    res, m, k = go(guest=guest(tmp_path, """
	MOV48	x19, 0x20000000
	str	x19, [x19]
	mov	x0, x19
	mov	x1, #0x4000
	mov	x2, #PROT_READ
	SYSTRAP	SYS_mprotect
	str	x19, [x19]
	mov	x0, #0
	"""), strategy="purge", cpus=1, pages=4)
    p = res["processes"][0]
    assert res["outcome"]["completed"] and p["signal"] == 11
    assert "protection" in p["killed"] and "0x20000000" in p["killed"]


def test_fault_outside_any_entry_kills_with_sigsegv(tmp_path):
    res, m, k = go(guest=guest(tmp_path, "\tMOV48 x1, 0x4000000000\n\tldr x0, [x1]\n"),
                   strategy="reaper", cpus=2, pages=4)
    p = res["processes"][0]
    assert res["outcome"]["completed"] and p["signal"] == 11 and p["zombie"]
    assert "no mapping" in p["killed"] and "0x4000000000" in p["killed"]


def test_undefined_instruction_kills_with_sigill():
    res, m, k = go(guest=str(PROGRAM_DIR / "bad_undef.S"), strategy="purge", cpus=1, pages=1)
    p = res["processes"][0]
    assert res["outcome"]["completed"] and p["signal"] == 4 and "undef" in p["killed"]


def test_threxit_of_the_last_thread_exits_the_process(tmp_path):
    p, res = status(tmp_path, "\tmov x0, #0\n\tSYSTRAP SYS___threxit\n\tmov x0, #100\n")
    assert p["status"] == 0 and p["zombie"]
    assert res["exit_events"]["tlbi"]["ASIDE1IS"] == 4          # a normal purge exit


TFORK_LOOP = """
	MOV48	x20, 0x20000000             // struct __tfork at the heap start
	mov	x21, #0
	MOV48	x22, 0x7fffff4000            // child stacks below main's
3:	str	xzr, [x20]
	str	xzr, [x20, #8]
	sub	x9, x22, x21, lsl #10
	str	x9, [x20, #16]
	mov	x0, x20
	mov	x1, #TFORK_PARAM_SIZE
	SYSTRAP	SYS___tfork
	b.cs	1f
	cbz	x0, 4f
	add	x21, x21, #1
	b	3b
4:	b	4b                            // child: spin in user mode until exit1 stops it
1:	cmp	x21, #{expect}
	b.ne	5f
	SYSTRAP	SYS_exit                   // x0 = errno from the failed __tfork
5:	mov	x0, #100
	cmn	x0, #0
"""


def test_more_threads_than_the_limit_is_eagain(tmp_path):
    """maxthread 4: three __tfork succeed, the fourth returns EAGAIN; exit kills the
    spinning children through single_thread_set."""
    p, res = status(tmp_path, TFORK_LOOP.format(expect=3), cpus=3, budgets={"maxthread": 4})
    assert p["status"] == 35


def test_tfork_bad_param_is_efault(tmp_path):
    p, _ = status(tmp_path, "\tMOV48 x0, 0x6000000000\n\tmov x1, #TFORK_PARAM_SIZE\n\tSYSTRAP SYS___tfork\n")
    assert p["status"] == 14


@pytest.mark.parametrize("body,errno", [
    ("\tmov x0, #0\n\tmov x1, #0\n\tmov x2, #3\n\tmov x3, #0x1002\n\tmov x4, #-1\n\tSYSTRAP SYS_mmap\n", 22),
    ("\tmov x0, #1\n\tmov x1, #0x1000\n\tSYSTRAP SYS_munmap\n", 22),
    ("\tmov x0, #0\n\tmov x1, #0x1000\n\tmov x2, #3\n\tmov x3, #0x1002\n\tmov x4, #3\n\tSYSTRAP SYS_mmap\n", 22),
])
def test_bad_arguments_are_einval(tmp_path, body, errno):
    p, _ = status(tmp_path, body)
    assert p["status"] == errno


def test_a_sibling_calls_exit_and_the_main_thread_purges(tmp_path):
    """kern_exit.c 1.252 / kern_sig.c 1.365: the thread that calls exit need not be the
    main thread. Here main spins in user mode and a child calls exit(7): the child runs
    single_thread_set, main unwinds through exit1(EXIT_THREAD_NOCHECK), waits
    "thrdeath" for the child, and does the process-wide work (uvm_purge)."""
    from emu.trace import Ev, Trace
    t = Trace()
    body = """
	MOV48	x20, 0x20000000
	str	xzr, [x20]
	str	xzr, [x20, #8]
	MOV48	x9, 0x7fffff4000
	str	x9, [x20, #16]
	mov	x0, x20
	mov	x1, #TFORK_PARAM_SIZE
	SYSTRAP	SYS___tfork
	b.cs	1f
	cbz	x0, 4f
3:	b	3b                            // main: spin in user mode
4:	mov	x0, #7                        // the child exits the process
	SYSTRAP	SYS_exit
	mov	x0, #100
	cmn	x0, #0
"""
    res, m, k = go(guest=guest(tmp_path, body), strategy="purge", cpus=2, pages=4, trace=t)
    assert res["outcome"]["completed"], res["outcome"]["reason"]
    p = res["processes"][0]
    assert p["status"] == 7 and p["zombie"]
    kern = [f for _, _, kind, f in t.records if kind is Ev.KERNEL]
    main = k.workload[0].ps_mainproc.p_name
    exits = [(f["proc"], f["flags"]) for f in kern if f["op"] == "exit1"]
    assert exits[0][1] == "EXIT_NORMAL" and exits[0][0] != main
    assert (main, "EXIT_THREAD_NOCHECK") in exits
    assert [f["proc"] for f in kern if f["op"] == "single_thread_set"] == [exits[0][0]]
    assert [f["proc"] for f in kern if f["op"] == "uvm_purge"] == [main]
    # main passes exit1 step 3 while the child still waits in single_thread_set (counted
    # in ps_threadcnt), so it must sleep "thrdeath" until the child has counted out
    assert any(f["op"] == "sleep" and f["proc"] == main and f["wmesg"] == "thrdeath" for f in kern)
    assert res["exit_events"]["tlbi"] == {"ASIDE1IS": 4, "VAALE1IS": 10}


def test_read_then_write_of_a_demand_page_is_fixed_up(tmp_path):
    """A read fault enters the page with only PROT_READ enabled (pmap_enter's flags =
    the access type); the write that follows takes a permission fault which
    pmap_fault_fixup resolves (modified-bit emulation) without uvm_fault."""
    from emu.trace import Ev, Trace
    t = Trace()
    res, m, k = go(guest=guest(tmp_path, """
	mov	x0, #0
	mov	x1, #0x1000
	mov	x2, #PROT_RW
	MOV32	x3, (MAP_PRIVATE | MAP_ANON)
	mov	x4, #-1
	mov	x5, #0
	SYSTRAP	SYS_mmap
	b.cs	1f
	ldr	x9, [x0]
	str	x0, [x0]
	ldr	x9, [x0]
	cmp	x9, x0
	b.ne	2f
	mov	x0, #0
	SYSTRAP	SYS_exit
2:	mov	x0, #100
	"""), strategy="purge", cpus=1, pages=4, trace=t)
    assert res["processes"][0]["status"] == 0
    kern = [f for _, _, kind, f in t.records if kind is Ev.KERNEL]
    traps = [f["fault"] for f in kern if f["op"] == "trap"]
    assert traps == ["translation", "permission"]
    assert sum(f["op"] == "pmap_fault_fixup" for f in kern) == 1
