/*
 * The instruction sequences several workloads share (guest/programs/*.S): setting up the
 * stack, spawning threads with __tfork, waiting for their flags, touching pages, exit.
 * Each macro expands to exactly the instructions the workloads spelled out before, so
 * instruction counts and the pinned bytes do not change. Labels inside are numeric (1:, 2:, 3:).
 */
#ifndef ARMMU_WORKLOAD_H
#define ARMMU_WORKLOAD_H

#include <armmu/asm.h>

/* sp = x9 = top (TFORK_SPAWN computes the children's stacks from x9) */
.macro SET_STACK top
	MOV48	x9, \top
	mov	sp, x9
.endm

/*
 * __tfork threads 1, 2, ... until "cmp x19, #limit; b.<stop>" leaves the loop (stop = hi:
 * threads 1..limit; hs: 1..limit-1). Needs x9 = stack top, x11 = bytes of stack per
 * thread, x20 = control page with TID[i] at +tid_off+8*i. A child resumes at child with
 * x19 = its index and sp = top - index*stack; failed is reached with PSTATE.C set.
 */
.macro TFORK_SPAWN stop, limit, tid_off, child, failed
	mov	x19, #1				// index of the next thread
	sub	sp, sp, #32			// struct __tfork { tcb, tid *, stack }
1:	cmp	x19, #\limit
	b.\stop	2f
	str	xzr, [sp]			// tf_tcb = NULL
	add	x10, x20, #\tid_off
	add	x10, x10, x19, lsl #3
	str	x10, [sp, #8]			// tf_tid = &TID[i]
	msub	x10, x19, x11, x9		// top - i*stack
	str	x10, [sp, #16]			// tf_stack
	mov	x0, sp
	mov	x1, #TFORK_PARAM_SIZE
	SYSTRAP	SYS___tfork
	b.cs	\failed
	cbz	x0, \child			// the child sees 0; the parent the new thread id
	add	x19, x19, #1
	b	1b
2:	add	sp, sp, #32
.endm

/* Wait, calling sched_yield, until the word at x20 + 8*i is set (load-acquire) for each
 * i = 1, 2, ... until "cmp x19, #limit; b.<stop>" leaves the loop. Uses x9, x10, x19. */
.macro WAIT_FLAGS stop, limit
	mov	x19, #1
1:	cmp	x19, #\limit
	b.\stop	3f
	add	x10, x20, x19, lsl #3
	ldar	x9, [x10]
	cbnz	x9, 2f
	SYSTRAP	SYS_sched_yield
	b	1b
2:	add	x19, x19, #1
	b	1b
3:
.endm

/* Store each page's address into its first word: count pages from ptr, step bytes apart. */
.macro TOUCH_PAGES ptr, count, step
	cbz	\count, 2f
1:	str	\ptr, [\ptr]
	add	\ptr, \ptr, \step
	subs	\count, \count, #1
	b.ne	1b
2:
.endm

/* Add 1 to the first word of count pages from base, step bytes apart. Uses x1, x2, x3. */
.macro BUMP_PAGES base, count, step
	mov	x1, \base
	mov	x2, \count
	cbz	x2, 2f
1:	ldr	x3, [x1]
	add	x3, x3, #1
	str	x3, [x1]
	add	x1, x1, \step
	subs	x2, x2, #1
	b.ne	1b
2:
.endm

/* exit(status); exit does not return */
.macro EXIT status
	mov	x0, #\status
	SYSTRAP	SYS_exit
	udf	#0xe1				// exit returned: must not happen
.endm

#endif
