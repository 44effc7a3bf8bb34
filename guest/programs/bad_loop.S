// Bad input: spins forever in `b .` with no syscalls and no memory accesses (for instruction limits and watchdogs).
//
// Memory: text at the load base only. Syscalls: none.

	.text
	.globl	_start
_start:
	mov	x0, #0
spin:
	b	.
