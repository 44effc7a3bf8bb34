/*
 * The freestanding guest library for C workloads: there is no libc. A C workload
 * defines main(); guest/lib/crt0.S provides _start, which calls main and then exit
 * with its result. The system calls below trap as OpenBSD's libc does (svc #0, then
 * dsb nsh; isb, which the kernel skips) and return what the kernel put in x0, or
 * -errno when it set PSTATE.C (the kernel's error convention; libc would set errno).
 */
#ifndef ARMMU_H
#define ARMMU_H

#include <stddef.h>
#include <stdint.h>

#include <armmu/syscall.h>
#include <armmu/region.h>

#define PAGE_SIZE 4096UL

typedef int pid_t;

struct __tfork {
	void	*tf_tcb;	/* TPIDR_EL0 of the new thread */
	pid_t	*tf_tid;	/* where the kernel stores the new thread's id */
	void	*tf_stack;	/* its initial sp */
};

static inline long
__syscall6(long n, long a0, long a1, long a2, long a3, long a4, long a5)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a0;
	register long x1 __asm__("x1") = a1;
	register long x2 __asm__("x2") = a2;
	register long x3 __asm__("x3") = a3;
	register long x4 __asm__("x4") = a4;
	register long x5 __asm__("x5") = a5;
	long err;

	__asm__ volatile("svc #0\n\tdsb nsh\n\tisb\n\tcset %1, cs"
	    : "+r"(x0), "=r"(err), "+r"(x1)
	    : "r"(x8), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
	    : "memory", "cc");
	return err ? -x0 : x0;
}

#define __syscall0(n)		__syscall6((n), 0, 0, 0, 0, 0, 0)
#define __syscall1(n, a)	__syscall6((n), (long)(a), 0, 0, 0, 0, 0)
#define __syscall2(n, a, b)	__syscall6((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define __syscall3(n, a, b, c)	__syscall6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)

static inline __attribute__((noreturn)) void
exit(int status)
{
	__syscall1(SYS_exit, status);
	__builtin_trap();
}

static inline __attribute__((noreturn)) void
__threxit(pid_t *notdead)
{
	__syscall1(SYS___threxit, notdead);
	__builtin_trap();
}

static inline long write(int fd, const void *buf, size_t n)	{ return __syscall3(SYS_write, fd, buf, n); }
static inline pid_t getpid(void)			{ return (pid_t)__syscall0(SYS_getpid); }
static inline int sched_yield(void)			{ return (int)__syscall0(SYS_sched_yield); }
static inline int munmap(void *addr, size_t len)	{ return (int)__syscall2(SYS_munmap, addr, len); }
static inline int mprotect(void *addr, size_t len, int prot) { return (int)__syscall3(SYS_mprotect, addr, len, prot); }
static inline pid_t wait4(pid_t pid, int *status, int options, void *rusage)
{
	return (pid_t)__syscall6(SYS_wait4, pid, (long)status, options, (long)rusage, 0, 0);
}

/* mmap: the address, or a small negative errno (test with mmap_failed) */
static inline void *
mmap(void *addr, size_t len, int prot, int flags, int fd, long pos)
{
	return (void *)__syscall6(SYS_mmap, (long)addr, (long)len, prot, flags, fd, pos);
}
#define mmap_failed(p)	((unsigned long)(p) >= (unsigned long)-4095)

/*
 * Start a thread running func(arg) on param->tf_stack; it calls __threxit(NULL) if
 * func returns. Returns the new thread's id to the caller, or -errno
 * (guest/lib/tfork_thread.S, after OpenBSD's lib/libc/arch/aarch64/sys/tfork_thread.S).
 */
pid_t __tfork_thread(const struct __tfork *param, size_t psize, void (*func)(void *), void *arg);

/* C11 atomics on plain words, for flags shared between threads */
#define atomic_load_acq(p)	__atomic_load_n((p), __ATOMIC_ACQUIRE)
#define atomic_store_rel(p, v)	__atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define atomic_inc(p)		__atomic_add_fetch((p), 1, __ATOMIC_ACQ_REL)

/* what the compiler may call (guest/lib/string.c) */
void *memset(void *, int, size_t);
void *memcpy(void *, const void *, size_t);
void *memmove(void *, const void *, size_t);
int memcmp(const void *, const void *, size_t);

#endif
