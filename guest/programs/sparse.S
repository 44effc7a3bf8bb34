// Touch NPAGES pages STRIDE bytes apart (default one per 2 MB, so each needs an L3 table of its own); exit(0).
//
// @param NPAGES=64       pages touched (one store each)
// @param STRIDE=0x200000 bytes between them: 2 MB puts every page under its own L3 table
// @param MMAP=0          1: mmap(2) each page (MAP_FIXED | MAP_POPULATE) instead of a demand-paged region; exit(3) if one fails
//
// The address space this leaves has one user page per page-table page, so tearing it
// down frees about as many table frames as data frames. With MMAP=0 the pages come
// from a demand region: the kernel enters only the NPAGES pages that are touched.
// Instructions up to and including the exit svc (MMAP=0): 17 + 4 per page.
//
// Memory: text at the load base; region [HEAP_BASE, HEAP_BASE + NPAGES * STRIDE) rw-
//         (demand) or NPAGES mmaps; stack [STACK_TOP - PAGE_SIZE, STACK_TOP) rw-.
// Syscalls: exit (and mmap).
#include <armmu/workload.h>

#define HEAP_BASE	0x40000000		/* 1 GB aligned: L1 index 1 */
#define STACK_TOP	0x7fffff8000
#define STACK_SIZE	PAGE_SIZE

#if !MMAP
	ARMMU_REGION sparse, HEAP_BASE, NPAGES * STRIDE, PROT_RW, REGION_DEMAND
#endif
	ARMMU_REGION stack, STACK_TOP - STACK_SIZE, STACK_SIZE, PROT_RW, REGION_POPULATE

	.text
	.globl	_start
_start:
	SET_STACK STACK_TOP
	MOV48	x20, HEAP_BASE
	MOV32	x21, NPAGES
	MOV32	x24, STRIDE
#if MMAP
	mov	x19, x20			// mmap(va, PAGE_SIZE, PROT_RW, MAP_FIXED | MAP_POPULATE ..., -1, 0)
	mov	x22, x21
	cbz	x22, mapped
map_loop:
	mov	x0, x19
	mov	x1, #PAGE_SIZE
	mov	x2, #PROT_RW
	MOV32	x3, (MAP_PRIVATE | MAP_ANON | MAP_FIXED | MAP_POPULATE)
	mov	x4, #-1
	mov	x5, #0
	SYSTRAP	SYS_mmap
	b.cs	mmap_failed
	add	x19, x19, x24
	subs	x22, x22, #1
	b.ne	map_loop
mapped:
#endif
	mov	x1, x20
	mov	x2, x21
	TOUCH_PAGES x1, x2, x24
	EXIT	0
#if MMAP
mmap_failed:
	EXIT	3
#endif
