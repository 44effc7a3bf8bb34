"""System-call numbers and ABI of the emulated kernel (OpenBSD arm64 numbering).

ABI (as on OpenBSD/arm64, ``sys/arch/arm64/arm64/syscall.c``)
-------------------------------------------------------------
* The guest puts the syscall number in ``x8`` and the arguments in ``x0``..``x5``,
  then executes ``svc #0``.
* Result: ``x0`` (``x1`` for a second result word). Success clears PSTATE.C; on error
  the kernel puts the errno value in ``x0`` and sets PSTATE.C (guests test ``b.cs``).
* OpenBSD's libc follows every ``svc #0`` with a speculation barrier, ``dsb nsh; isb``,
  and the kernel resumes user space 8 bytes past the usual return address (ELR = svc+4,
  then ``tf_elr += 8``), so the barrier never runs architecturally. Our guest programs
  use the same 3-instruction sequence. Kernel models should resume at
  ``Image.syscall_return(svc_va)`` (guest/image.py) which returns svc+12 when the barrier pair is
  present and svc+4 otherwise (so hand-written guests without it work too). Unicorn's
  UC_HOOK_INTR (intno 2) reports PC = svc+4; the svc address is PC-4.
* ``__tfork(param, psize)``: ``param`` points to ``struct __tfork { void *tf_tcb;
  pid_t *tf_tid; void *tf_stack; }`` (24 bytes, psize=24). The child starts with a copy
  of the parent's registers except ``x0 = 0``, ``sp = tf_stack``, TPIDR_EL0 = tf_tcb,
  and resumes at the same return address as the parent; the kernel stores the new
  thread id (a 32-bit pid_t) at ``*tf_tid``. The parent gets the thread id in ``x0``.
* ``__threxit(notdead)``: ends the calling thread; if ``notdead`` is non-NULL the kernel
  stores 0 there (and wakes sleepers on it). The last thread's __threxit exits the process.
* ``exit(status)``: ends the process, killing all other threads (the exit path under study).
* At exec the kernel starts the main thread at the ELF entry point with ``sp`` = the top
  of the image's ``stack`` region (16-byte aligned) and every other register 0, as
  OpenBSD's ``setregs`` does (``sys/arch/arm64/arm64/machdep.c``).

Source of the numbers: OpenBSD ``sys/kern/syscalls.master`` as generated into Go's
``syscall/zsysnum_openbsd_*.go`` (newer tables, e.g. riscv64: ``SYS_MMAP = 49``,
``SYS_PAD_MMAP = 197``). 197 was the old ``mmap`` with a padding argument and is obsolete
since OpenBSD 6.x's pad-syscall removal, so ``MMAP`` is 49 here.
"""
from __future__ import annotations

from enum import IntEnum


class Sys(IntEnum):
    """Syscalls the emulated kernel implements (OpenBSD arm64 numbers)."""

    EXIT = 1            # void exit(int rval)
    FORK = 2            # int fork(void)
    READ = 3            # ssize_t read(int fd, void *buf, size_t nbyte)
    WRITE = 4           # ssize_t write(int fd, const void *buf, size_t nbyte)
    TFORK = 8           # int __tfork(const struct __tfork *param, size_t psize)
    WAIT4 = 11          # pid_t wait4(pid_t pid, int *status, int options, struct rusage *)
    GETPID = 20         # pid_t getpid(void)
    MMAP = 49           # void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t pos)
    MUNMAP = 73         # int munmap(void *addr, size_t len)
    MPROTECT = 74       # int mprotect(void *addr, size_t len, int prot)
    SCHED_YIELD = 298   # int sched_yield(void)
    THREXIT = 302       # void __threxit(pid_t *notdead)

    @property
    def openbsd_name(self) -> str:
        """The name in OpenBSD's syscalls.master (``__tfork``, ``sched_yield``...)."""
        return _OPENBSD_NAMES.get(self, self.name.lower())

    @property
    def asm_name(self) -> str:
        """The assembler constant guests use, as in <sys/syscall.h>: ``SYS_exit``, ``SYS___tfork``."""
        return "SYS_" + self.openbsd_name


_OPENBSD_NAMES = {Sys.TFORK: "__tfork", Sys.THREXIT: "__threxit"}

TFORK_PARAM_SIZE = 24          # sizeof(struct __tfork) on LP64
SVC_SPEC_BARRIER = ("dsb nsh", "isb")   # what OpenBSD's libc puts after every svc
SVC_RESUME_SKIP = 8            # bytes the OpenBSD kernel adds to ELR to skip that barrier


# <sys/mman.h> (OpenBSD mman.h 1.35) and <sys/errno.h>: what mmap/munmap/mprotect take and return
PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0x0, 0x1, 0x2, 0x4
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANON, MAP_STACK = 0x1, 0x2, 0x10, 0x1000, 0x4000
MAP_FLAGMASK = 0xFFF7          # OpenBSD refuses mmap flags outside this mask
# armmu extension, outside MAP_FLAGMASK so no OpenBSD flag can mean it: enter every page
# at mmap time (as Linux's MAP_POPULATE), so that a 1 GiB space builds without faults
MAP_POPULATE = 0x10000
EPERM, ENOMEM, EFAULT, EINVAL, EAGAIN, ENOSYS = 1, 12, 14, 22, 35, 78

_HEADER_CONSTANTS = (
    ("PROT_NONE", PROT_NONE), ("PROT_READ", PROT_READ), ("PROT_WRITE", PROT_WRITE), ("PROT_EXEC", PROT_EXEC),
    ("MAP_SHARED", MAP_SHARED), ("MAP_PRIVATE", MAP_PRIVATE), ("MAP_FIXED", MAP_FIXED), ("MAP_ANON", MAP_ANON),
    ("MAP_STACK", MAP_STACK), ("MAP_POPULATE", MAP_POPULATE),
    ("EPERM", EPERM), ("ENOMEM", ENOMEM), ("EFAULT", EFAULT), ("EINVAL", EINVAL), ("EAGAIN", EAGAIN),
    ("ENOSYS", ENOSYS), ("TFORK_PARAM_SIZE", TFORK_PARAM_SIZE),
)
HEADER = "armmu/syscall.h"     # under guest/include/


def header_text() -> str:
    """guest/include/armmu/syscall.h: the numbers above as #defines, for C and .S guests."""
    lines = ["/* Generated from guest/syscalls.py by `python -m guest.syscalls`: do not edit. */",
             "#ifndef ARMMU_SYSCALL_H", "#define ARMMU_SYSCALL_H", ""]
    lines += [f"#define {s.asm_name:<20} {int(s)}" for s in Sys]
    lines.append("")
    lines += [f"#define {name:<20} {value:#x}" if name.startswith(("PROT_", "MAP_")) else
              f"#define {name:<20} {value}" for name, value in _HEADER_CONSTANTS]
    lines += ["", "#endif", ""]
    return "\n".join(lines)


def asm_constants() -> dict[str, int]:
    """``{"SYS_exit": 1, "SYS___tfork": 8, ...}``: the constants guest sources may use."""
    return {s.asm_name: int(s) for s in Sys}


def by_name(name: str) -> Sys:
    """Look a syscall up by enum name, OpenBSD name or asm name (``"exit"``, ``"SYS___tfork"``)."""
    key = name[4:] if name.startswith("SYS_") else name
    for s in Sys:
        if key in (s.name, s.name.lower(), s.openbsd_name):
            return s
    raise KeyError(name)


if __name__ == "__main__":
    from pathlib import Path
    out = Path(__file__).resolve().parent / "include" / HEADER
    out.write_text(header_text())
    print(f"wrote {out}")
