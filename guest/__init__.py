"""Guest side: AArch64 workloads (``guest.programs``) built from ``.S``/``.c`` by clang and
ld.lld from the ziglang wheel (``guest.build``), loaded from ELF (``guest.image``), test
snippets (``guest.asm``), and the syscall ABI (``guest.syscalls``, ``guest/include``)."""
from .asm import assemble
from .image import GuestBuildError, Image, Region, Segment, load_elf

__all__ = ["GuestBuildError", "Image", "Region", "Segment", "assemble", "load_elf"]
