// Bad input: branches through a register to an unmapped address (BAD_TARGET); the kernel must deliver an instruction abort (SIGSEGV).
//
// @param BAD_TARGET=0xdead0000   address jumped to (must be unmapped)
//
// Memory: text at the load base only. Syscalls: none.
#include <armmu/asm.h>

	.text
	.globl	_start
_start:
	MOV48	x9, BAD_TARGET
	.globl	jump
jump:
	br	x9
