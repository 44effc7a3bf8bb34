"""Snippets: a few lines of AArch64 assembly (tests, benchmarks) built by the real toolchain.

``assemble(text, base)`` builds ``text`` as a ``.S`` file whose text segment starts at
``base`` and returns the :class:`~guest.image.Image` (``.code``, ``.entry``, ``.symbols``,
``.barriers``, ``.svcs``). The snippet sees <armmu/asm.h> (SYS_* numbers, SYSTRAP, MOV48,
ARMMU_REGION); ``_start`` is global without saying so, and is ``base`` if the snippet
does not define it. Errors are GuestBuildError ``name:line: message``.
"""
from __future__ import annotations

import hashlib

from .build import TEXT_BASE, _atomic_write, build, cache_dir
from .image import Image

_memo: dict[tuple, Image] = {}


def assemble(text: str, base: int = TEXT_BASE, name: str = "<snippet>", defines: dict | None = None) -> Image:
    key = (text, base, name, tuple(sorted((defines or {}).items())))
    image = _memo.get(key)
    if image is None:
        d = cache_dir() / "snippets"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.S"
        if not path.is_file():
            _atomic_write(path, text.encode())
        image = build(path, defines, base=base, name=name, names={str(path): name}, snippet=True,
                      force_include=("armmu/snippet.h",))
        _memo[key] = image
    return image
