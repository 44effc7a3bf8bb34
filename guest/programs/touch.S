// Touch NPAGES heap pages (one 8-byte store per page), read them back and sum; exit(0) if the sums agree, else exit(1).
//
// @param NPAGES=64    number of heap pages to touch
// @param POPULATE=1   1: every heap page is entered at load (or by mmap); 0: the kernel enters them on fault
// @param MMAP=0       1: get the heap from mmap(2) at HEAP_BASE instead of declaring it (exit(3) if mmap fails)
//
// Store pass: for p in [0, NPAGES): *(u64 *)(HEAP_BASE + p*PAGE_SIZE) = that address.
// Load pass: read the same words back and add them up. The exit status is 0 when the
// sum read equals the sum written (what a correct MMU gives), 1 otherwise.
// One word is also pushed on the stack, so the stack page is really used.
// Instructions up to and including the exit svc (MMAP=0): 22 + 10 per page.
//
// Memory: text at the load base; heap [HEAP_BASE, HEAP_BASE + NPAGES pages) rw-;
//         stack [STACK_TOP - PAGE_SIZE, STACK_TOP) rw-. Syscalls: exit (and mmap).
#include <armmu/workload.h>

#define HEAP_BASE	0x20000000
#define HEAP_SIZE	(NPAGES * PAGE_SIZE)
#define STACK_TOP	0x7fffff8000		/* VM_MAXUSER_ADDRESS, OpenBSD's USRSTACK */
#define STACK_SIZE	PAGE_SIZE
#if POPULATE
#define HEAP_FLAGS	REGION_POPULATE
#define MAP_FLAGS	(MAP_PRIVATE | MAP_ANON | MAP_FIXED | MAP_POPULATE)
#else
#define HEAP_FLAGS	REGION_DEMAND
#define MAP_FLAGS	(MAP_PRIVATE | MAP_ANON | MAP_FIXED)
#endif

#if !MMAP
	ARMMU_REGION heap, HEAP_BASE, HEAP_SIZE, PROT_RW, HEAP_FLAGS
#endif
	ARMMU_REGION stack, STACK_TOP - STACK_SIZE, STACK_SIZE, PROT_RW, REGION_POPULATE

	.text
	.globl	_start
_start:
	SET_STACK STACK_TOP
	str	xzr, [sp, #-16]!		// use the stack page

#if MMAP && NPAGES
	MOV48	x0, HEAP_BASE			// mmap(HEAP_BASE, HEAP_SIZE, PROT_RW, MAP_FLAGS, -1, 0)
	MOV32	x1, HEAP_SIZE
	mov	x2, #PROT_RW
	MOV32	x3, MAP_FLAGS
	mov	x4, #-1
	mov	x5, #0
	SYSTRAP	SYS_mmap
	b.cs	mmap_failed
	mov	x20, x0
#else
	MOV48	x20, HEAP_BASE
#endif
	MOV32	x21, NPAGES
	mov	x22, #0				// sum written
	mov	x23, #0				// sum read

	mov	x1, x20
	mov	x2, x21
	cbz	x2, stored
store_loop:
	str	x1, [x1]
	add	x22, x22, x1
	add	x1, x1, #PAGE_SIZE
	subs	x2, x2, #1
	b.ne	store_loop
stored:
	mov	x1, x20
	mov	x2, x21
	cbz	x2, loaded
load_loop:
	ldr	x3, [x1]
	add	x23, x23, x3
	add	x1, x1, #PAGE_SIZE
	subs	x2, x2, #1
	b.ne	load_loop
loaded:
	cmp	x22, x23
	cset	x0, ne				// exit status: 0 = every page read back what was stored
	SYSTRAP	SYS_exit			// OpenBSD: the kernel resumes after its barrier pair
	udf	#0xe1				// exit returned: must not happen

#if MMAP && NPAGES
mmap_failed:
	EXIT	3
#endif
