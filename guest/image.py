"""A guest image: a static AArch64 ELF read with pyelftools, checked, and described the
way an exec needs it (segments with their permissions, declared regions, entry, symbols).

``load_elf(data, name)`` returns an :class:`Image` or raises :class:`GuestBuildError`.
The checks are those of an exec on OpenBSD/arm64: a 64-bit little-endian AArch64
``ET_EXEC`` with no interpreter or dynamic section, every PT_LOAD inside the user range
[VM_MIN_ADDRESS, VM_MAXUSER_ADDRESS) of ``sys/arch/arm64/include/vmparam.h``, and no two
segments or regions on the same page.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from functools import cached_property

from . import syscalls
from .syscalls import PROT_EXEC, PROT_READ, PROT_WRITE

PAGE_SIZE = 4096
VM_MIN_ADDRESS = PAGE_SIZE                       # vmparam.h: the null page is never mapped
VM_MAXUSER_ADDRESS = (1 << 39) - 0x8000          # vmparam.h: USER_SPACE_BITS 39 (T0SZ = 25)
REGION_POPULATE = 0x1                            # guest/include/armmu/region.h
REGION_SECTION = ".armmu.regions"
_REGION = struct.Struct("<16sQQII")              # struct armmu_region
EM_AARCH64 = "EM_AARCH64"
# the instructions after svc #0 that OpenBSD's kernel skips (guest/syscalls.py)
DSB_NSH, ISB = 0xD503379F, 0xD5033FDF
SVC0 = 0xD4000001
_BARRIERS = ("dsb", "dmb", "isb")


class GuestBuildError(ValueError):
    """A guest could not be built or loaded. ``str(e)`` is one line: ``file:line: message``
    when the toolchain named a line, else ``file: message``."""

    def __init__(self, file: str, message: str, line: int | None = None):
        self.file, self.message, self.line = file, message, line
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {message}")


def prot_str(prot: int) -> str:
    return ("r" if prot & PROT_READ else "-") + ("w" if prot & PROT_WRITE else "-") + ("x" if prot & PROT_EXEC else "-")


def _page_down(x: int) -> int:
    return x & ~(PAGE_SIZE - 1)


def _page_up(x: int) -> int:
    return (x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD: ``data`` (p_filesz bytes) at ``va``, zero-filled up to ``memsz``."""

    name: str           # "text" (r-x), "rodata" (r--), "data" (rw-: .data and .bss)
    va: int
    data: bytes
    memsz: int
    prot: int           # PROT_READ | PROT_WRITE | PROT_EXEC

    @property
    def start(self) -> int:
        return _page_down(self.va)

    @property
    def end(self) -> int:
        return _page_up(self.va + self.memsz)

    def page(self, va: int) -> bytes:
        """The 4 KB of the segment's image at page ``va`` (zeros past the file data)."""
        lo = max(va, self.va) - self.va
        hi = min(va + PAGE_SIZE, self.va + len(self.data)) - self.va
        head = max(self.va - va, 0)
        chunk = self.data[lo:hi] if hi > lo else b""
        return bytes(head) + chunk + bytes(PAGE_SIZE - head - len(chunk))


@dataclass(frozen=True)
class Region:
    """Memory a workload declared with ARMMU_REGION (heap, stack...), or a segment's pages."""

    name: str
    start: int
    size: int
    prot: int
    populate: bool      # True: every page entered at load; False: entered on fault

    @property
    def end(self) -> int:
        return self.start + self.size

    def __contains__(self, va: int) -> bool:
        return self.start <= va < self.end


@dataclass(frozen=True)
class Image:
    """A loadable guest: what ``exec`` maps and where it starts."""

    name: str
    entry: int
    segments: tuple[Segment, ...]
    regions: tuple[Region, ...]
    symbols: dict[str, int] = field(hash=False, compare=False)
    elf: bytes = field(repr=False, hash=False, compare=False)
    defines: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @cached_property
    def layout(self) -> dict[str, Region]:
        """Everything to map, by name: each segment's pages (populated: they hold the
        image) and each declared region, in address order."""
        out = {s.name: Region(s.name, s.start, s.end - s.start, s.prot, True) for s in self.segments}
        out.update((r.name, r) for r in self.regions)
        return dict(sorted(out.items(), key=lambda kv: kv[1].start))

    @property
    def text(self) -> Segment:
        return next(s for s in self.segments if s.prot & PROT_EXEC)

    @property
    def code(self) -> bytes:
        """The text segment's bytes (it starts at ``self.base``)."""
        return self.text.data

    @property
    def base(self) -> int:
        return self.text.va

    @property
    def initial_sp(self) -> int | None:
        """Where exec puts sp: the top of the ``stack`` region (None if there is none)."""
        r = self.layout.get("stack")
        return r.end if r is not None else None

    def word(self, va: int) -> int | None:
        """The 32-bit word of the image at ``va`` (None outside the file data)."""
        for s in self.segments:
            if s.va <= va and va + 4 <= s.va + len(s.data):
                return int.from_bytes(s.data[va - s.va: va - s.va + 4], "little")
        return None

    def syscall_return(self, svc_va: int) -> int:
        """Where the kernel resumes after the ``svc`` at ``svc_va``: past OpenBSD's
        ``dsb nsh; isb`` speculation barrier if it follows, else the next instruction."""
        if self.word(svc_va + 4) == DSB_NSH and self.word(svc_va + 8) == ISB:
            return svc_va + 4 + syscalls.SVC_RESUME_SKIP
        return svc_va + 4

    @cached_property
    def svcs(self) -> list[int]:
        """VA of every ``svc #0`` word in the executable segments."""
        return [va for s in self.segments if s.prot & PROT_EXEC
                for va in range(s.va, s.va + len(s.data) - 3, 4) if self.word(va) == SVC0]

    @cached_property
    def barriers(self) -> list[tuple[int, str]]:
        """``(va, mnemonic)`` of every DSB/DMB/ISB in the executable segments, for
        ``Machine.load_code`` (its code hooks trap them)."""
        from capstone import CS_ARCH_ARM64, CS_MODE_ARM, Cs
        cs = Cs(CS_ARCH_ARM64, CS_MODE_ARM)
        cs.skipdata = True
        return [(i.address, i.mnemonic) for s in self.segments if s.prot & PROT_EXEC
                for i in cs.disasm(s.data, s.va) if i.mnemonic in _BARRIERS]

    def disassemble(self) -> str:
        """``va: mnemonic operands`` for every word of the executable segments."""
        from capstone import CS_ARCH_ARM64, CS_MODE_ARM, Cs
        cs = Cs(CS_ARCH_ARM64, CS_MODE_ARM)
        cs.skipdata = True
        names = {v: k for k, v in sorted(self.symbols.items(), reverse=True)}
        lines = []
        for s in self.segments:
            if s.prot & PROT_EXEC:
                for i in cs.disasm(s.data, s.va):
                    label = f"{names[i.address]}:\n" if i.address in names else ""
                    lines.append(f"{label}  {i.address:#x}: {i.mnemonic} {i.op_str}".rstrip())
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# reading and checking the ELF

def load_elf(data: bytes, name: str, defines: dict[str, str] | None = None) -> Image:
    """Check a static AArch64 executable and describe it. Raises GuestBuildError."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        elf = ELFFile(io.BytesIO(data))
        return _image(elf, data, name, defines or {})
    except (ELFError, struct.error, ValueError) as e:
        if isinstance(e, GuestBuildError):
            raise
        raise GuestBuildError(name, f"not a valid ELF file ({e})") from None


def _image(elf, data: bytes, name: str, defines: dict[str, str]) -> Image:
    if elf.elfclass != 64 or not elf.little_endian or elf["e_machine"] != EM_AARCH64:
        raise GuestBuildError(name, f"not a 64-bit little-endian AArch64 executable "
                                    f"(ELF{elf.elfclass}, {elf['e_machine']})")
    if elf["e_type"] != "ET_EXEC":
        raise GuestBuildError(name, f"not a static executable ({elf['e_type']}): "
                                    f"armmu has no dynamic linker; link with -static")
    segments = []
    for ph in elf.iter_segments():
        kind = ph["p_type"]
        if kind in ("PT_INTERP", "PT_DYNAMIC"):
            what = "an interpreter, PT_INTERP" if kind == "PT_INTERP" else "a dynamic section, PT_DYNAMIC"
            raise GuestBuildError(name, f"not a static executable (it asks for {what}); link with -static")
        if kind != "PT_LOAD" or ph["p_memsz"] == 0:
            continue
        f = ph["p_flags"]
        prot = (PROT_READ if f & 4 else 0) | (PROT_WRITE if f & 2 else 0) | (PROT_EXEC if f & 1 else 0)
        seg_name = "text" if prot & PROT_EXEC else "data" if prot & PROT_WRITE else "rodata"
        if any(s.name == seg_name for s in segments):
            seg_name += str(sum(s.name.startswith(seg_name) for s in segments))
        if ph["p_filesz"] > ph["p_memsz"]:
            raise GuestBuildError(name, f"segment {seg_name} has p_filesz > p_memsz")
        segments.append(Segment(seg_name, ph["p_vaddr"], ph.data(), ph["p_memsz"], prot))
    if not any(s.prot & PROT_EXEC for s in segments):
        raise GuestBuildError(name, "no executable segment")
    regions = tuple(_regions(elf, name))
    symbols = {}
    symtab = elf.get_section_by_name(".symtab")
    if symtab is not None:
        for sym in symtab.iter_symbols():
            n = sym.name
            if n and not n.startswith(("$", ".L")) and sym["st_info"]["type"] not in ("STT_FILE", "STT_SECTION") \
                    and sym["st_shndx"] != "SHN_UNDEF":
                symbols.setdefault(n, sym["st_value"])
    entry = elf["e_entry"] or symbols.get("_start", 0)
    image = Image(name, entry, tuple(segments), regions, symbols, data, dict(defines))
    _check_layout(image)
    return image


def _regions(elf, name: str):
    sec = elf.get_section_by_name(REGION_SECTION)
    if sec is None:
        return
    raw = sec.data()
    if len(raw) % _REGION.size:
        raise GuestBuildError(name, f"{REGION_SECTION} is {len(raw)} bytes, not a multiple of {_REGION.size}")
    seen = set()
    for off in range(0, len(raw), _REGION.size):
        rname, start, size, prot, flags = _REGION.unpack_from(raw, off)
        rname = rname.rstrip(b"\0").decode("ascii", "replace")
        if rname in seen:
            raise GuestBuildError(name, f"region '{rname}' is declared twice")
        seen.add(rname)
        if start % PAGE_SIZE:
            raise GuestBuildError(name, f"bad layout: region '{rname}' starts at {start:#x}, not page aligned")
        if size >= 1 << 63:
            raise GuestBuildError(name, f"bad layout: region '{rname}' has a negative size ({size - (1 << 64)})")
        if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC) or flags & ~REGION_POPULATE:
            raise GuestBuildError(name, f"bad layout: region '{rname}' has prot {prot:#x} flags {flags:#x}")
        if size:
            yield Region(rname, start, _page_up(size), prot, bool(flags & REGION_POPULATE))


def _check_layout(image: Image) -> None:
    name = image.name
    spans = [(s.start, s.end, f"segment {s.name}") for s in image.segments]
    spans += [(r.start, r.end, f"region '{r.name}'") for r in image.regions]
    for lo, hi, what in spans:
        if lo < VM_MIN_ADDRESS or hi > VM_MAXUSER_ADDRESS:
            raise GuestBuildError(name, f"bad layout: {what} [{lo:#x}, {hi:#x}) is outside the user address "
                                        f"range [{VM_MIN_ADDRESS:#x}, {VM_MAXUSER_ADDRESS:#x})")
    spans.sort()
    for (alo, ahi, a), (blo, bhi, b) in zip(spans, spans[1:]):
        if blo < ahi:
            raise GuestBuildError(name, f"bad layout: {a} [{alo:#x}, {ahi:#x}) overlaps {b} [{blo:#x}, {bhi:#x})")
    if not any(s.prot & PROT_EXEC and s.va <= image.entry < s.va + s.memsz for s in image.segments):
        raise GuestBuildError(name, f"entry point {image.entry:#x} is not in an executable segment "
                                    f"(no _start?)")
