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
#include <armmu/workload.h>

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
	SET_STACK STACK_TOP
	MOV48	x20, HEAP_BASE			// x20 = control page
	add	x21, x20, #PAGE_SIZE		// x21 = spin page
	mov	x11, #THREAD_STACK
	TFORK_SPAWN hi, NSPIN, TID_OFF, sibling, tfork_failed	// siblings 1..NSPIN
	add	x0, x21, #PAGE_SIZE		// data pages
	MOV32	x1, NPAGES
	TOUCH_PAGES x0, x1, #PAGE_SIZE
	WAIT_FLAGS hi, NSPIN			// STARTED[1..NSPIN]
	EXIT	0

tfork_failed:
	EXIT	2

	.globl	sibling_spin
sibling:					// x19 = my index
	add	x10, x20, x19, lsl #3
	mov	x9, #1
	stlr	x9, [x10]			// STARTED[i] = 1
sibling_spin:
	ldr	x9, [x21]			// read the spin page, forever, in user mode
	b	sibling_spin
