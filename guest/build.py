"""Build a guest from ``.S`` and ``.c`` sources into a static AArch64 ELF, cached by content.

``build(sources, defines)`` compiles each source with the toolchain (``-DNAME=value`` for
every define), links them with a linker script that puts the text segment at ``base``
and rodata and data/bss on pages of their own, and loads the result (guest/image.py).
C workloads are linked with guest/lib (``_start``, ``__tfork_thread``, ``memset``...).

The cache (``$ARMMU_CACHE``, else ``$XDG_CACHE_HOME/armmu``, else ``~/.cache/armmu``) is keyed
by the sources (path and content), the defines, the flags, the linker script and the
toolchain version; each entry also lists the headers and ``.include`` files the build
read, with their hashes, and is used only while they are unchanged. Entries are written
with ``os.replace``, so concurrent builders (pytest-xdist) never see half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import toolchain
from .image import GuestBuildError, Image, load_elf

TEXT_BASE = 0x100000               # where the text segment goes unless told otherwise
CACHE_FORMAT = 1                   # bump when the cache entry layout changes
SOURCE_SUFFIXES = (".S", ".s", ".c")
_NAME_RE = re.compile(r"[A-Za-z_]\w*")
_VALUE_RE = re.compile(r"[\w\s+\-*/%()<>&|^~.,]*")
_INCLUDE_RE = re.compile(r'^\s*\.(?:include|incbin)\s+"([^"]+)"', re.M)

_memo: dict[tuple[str, str], Image] = {}   # (key, name) -> image, for repeated builds in one process


def cache_dir() -> Path:
    env = os.environ.get("ARMMU_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "armmu"


def linker_script(base: int, snippet: bool = False) -> str:
    """Text at ``base``; rodata, then data and bss, each from a fresh page, so that every
    page has one protection; the region records in a section that is not loaded."""
    entry = f"PROVIDE(_start = {base:#x});\n" if snippet else ""
    return f"""ENTRY(_start)
{entry}PHDRS {{ text PT_LOAD FLAGS(5); rodata PT_LOAD FLAGS(4); data PT_LOAD FLAGS(6); }}
SECTIONS {{
  . = {base:#x};
  .text : {{ KEEP(*(.text.start)) *(.text .text.*) }} :text
  . = ALIGN(4096);
  .rodata : {{ *(.rodata .rodata.*) }} :rodata
  . = ALIGN(4096);
  .data : {{ *(.data .data.*) }} :data
  .bss : {{ *(.bss .bss.*) *(COMMON) }} :data
  .armmu.regions 0 (INFO) : {{ KEEP(*(.armmu.regions)) }}
  /DISCARD/ : {{ *(.eh_frame*) *(.note*) *(.comment) }}
}}
"""


def define_args(defines: dict | None) -> list[str]:
    """``{"NPAGES": 64}`` -> ``["-DNPAGES=64"]``; bad names or values are GuestBuildError."""
    out = []
    for k, v in sorted((defines or {}).items()):
        if not isinstance(k, str) or not _NAME_RE.fullmatch(k):
            raise GuestBuildError("defines", f"{k!r} is not a C identifier")
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise GuestBuildError("defines", f"{k}={v!r}: a value must be an integer or an expression string")
        text = str(v)
        if not _VALUE_RE.fullmatch(text) or not text.strip():
            raise GuestBuildError("defines", f"{k}={v!r}: not an expression")
        out.append(f"-D{k}={text}")
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path, shown: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise GuestBuildError(shown, f"cannot read guest source: {e.strerror}") from None


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _compile_argv(src: Path, obj: str, defs: list[str], force_include: tuple[str, ...]) -> list[str]:
    # the debug info names the source's directory, not the temporary build directory, so
    # that equal inputs give equal ELF files
    argv = ["cc", *toolchain.COMMON_FLAGS, "-isystem", toolchain.builtin_include_dir(),
            f"-fdebug-compilation-dir={src.parent}", "-I", str(src.parent), *defs]
    if src.suffix == ".c":
        argv += toolchain.C_FLAGS
    for h in force_include:
        argv += ["-include", h]
    return argv + ["-c", "-o", obj, "-MD", "-MF", obj + ".d", str(src)]


def _deps(depfile: Path, src: Path) -> set[Path]:
    """Files a compile read: the preprocessor's (from -MD) and, recursively, the
    assembler's .include/.incbin files (clang does not list those)."""
    text = depfile.read_text().replace("\\\n", " ")
    found = {Path(p) for p in text.split(":", 1)[1].split()} if ":" in text else set()
    todo = [p for p in found | {src} if p.suffix in (".S", ".s", ".h", ".inc", ".i")]
    seen = set(todo)
    while todo:
        p = todo.pop()
        try:
            body = p.read_text(errors="replace")
        except OSError:
            continue
        for inc in _INCLUDE_RE.findall(body):
            for d in (p.parent, src.parent, toolchain.INCLUDE_DIR):
                q = (d / inc).resolve()
                if q.is_file():
                    found.add(q)
                    if q not in seen and q.suffix in (".S", ".s", ".h", ".inc", ".i"):
                        seen.add(q)
                        todo.append(q)
                    break
    return {p.resolve() for p in found} - {src.resolve()}


def build(sources, defines: dict | None = None, *, base: int = TEXT_BASE, name: str | None = None,
          names: dict[str, str] | None = None, snippet: bool = False, force_include: tuple[str, ...] = (),
          timeout: float = toolchain.TIMEOUT) -> Image:
    """Build ``sources`` (one path or several: ``.S``, ``.s``, ``.c``) into an Image.

    ``names`` maps source paths to the names messages show (default: the path as given).
    ``snippet`` lets a source without ``_start`` start at ``base``. Raises GuestBuildError."""
    srcs = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(s) for s in sources]
    if not srcs:
        raise GuestBuildError("build", "no source files")
    shown = {str(s.resolve()): (names or {}).get(str(s), str(s)) for s in srcs}
    for s in srcs:
        if s.suffix not in SOURCE_SUFFIXES:
            raise GuestBuildError(shown[str(s.resolve())], f"not a guest source (expected one of "
                                                           f"{', '.join(SOURCE_SUFFIXES)}, or an ELF file)")
    if not isinstance(base, int) or base % 4 or not 0 < base < 1 << 39:
        raise GuestBuildError(name or str(srcs[0]), f"text base {base!r} must be a 4-byte aligned user address")
    defs = define_args(defines)
    if any(s.suffix == ".c" for s in srcs):
        srcs += [toolchain.LIB_DIR / "crt0.S", toolchain.LIB_DIR / "tfork_thread.S", toolchain.LIB_DIR / "string.c"]
    srcs = [s.resolve() for s in srcs]
    script = linker_script(base, snippet)
    h = hashlib.sha256()
    for part in (f"armmu-guest {CACHE_FORMAT}", toolchain.version(), repr(toolchain.COMMON_FLAGS),
                 repr(toolchain.C_FLAGS), repr(toolchain.LD_FLAGS), script, repr(defs), repr(force_include)):
        h.update(part.encode() + b"\0")
    for s in srcs:
        h.update(str(s).encode() + b"\0" + _read(s, shown.get(str(s), str(s))) + b"\0")
    key = h.hexdigest()
    label = name or shown[str(srcs[0])]
    image = _memo.get((key, label))
    if image is not None:
        return image
    root = cache_dir()
    entry = root / f"guest-v{CACHE_FORMAT}" / key[:2] / key
    elf = _cached(entry)
    if elf is None:
        elf = _build(srcs, defs, script, force_include, entry, root, shown, label, timeout)
    image = load_elf(elf, label, dict(a[2:].split("=", 1) for a in defs))
    _memo[key, label] = image
    return image


def _cached(entry: Path) -> bytes | None:
    """The cached ELF if the entry exists and every file it depends on is unchanged."""
    try:
        manifest = json.loads(entry.with_suffix(".json").read_text())
        for path, digest in manifest["deps"]:
            if _sha(Path(path).read_bytes()) != digest:
                return None
        return entry.with_suffix(".elf").read_bytes()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _build(srcs: list[Path], defs: list[str], script: str, force_include: tuple[str, ...], entry: Path,
           root: Path, shown: dict[str, str], label: str, timeout: float) -> bytes:
    entry.parent.mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root / "tmp"))
    try:
        objs = [f"{i}.o" for i in range(len(srcs))]

        def compile_one(i: int) -> None:
            argv = _compile_argv(srcs[i], objs[i], defs, force_include)
            try:
                toolchain.run(argv, shown.get(str(srcs[i]), label), work, root, shown, timeout)
            except GuestBuildError as e:
                raise _unpreprocessed(e, argv, work, root, shown, timeout) from None

        with ThreadPoolExecutor(max_workers=min(4, len(srcs))) as pool:
            for f in [pool.submit(compile_one, i) for i in range(len(srcs))]:
                f.result()              # the first source's error first
        (work / "guest.ld").write_text(script)
        toolchain.run(["ld.lld", *toolchain.LD_FLAGS, "-T", "guest.ld", "-o", "guest.elf", *objs],
                      label, work, root, shown, timeout)
        elf = (work / "guest.elf").read_bytes()
        load_elf(elf, label)            # refuse to cache what the loader refuses
        deps = set()
        for i, s in enumerate(srcs):
            deps |= _deps(work / (objs[i] + ".d"), s)
        # the toolchain's own headers are covered by its version in the key
        zig_dir = Path(toolchain.zig()).parent
        manifest = {"deps": sorted([str(p), _sha(p.read_bytes())] for p in deps
                                   if p.is_file() and zig_dir not in p.parents)}
        _atomic_write(entry.with_suffix(".elf"), elf)
        _atomic_write(entry.with_suffix(".json"), json.dumps(manifest, indent=1).encode())
        return elf
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _unpreprocessed(e: GuestBuildError, argv: list[str], work: Path, root: Path, shown: dict[str, str],
                    timeout: float) -> GuestBuildError:
    """clang reports some assembler errors (fixups out of range) against its temporary
    preprocessed file: map them back to the source line through the preprocessor's
    line markers (rerunning the preprocessor only on this error path)."""
    if e.line is None or not e.file.endswith(".s") or e.file in shown.values():
        return e
    pre = argv[:argv.index("-c")] + ["-E", argv[-1]]
    try:
        text = toolchain.run(pre, e.file, work, root, shown, timeout, stdout=True)
    except GuestBuildError:
        return e
    where = toolchain.unpreprocess(text, e.line)
    if where is None:
        return e
    return GuestBuildError(shown.get(where[0], where[0]), e.message, where[1])


def load_file(path, defines: dict | None = None, *, name: str | None = None, base: int = TEXT_BASE) -> Image:
    """A user's guest: a source file (built) or a static AArch64 ELF (checked and loaded)."""
    path = Path(path)
    label = name or str(path)
    if path.suffix in SOURCE_SUFFIXES:
        return build(path, defines, base=base, name=label)
    data = _read(path, label)
    if data[:4] != b"\x7fELF":
        raise GuestBuildError(label, "neither a guest source (.S, .s, .c) nor an ELF file")
    if defines:
        raise GuestBuildError(label, "an ELF file is already built: -D parameters do not apply")
    return load_elf(data, label)
