/* Included first in every guest.asm.assemble() snippet: a snippet may leave out
 * `.globl _start` (and _start itself: then it starts at its base). */
#include <armmu/asm.h>
	.globl	_start
