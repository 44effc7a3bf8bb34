// TLB-hostile loop: PASSES passes over NPAGES heap pages STRIDE bytes apart, adding 1 to one word per page; then exit(0).
//
// @param NPAGES=2048   words (pages) touched per pass
// @param PASSES=4      passes over all of them
// @param STRIDE=4096   bytes between touched words (4096 = one per 4 KB page)
//
// With the defaults every access of a pass misses an L1 TLB and most L2 TLBs
// (Cortex-A53: 512 entries, A72: 1024, N1: 1280), so each access walks. An access is
// 6 instructions. At the end each touched word holds PASSES.
//
// Memory: text at the load base; heap [HEAP_BASE, HEAP_BASE + NPAGES * STRIDE) rw-;
//         stack [STACK_TOP - PAGE_SIZE, STACK_TOP) rw-. Syscalls: exit.
#include <armmu/workload.h>

#define HEAP_BASE	0x20000000
#define HEAP_SIZE	(NPAGES * STRIDE)
#define STACK_TOP	0x7fffff8000
#define STACK_SIZE	PAGE_SIZE

	ARMMU_REGION heap, HEAP_BASE, HEAP_SIZE, PROT_RW, REGION_POPULATE
	ARMMU_REGION stack, STACK_TOP - STACK_SIZE, STACK_SIZE, PROT_RW, REGION_POPULATE

	.text
	.globl	_start
_start:
	SET_STACK STACK_TOP
	MOV48	x20, HEAP_BASE
	MOV32	x21, PASSES
	MOV32	x23, NPAGES
	MOV32	x24, STRIDE
	mov	x22, #0				// passes done
pass:
	cmp	x22, x21
	b.hs	done
	BUMP_PAGES x20, x23, x24
	add	x22, x22, #1
	b	pass
done:
	EXIT	0
