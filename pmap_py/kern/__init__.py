"""The kernel model: processes, threads, the scheduler, syscalls, exit1 and the
reaper, running in simulated time on the emulated CPUs (docs/architecture.md §Kernel code in simulated time)."""
from .kernel import CpuInfo, KernConfig, Kernel, RunEnded
from .proc import EXIT_NORMAL, EXIT_THREAD, EXIT_THREAD_NOCHECK, PFlag, Proc, Process, PStat, PsFlag

__all__ = ["CpuInfo", "KernConfig", "Kernel", "RunEnded", "EXIT_NORMAL", "EXIT_THREAD",
           "EXIT_THREAD_NOCHECK", "PFlag", "Proc", "Process", "PStat", "PsFlag"]
