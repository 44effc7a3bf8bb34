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
#include <armmu/workload.h>

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
	SET_STACK STACK_TOP
	MOV48	x20, HEAP_BASE			// x20 = control page
	add	x21, x20, #PAGE_SIZE		// x21 = first data page
	mov	x11, #THREAD_STACK
	TFORK_SPAWN hs, NTHREADS, TID_OFF, work, tfork_failed	// the child: x19 = its index
	mov	x19, #0				// main is thread 0

work:
	MOV32	x9, SHARE
	madd	x0, x19, x9, x21		// my first page
	MOV32	x1, NPAGES
	TOUCH_PAGES x0, x1, #PAGE_SIZE
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
	EXIT	0

tfork_failed:
	EXIT	2
