/*
 * What an assembly workload includes: the syscall numbers, ARMMU_REGION, and a few
 * macros that spell out the instruction sequences the workloads use everywhere.
 */
#ifndef ARMMU_ASM_H
#define ARMMU_ASM_H

#include <armmu/syscall.h>
#include <armmu/region.h>

#define PAGE_SIZE 4096

/*
 * A system call as OpenBSD's libc issues it (SYSTRAP in lib/libc/arch/aarch64/SYS.h):
 * the number in x8, svc #0, then a speculation barrier that never runs, because the
 * kernel resumes 8 bytes past svc+4 (sys/arch/arm64/arm64/syscall.c).
 */
.macro SYSTRAP num
	mov	x8, #\num
	svc	#0
	dsb	nsh
	isb
.endm

/* reg = a 48-bit constant: 3 instructions, whatever the value */
.macro MOV48 reg, val
	movz	\reg, #((\val) >> 32) & 0xffff, lsl #32
	movk	\reg, #((\val) >> 16) & 0xffff, lsl #16
	movk	\reg, #(\val) & 0xffff
.endm

/* reg = a 32-bit constant: 2 instructions, whatever the value */
.macro MOV32 reg, val
	movz	\reg, #(\val) & 0xffff
	movk	\reg, #((\val) >> 16) & 0xffff, lsl #16
.endm

#endif
