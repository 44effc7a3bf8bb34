// Spawn NTHREADS-1 threads with __tfork; each thread touches its share of NPAGES heap pages; main touches its share and calls exit(0).
//
// @param NPAGES=64      data pages touched in total
// @param NTHREADS=4     threads including main (1..256)
// @param THREAD_EXIT=0  what threads do after their share: 0 linger (sched_yield loop), 1 __threxit, 2 spin in user mode
// @param MAIN_WAIT=1    1: main waits for all threads' DONE before exit(0); 0: exits right after its share
//
// Thread i (main is 0) stores its page's address into the first word of data pages
// [i*PER, (i+1)*PER) with PER = NPAGES / NTHREADS; main also takes the remainder pages.
// After its share thread i >= 1 sets DONE[i] = 1 (store-release) and then, by THREAD_EXIT:
//   0 linger:  calls sched_yield in a loop forever (it dies when main calls exit)
//   1 threxit: calls __threxit(NULL)
//   2 spin:    spins in user mode re-reading DONE[i] (never enters the kernel)
// Main, after spawning and touching its share, waits (calling sched_yield) until
// DONE[i] is set for every thread when MAIN_WAIT=1, then calls exit(0); with MAIN_WAIT=0
// it calls exit(0) at once, possibly while siblings are still touching pages.
// If __tfork fails (PSTATE.C set) main calls exit(2).
//
// Memory: text at the load base; heap [HEAP_BASE, HEAP_BASE + (NPAGES + 1) pages) rw-,
//   whose page 0 is the control page (DONE[i] at +8*i, TID[i] written by the kernel at
//   +TID_OFF+8*i) and pages 1..NPAGES are data; stacks [STACK_TOP - NTHREADS*THREAD_STACK,
//   STACK_TOP) rw-, thread i starting with sp = STACK_TOP - i*THREAD_STACK (main pushes
//   the struct __tfork on its own stack).
// Children rely on the __tfork ABI (registers inherited, x0 = 0, sp = tf_stack; see
// guest/syscalls.py): x19 = thread index. Syscalls: __tfork, sched_yield, __threxit, exit.
#include <armmu/workload.h>

#define PER		(NPAGES / NTHREADS)	/* pages per thread */
#define REM_START	(PER * NTHREADS)	/* main also touches [REM_START, NPAGES) */
#define REM_COUNT	(NPAGES - REM_START)
#define TID_OFF		0x800			/* TID[i] in the control page */
#define THREAD_STACK	0x4000			/* stack bytes per thread */
#define HEAP_BASE	0x20000000		/* control page; data pages follow */
#define HEAP_SIZE	((NPAGES + 1) * PAGE_SIZE)
#define STACK_TOP	0x7fffff8000		/* main's initial sp */
#define STACK_SIZE	(NTHREADS * THREAD_STACK)

	ARMMU_REGION heap, HEAP_BASE, HEAP_SIZE, PROT_RW, REGION_POPULATE
	ARMMU_REGION stack, STACK_TOP - STACK_SIZE, STACK_SIZE, PROT_RW, REGION_POPULATE

	.text
	.globl	_start
_start:
	SET_STACK STACK_TOP
	MOV48	x20, HEAP_BASE			// x20 = control page
	add	x21, x20, #PAGE_SIZE		// x21 = first data page
	movz	x11, #THREAD_STACK & 0xffff
	movk	x11, #(THREAD_STACK >> 16) & 0xffff, lsl #16
	TFORK_SPAWN hs, NTHREADS, TID_OFF, child, tfork_failed	// threads 1..NTHREADS-1
	mov	x0, x21				// main's share: [0, PER) ...
	MOV32	x1, PER
	bl	touch
	movz	x9, #((REM_START * PAGE_SIZE) >> 16) & 0xffff, lsl #16
	movk	x9, #(REM_START * PAGE_SIZE) & 0xffff
	add	x0, x21, x9			// ... and [REM_START, NPAGES)
	movz	x1, #REM_COUNT & 0xffff
	bl	touch
	mov	x9, #MAIN_WAIT
	cbz	x9, main_exit
	WAIT_FLAGS hs, NTHREADS			// DONE[1..NTHREADS-1]
main_exit:
	EXIT	0

tfork_failed:
	EXIT	2

child:						// x19 = my index, sp = my stack
	movz	x9, #((PER * PAGE_SIZE) >> 16) & 0xffff, lsl #16
	movk	x9, #(PER * PAGE_SIZE) & 0xffff
	madd	x0, x19, x9, x21		// first page of my share
	MOV32	x1, PER
	bl	touch
	add	x10, x20, x19, lsl #3
	mov	x9, #1
	stlr	x9, [x10]			// DONE[i] = 1
	mov	x9, #THREAD_EXIT
	cmp	x9, #1
	b.eq	child_threxit
	cmp	x9, #2
	b.eq	child_spin
child_linger:
	SYSTRAP	SYS_sched_yield
	b	child_linger
child_threxit:
	mov	x0, #0				// notdead = NULL
	SYSTRAP	SYS___threxit
	udf	#0xe2				// __threxit returned: must not happen
child_spin:
	ldr	x9, [x10]
	yield
	b	child_spin

// touch(x0 = first page, x1 = number of pages): store each page's address into it.
touch:
	TOUCH_PAGES x0, x1, #PAGE_SIZE
	ret
