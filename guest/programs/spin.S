// NSPIN sibling threads spin in user mode reading one page while main touches NPAGES pages and calls exit(0).
//
// @param NPAGES=16   heap pages main touches before it exits
// @param NSPIN=1     sibling threads that spin (1..255)
//
// Main starts NSPIN threads with __tfork. Sibling i sets STARTED[i] = 1 (store-release)
// and then loops forever loading the first word of the spin page, in user mode, never
// entering the kernel: only exit1's single_thread_set can stop it. Main touches its
// NPAGES data pages, waits (sched_yield) until every sibling has started, and calls
// exit(0) while they spin: their TLBs hold the spin page throughout the teardown.
// exit(2) if __tfork fails.
//
// Memory: text at the load base; heap [HEAP_BASE, HEAP_BASE + (NPAGES + 2) pages) rw-:
//   page 0 control (STARTED[i] at +8*i, TID[i] at +TID_OFF+8*i), page 1 the spin page,
//   pages 2.. data; stacks [STACK_TOP - (NSPIN + 1) * THREAD_STACK, STACK_TOP) rw-.
// Syscalls: __tfork, sched_yield, exit.
#include <armmu/asm.h>

#define TID_OFF		0x800
#define THREAD_STACK	0x4000
#define HEAP_BASE	0x20000000
#define HEAP_SIZE	((NPAGES + 2) * PAGE_SIZE)
#define STACK_TOP	0x7fffff8000
#define STACK_SIZE	((NSPIN + 1) * THREAD_STACK)

	ARMMU_REGION heap, HEAP_BASE, HEAP_SIZE, PROT_RW, REGION_POPULATE
	ARMMU_REGION stack, STACK_TOP - STACK_SIZE, STACK_SIZE, PROT_RW, REGION_POPULATE

	.text
	.globl	_start
_start:
	MOV48	x9, STACK_TOP
	mov	sp, x9
	MOV48	x20, HEAP_BASE			// x20 = control page
	add	x21, x20, #PAGE_SIZE		// x21 = spin page
	mov	x11, #THREAD_STACK
	mov	x19, #1				// index of the next sibling
	sub	sp, sp, #32			// struct __tfork { tcb, tid *, stack }
spawn:
	cmp	x19, #NSPIN
	b.hi	spawned
	str	xzr, [sp]
	add	x10, x20, #TID_OFF
	add	x10, x10, x19, lsl #3
	str	x10, [sp, #8]			// tf_tid = &TID[i]
	msub	x10, x19, x11, x9		// STACK_TOP - i*THREAD_STACK
	str	x10, [sp, #16]
	mov	x0, sp
	mov	x1, #TFORK_PARAM_SIZE
	SYSTRAP	SYS___tfork
	b.cs	tfork_failed
	cbz	x0, sibling
	add	x19, x19, #1
	b	spawn

spawned:
	add	sp, sp, #32
	add	x0, x21, #PAGE_SIZE		// data pages
	MOV32	x1, NPAGES
	cbz	x1, touched
1:	str	x0, [x0]
	add	x0, x0, #PAGE_SIZE
	subs	x1, x1, #1
	b.ne	1b
touched:
	mov	x19, #1
wait:
	cmp	x19, #NSPIN
	b.hi	main_exit
	add	x10, x20, x19, lsl #3
	ldar	x9, [x10]			// STARTED[i]
	cbnz	x9, wait_next
	SYSTRAP	SYS_sched_yield
	b	wait
wait_next:
	add	x19, x19, #1
	b	wait
main_exit:
	mov	x0, #0
	SYSTRAP	SYS_exit
	udf	#0xe1				// exit returned: must not happen

tfork_failed:
	mov	x0, #2
	SYSTRAP	SYS_exit
	udf	#0xe1

	.globl	sibling_spin
sibling:					// x19 = my index
	add	x10, x20, x19, lsl #3
	mov	x9, #1
	stlr	x9, [x10]			// STARTED[i] = 1
sibling_spin:
	ldr	x9, [x21]			// read the spin page, forever, in user mode
	b	sibling_spin
