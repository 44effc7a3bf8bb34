// NTHREADS threads each touch NPAGES pages of their own, meet at a barrier, and the process exits at once (run P copies for an exit storm).
//
// @param NTHREADS=4   threads including main (1..256)
// @param NPAGES=64    pages touched by each thread
// @param EXIT_ALL=0   0: main calls exit(0) at the barrier, the others sched_yield; 1: every thread calls exit(0) at once
//
// Thread i (main is 0) stores into data pages [i*NPAGES, (i+1)*NPAGES), then adds 1 to
// ARRIVED (an exclusive-monitor loop) and waits, calling sched_yield, until all
// NTHREADS have arrived. exit(2) if __tfork fails.
//
// Memory: text at the load base; heap [HEAP_BASE, HEAP_BASE + (NTHREADS * NPAGES + 1) pages)
//   rw-: page 0 control (ARRIVED at +0, TID[i] at +TID_OFF+8*i), data pages after it;
//   stacks [STACK_TOP - NTHREADS * THREAD_STACK, STACK_TOP) rw-.
// Syscalls: __tfork, sched_yield, exit.
#include <armmu/asm.h>

#define TID_OFF		0x800
#define THREAD_STACK	0x4000
#define HEAP_BASE	0x20000000
#define HEAP_SIZE	((NTHREADS * NPAGES + 1) * PAGE_SIZE)
#define STACK_TOP	0x7fffff8000
#define STACK_SIZE	(NTHREADS * THREAD_STACK)
#define SHARE		(NPAGES * PAGE_SIZE)	/* bytes of pages per thread */

	ARMMU_REGION heap, HEAP_BASE, HEAP_SIZE, PROT_RW, REGION_POPULATE
	ARMMU_REGION stack, STACK_TOP - STACK_SIZE, STACK_SIZE, PROT_RW, REGION_POPULATE

	.text
	.globl	_start
_start:
	MOV48	x9, STACK_TOP
	mov	sp, x9
	MOV48	x20, HEAP_BASE			// x20 = control page
	add	x21, x20, #PAGE_SIZE		// x21 = first data page
	mov	x11, #THREAD_STACK
	mov	x19, #1
	sub	sp, sp, #32			// struct __tfork { tcb, tid *, stack }
spawn:
	cmp	x19, #NTHREADS
	b.hs	spawned
	str	xzr, [sp]
	add	x10, x20, #TID_OFF
	add	x10, x10, x19, lsl #3
	str	x10, [sp, #8]
	msub	x10, x19, x11, x9
	str	x10, [sp, #16]
	mov	x0, sp
	mov	x1, #TFORK_PARAM_SIZE
	SYSTRAP	SYS___tfork
	b.cs	tfork_failed
	cbz	x0, work			// the child: x19 = its index
	add	x19, x19, #1
	b	spawn
spawned:
	add	sp, sp, #32
	mov	x19, #0				// main is thread 0

work:
	MOV32	x9, SHARE
	madd	x0, x19, x9, x21		// my first page
	MOV32	x1, NPAGES
	cbz	x1, arrive
1:	str	x0, [x0]
	add	x0, x0, #PAGE_SIZE
	subs	x1, x1, #1
	b.ne	1b
arrive:
	ldaxr	x9, [x20]			// ARRIVED++
	add	x9, x9, #1
	stlxr	w10, x9, [x20]
	cbnz	w10, arrive
barrier:
	ldar	x9, [x20]
	cmp	x9, #NTHREADS
	b.hs	go
	SYSTRAP	SYS_sched_yield
	b	barrier
go:
	mov	x9, #EXIT_ALL
	cbnz	x9, do_exit
	cbz	x19, do_exit
linger:
	SYSTRAP	SYS_sched_yield
	b	linger
do_exit:
	mov	x0, #0
	SYSTRAP	SYS_exit
	udf	#0xe1				// exit returned: must not happen

tfork_failed:
	mov	x0, #2
	SYSTRAP	SYS_exit
	udf	#0xe1
