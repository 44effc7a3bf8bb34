/*
 * _start for C workloads: main(), then exit(main's result). The kernel starts the
 * thread with sp at the top of the "stack" region declared here (guest/syscalls.py:
 * the exec ABI). STACK_TOP and STACK_SIZE may be set with -D.
 */
#include <armmu/asm.h>

#ifndef STACK_TOP
#define STACK_TOP	0x7fffff8000	/* VM_MAXUSER_ADDRESS, where OpenBSD puts USRSTACK */
#endif
#ifndef STACK_SIZE
#define STACK_SIZE	0x10000
#endif

	ARMMU_REGION stack, (STACK_TOP - STACK_SIZE), STACK_SIZE, PROT_RW, REGION_POPULATE

	.section .text.start, "ax", %progbits
	.globl	_start
	.type	_start, %function
_start:
	bl	main
	SYSTRAP	SYS_exit
	udf	#0xe1			/* exit returned: must not happen */
	.size	_start, . - _start
