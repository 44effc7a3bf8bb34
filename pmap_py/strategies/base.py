"""The interface every exit strategy implements (docs/strategies.md §The interface).

The kernel model (pmap_py.kern.exit) runs OpenBSD's exit1 / sched_exit / exit2 /
reaper and calls a strategy at the points where the designs differ:

* ``exit1_purge(k, p)``: the main thread, in exit1 where uvm_purge is called
  (after the "thrdeath" wait, with the kernel lock held on entry and on return);
* ``thread_exit(k, p)``: every other thread, in exit1 just before ``ps_exitcnt--``;
* ``cpu_exit(k, p)``: every thread, at cpu_exit (pmap_deactivate), before sched_exit;
* ``uvm_exit(k, reaper, pr)``: the reaper, for the main thread (uvm_exit of the process).

Each hook is a generator (it may spin, sleep or yield; see pmap_py.kern.steps).
Data instead of code where only a parameter differs: ``revision`` (the pmap
revision the strategy runs on), ``trampoline`` (EL0 runs on OpenBSD's trampoline
TTBR1 with the odd ASID; False = one ASID and the kernel table at EL0, as Linux and
FreeBSD without KPTI), ``reaper_kernel_lock`` (the reaper holds the kernel lock while
freeing, as kern_exit.c did before the 2025 changes).
"""
from __future__ import annotations

from typing import Generator

from pmap_py.kern.steps import STEP


class ExitStrategy:
    name = "base"
    summary = ""
    revision = "1.113"
    trampoline = True
    reaper_kernel_lock = False
    safe = True                      # what docs/strategies.md expects of it (for listings)

    def exit1_purge(self, k, p) -> Generator:
        """Main thread, exit1 step 5. Default: nothing (the reaper tears down)."""
        return
        yield

    def thread_exit(self, k, p) -> Generator:
        """Non-main thread, exit1 step 9, before ps_exitcnt--. Default: nothing."""
        return
        yield

    def cpu_exit(self, k, p) -> Generator:
        """cpu_exit(p) (empty on arm64 since 2025) and pmap_deactivate(p)."""
        k.ps.pmap_deactivate(k.curcpu(p), k.pmap_of(p))
        yield STEP

    def uvm_exit(self, k, r, pr) -> Generator:
        """The reaper (proc r) frees what is left of the process: uvm_exit(pr) ->
        uvmspace_free -> uvmspace_purge (empty after a purge) -> pmap_destroy."""
        vm = pr.ps_vmspace
        pr.ps_vmspace = None
        yield from k.teardown(r, k.uvm.uvmspace_free(r, vm))

    def __repr__(self) -> str:
        return f"<strategy {self.name} (pmap.c {self.revision})>"
