"""A thread starts on the stack __tfork gave it (tf_sp = tf_stack in OpenBSD's
sys/arch/arm64/arm64/vm_machdep.c cpu_fork), not on its parent's: the kernel writes
SP_EL0 at EL1 and the CPU model banks it on the return to EL0."""
from __future__ import annotations

from .conftest import go

BODY = """
	MOV48	x20, 0x20000000            // struct __tfork
	str	xzr, [x20]
	str	xzr, [x20, #8]
	MOV48	x9, 0x7fffff4000
	str	x9, [x20, #16]             // the child's stack
	mov	x0, x20
	mov	x1, #TFORK_PARAM_SIZE
	SYSTRAP	SYS___tfork
	b.cs	bad
	cbz	x0, child
	mov	x9, sp                     // the parent keeps its own
	MOV48	x10, 0x7fffff8000
	cmp	x9, x10
	b.ne	bad
1:	SYSTRAP	SYS_sched_yield            // the child ends the process
	b	1b
child:	mov	x9, sp
	MOV48	x10, 0x7fffff4000
	cmp	x9, x10
	b.ne	bad
	mov	x0, #0
	SYSTRAP	SYS_exit
bad:	mov	x0, #1
	SYSTRAP	SYS_exit
"""


def test_a_new_thread_runs_on_its_own_stack(asm_guest):
    res, m, k = go(guest=asm_guest("stack", BODY), strategy="purge", cpus=2, pages=1, budgets={"max_insns": 200_000})
    assert res["outcome"]["completed"], res["outcome"]["reason"]
    assert res["processes"][0]["status"] == 0
