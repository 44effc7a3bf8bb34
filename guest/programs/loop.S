// TLB-friendly benchmark loop: ITERS iterations, each adds 1 to one word on each of NPAGES heap pages; then exit(0).
//
// @param ITERS=100000  iterations
// @param NPAGES=4      pages touched per iteration (keep it small: fits any L1 TLB)
//
// An iteration is 6 instructions per page plus 7 (31 for NPAGES=4). At the end the
// word at the start of every page holds ITERS and the word at HEAP_BASE+RESULT holds
// the number of iterations executed.
//
// Memory: text at the load base; heap [HEAP_BASE, HEAP_BASE + NPAGES pages) rw-;
//         stack [STACK_TOP - PAGE_SIZE, STACK_TOP) rw-. Syscalls: exit.
#include <armmu/workload.h>

#define RESULT		8			/* offset from HEAP_BASE of the iteration count */
#define HEAP_BASE	0x20000000
#define HEAP_SIZE	(NPAGES * PAGE_SIZE)
#define STACK_TOP	0x7fffff8000
#define STACK_SIZE	PAGE_SIZE

	ARMMU_REGION heap, HEAP_BASE, HEAP_SIZE, PROT_RW, REGION_POPULATE
	ARMMU_REGION stack, STACK_TOP - STACK_SIZE, STACK_SIZE, PROT_RW, REGION_POPULATE

	.text
	.globl	_start
_start:
	SET_STACK STACK_TOP
	MOV48	x20, HEAP_BASE
	MOV32	x21, ITERS
	movz	x23, #NPAGES & 0xffff
	mov	x22, #0				// iterations done
outer:
	cmp	x22, x21
	b.hs	done
	BUMP_PAGES x20, x23, #PAGE_SIZE
	add	x22, x22, #1
	b	outer
done:
	str	x22, [x20, #RESULT]
	EXIT	0
