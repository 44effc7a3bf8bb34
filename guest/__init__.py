"""Guest side: AArch64 user programs assembled from source (``guest.programs``), the
keystone/capstone front end (``guest.asm``) and the syscall numbers (``guest.syscalls``)."""
from .asm import AssembleError, Program, Region, assemble
from .syscalls import Sys

__all__ = ["AssembleError", "Program", "Region", "assemble", "Sys"]
