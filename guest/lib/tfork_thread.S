/*
 * pid_t __tfork_thread(const struct __tfork *param, size_t psize, void (*func)(void *), void *arg)
 *
 * As OpenBSD's lib/libc/arch/aarch64/sys/tfork_thread.S 1.5: the child starts with the
 * parent's registers (x2 = func, x3 = arg survive the svc), x0 = 0 and sp = tf_stack;
 * it calls func(arg) and then __threxit(NULL). The parent gets the thread id, or
 * -errno when the kernel set PSTATE.C.
 */
#include <armmu/asm.h>

	.text
	.globl	__tfork_thread
	.type	__tfork_thread, %function
__tfork_thread:
	SYSTRAP	SYS___tfork
	b.cs	2f
	cbz	x0, 1f
	ret
1:	mov	x29, #0			/* child: no frame to return to */
	mov	x0, x3
	blr	x2
	mov	x0, #0
	SYSTRAP	SYS___threxit
	udf	#0xe2			/* __threxit returned: must not happen */
2:	neg	x0, x0
	ret
	.size	__tfork_thread, . - __tfork_thread
