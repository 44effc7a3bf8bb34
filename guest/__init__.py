"""Guest side: AArch64 workloads (``guest.programs``) built from ``.S``/``.c`` by clang and
ld.lld from the ziglang wheel (``guest.build``, ``guest.toolchain``), loaded from ELF
(``guest.image``: Image, Segment, Region, GuestBuildError), test snippets (``guest.asm``),
and the syscall ABI (``guest.syscalls``, generating ``guest/include/armmu/syscall.h``)."""
