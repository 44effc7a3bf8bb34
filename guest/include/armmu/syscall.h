/* Generated from guest/syscalls.py by `python -m guest.syscalls`: do not edit. */
#ifndef ARMMU_SYSCALL_H
#define ARMMU_SYSCALL_H

#define SYS_exit             1
#define SYS_fork             2
#define SYS_read             3
#define SYS_write            4
#define SYS___tfork          8
#define SYS_wait4            11
#define SYS_getpid           20
#define SYS_mmap             49
#define SYS_munmap           73
#define SYS_mprotect         74
#define SYS_sched_yield      298
#define SYS___threxit        302

#define PROT_NONE            0x0
#define PROT_READ            0x1
#define PROT_WRITE           0x2
#define PROT_EXEC            0x4
#define MAP_SHARED           0x1
#define MAP_PRIVATE          0x2
#define MAP_FIXED            0x10
#define MAP_ANON             0x1000
#define MAP_STACK            0x4000
#define MAP_POPULATE         0x10000
#define EPERM                1
#define ENOMEM               12
#define EFAULT               14
#define EINVAL               22
#define EAGAIN               35
#define ENOSYS               78
#define TFORK_PARAM_SIZE     24

#endif
