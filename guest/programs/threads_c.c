// The threads workload in C: NTHREADS-1 threads from __tfork_thread each touch their share of NPAGES heap pages; main touches its share and returns 0.
//
// @param NPAGES=64      data pages touched in total
// @param NTHREADS=4     threads including main (1..64)
// @param THREAD_EXIT=0  what threads do after their share: 0 linger (sched_yield loop), 1 __threxit, 2 spin in user mode
// @param MAIN_WAIT=1    1: main waits for all threads' DONE before returning; 0: returns right after its share
//
// Same behaviour and control page as threads.S (DONE[i] at +8*i, TID[i] at
// +TID_OFF+8*i, data pages after it), written the way a C test program is: struct
// __tfork, __tfork_thread(param, size, func, arg), C11 atomics. Thread stacks are a
// region of their own below crt0's main stack. main returns 2 if __tfork fails.
#include <armmu.h>

#define HEAP_BASE	0x20000000UL
#define TID_OFF		0x800
#define THREAD_STACK	0x4000UL
#define TSTACKS_TOP	(0x7fffff8000UL - 0x10000UL)	/* below crt0.S's 64 KB main stack */
#define PER		(NPAGES / NTHREADS)

ARMMU_REGION(heap, HEAP_BASE, (NPAGES + 1) * PAGE_SIZE, PROT_RW, REGION_POPULATE);
ARMMU_REGION(tstacks, TSTACKS_TOP - (NTHREADS - 1) * THREAD_STACK, (NTHREADS - 1) * THREAD_STACK,
    PROT_RW, REGION_POPULATE);

static unsigned long *const done = (unsigned long *)HEAP_BASE;
static const unsigned long data = HEAP_BASE + PAGE_SIZE;

static void
touch(unsigned long page, unsigned long n)
{
	for (; n; n--, page += PAGE_SIZE)
		*(volatile unsigned long *)page = page;
}

static void
thread_main(void *arg)
{
	long i = (long)arg;

	touch(data + i * PER * PAGE_SIZE, PER);
	atomic_store_rel(&done[i], 1);
	if (THREAD_EXIT == 1)
		__threxit(NULL);
	for (;;) {
		if (THREAD_EXIT == 2)
			(void)*(volatile unsigned long *)&done[i];
		else
			sched_yield();
	}
}

int
main(void)
{
	for (long i = 1; i < NTHREADS; i++) {
		struct __tfork tf = {
			.tf_tcb = NULL,
			.tf_tid = (pid_t *)(HEAP_BASE + TID_OFF + 8 * i),
			.tf_stack = (void *)(TSTACKS_TOP - (i - 1) * THREAD_STACK),
		};
		if (__tfork_thread(&tf, sizeof(tf), thread_main, (void *)i) < 0)
			return 2;
	}
	touch(data, PER);
	touch(data + PER * NTHREADS * PAGE_SIZE, NPAGES - PER * NTHREADS);
	if (MAIN_WAIT)
		for (long i = 1; i < NTHREADS; i++)
			while (!atomic_load_acq(&done[i]))
				sched_yield();
	return 0;
}
