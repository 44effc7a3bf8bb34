// Bad input: executes an undefined instruction (udf #0xbad); the kernel must kill the process (SIGILL), not hang.
//
// Three valid instructions run first, then UDF. Nothing after it should run; if the
// kernel resumes after the UDF anyway, the program calls exit(99).
// Memory: text at the load base only. Syscalls: (exit, only if mishandled).
#include <armmu/asm.h>

	.text
	.globl	_start
_start:
	mov	x0, #1
	mov	x1, #2
	add	x2, x0, x1
fault:
	udf	#0xbad
	mov	x0, #99
	SYSTRAP	SYS_exit
