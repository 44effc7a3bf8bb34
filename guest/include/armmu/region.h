/*
 * The memory a workload needs besides its ELF segments (heap, stack, thread stacks),
 * declared once, in the source, where the loader and the kernel model read it: one
 * record per region in the non-loaded ELF section .armmu.regions (guest/image.py
 * decodes it).
 *
 *   struct armmu_region { char name[16]; u64 start; u64 size; u32 prot; u32 flags; }
 *
 * prot is PROT_READ|PROT_WRITE|PROT_EXEC; flags REGION_POPULATE means every page is
 * entered at load (an eager populate), 0 that the kernel enters pages on fault.
 * A name has at most 16 characters. A region of size 0 is left out. In .S:   ARMMU_REGION heap, HEAP_BASE, HEAP_SIZE, PROT_RW, REGION_POPULATE
 *                              in C:     ARMMU_REGION(heap, HEAP_BASE, HEAP_SIZE, PROT_RW, REGION_POPULATE);
 */
#ifndef ARMMU_REGION_H
#define ARMMU_REGION_H

#include <armmu/syscall.h>

#define REGION_DEMAND           0x0
#define REGION_POPULATE         0x1
#define PROT_RW                 (PROT_READ | PROT_WRITE)

#ifdef __ASSEMBLER__
.macro ARMMU_REGION name, start, size, prot, flags
	.pushsection .armmu.regions, "a", %progbits
	.balign 8
.Larmmu_region_\@:
	.ascii "\name"
	.if . - .Larmmu_region_\@ > 16
	.error "ARMMU_REGION: a region name has at most 16 characters"
	.endif
	.org .Larmmu_region_\@ + 16
	.quad \start
	.quad \size
	.word \prot
	.word \flags
	.popsection
.endm
#else
struct armmu_region {
	char name[16];
	unsigned long start;
	unsigned long size;
	unsigned int prot;
	unsigned int flags;
};

#define ARMMU_REGION(name, start, size, prot, flags)				\
	__attribute__((used, section(".armmu.regions"), aligned(8)))		\
	static const struct armmu_region __armmu_region_##name =		\
	    { #name, (start), (size), (prot), (flags) }
#endif

#endif
