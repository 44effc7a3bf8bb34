"""Core presets: TLB geometry and the cycle cost table (docs/cost-presets.md).

A preset is a TOML file. Built-in ones live in ``emu/presets/*.toml`` (package
data); a user may pass the path of their own file. Layout::

    inherit = "cortex-a72"          # optional: built-in name or path (relative to this file)

    [core]
    name = "..."  description = "..."  freq_ghz = 2.0  asid_bits = 16
    repeat_tlbi = false             # TLBI-repeat erratum: every TLBI issued twice
    ci_flush_bp = "cpu_flush_bp_noop"   # or "cpu_flush_bp_psci" (no CSV2: SMC per switch)
    bhb_loop = 0                    # Spectre-BHB loop iterations on every EL0 exception entry
    [core.source]                   # provenance, one string per key except name/description
    freq_ghz = "..."  asid_bits = "..."  repeat_tlbi = "..."  ci_flush_bp = "..."  bhb_loop = "..."

    [tlb.l1i] / [tlb.l1d] / [tlb.l2]
    entries = 48  ways = 48  replacement = "lru"  max_block_shift = 20
    [tlb.l1i.source] ...
    [tlb.walk_cache]                # no max_block_shift (it holds table descriptors)
    entries = 64  ways = 4  replacement = "lru"
    [tlb.walk_cache.source] ...

    [cost]                          # cycles, non-negative integers; see COST_DOC
    base_cpi = 1 ...
    [cost.source] ...

``ways == entries`` means fully associative; ``sets = entries // ways`` must be a
power of two. ``max_block_shift``: the largest region one entry of that TLB can
map (12 = 4 KB ... 30 = 1 GB). A leaf larger than that (a 2 MB or 1 GB block) is
stored as the naturally aligned ``1 << max_block_shift`` slice of the block that
contains the looked-up VA (the A53 main TLB splits a 1 GB block into 512 MB
entries: shift 29). Other slices of the block miss and are filled on demand.

Inheritance: a file with ``inherit`` is deep-merged over its parent: tables merge
key by key, values replace. A value overridden without a matching ``source``
string gets the source "override in FILE (no source given)". If the child does
not set ``core.name`` the preset is named after the file's stem.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

DEFAULT_CORE = "cortex-a72"

REPLACEMENTS = ("lru", "plru", "random")
ASID_BITS = (8, 16)
TLB_NAMES = ("l1i", "l1d", "l2", "walk_cache")
MIN_BLOCK_SHIFT, MAX_BLOCK_SHIFT = 12, 30   # 4 KB granule: 4 KB page .. 1 GB block

# What each cost means; every one is charged in cycles of the CPU doing the work.
# Entry costs are additive: any kernel entry charges exception_entry, a fault adds
# fault_entry, an SVC adds syscall_entry.
COST_DOC: dict[str, str] = {
    "base_cpi": "cycles per guest instruction before TLB costs",
    "l1_tlb_hit": "extra cycles for a translation served by the L1 I/D TLB",
    "l2_tlb_hit": "extra cycles for an L1 TLB miss served by the L2 TLB",
    "walk_cache_hit": "walk-cache lookup that lets a walk skip levels (the remaining "
                      "levels still cost descriptor_read each)",
    "descriptor_read": "one translation-table descriptor read by the walker, per level "
                       "not served by the walk cache",
    "fault_entry": "kernel-side decode of a data/instruction abort (ESR/FAR, dispatch), "
                   "on top of exception_entry",
    "exception_entry": "taking any exception to EL1 (vector, state save)",
    "exception_return": "ERET back to EL0",
    "descriptor_write": "the kernel storing one descriptor (map, clear, table link)",
    "frame_free": "returning one physical frame to the free list",
    "frame_zero": "zeroing one 4 KB frame",
    "tlbi_local": "issue of one non-broadcast TLBI",
    "tlbi_broadcast": "issue of one ...IS TLBI (completion is paid by the DSB ISH)",
    "dsb_local": "DSB NSH completing outstanding local TLBIs",
    "dsb_ish_base": "DSB ISH completing >= 1 outstanding broadcast TLBI: fixed part",
    "dsb_ish_per_cpu": "DSB ISH completing broadcast TLBIs: per other CPU in the domain",
    "dsb_ishst": "DSB ISHST publishing descriptor writes to walkers",
    "dsb_idle": "DSB ISH/SY/NSH with nothing outstanding",
    "isb": "ISB (pipeline refill)",
    "msr_ttbr": "MSR TTBR0_EL1 / TTBR1_EL1",
    "msr_tcr": "MSR TCR_EL1",
    "lock_acquire": "uncontended lock acquire (+ release)",
    "lock_contended": "extra cost when the lock is held by / bouncing with another CPU",
    "context_switch": "scheduler switch, software part (TTBR writes, ISB and TLB refills "
                      "are charged separately)",
    "spin_wait_iteration": "one iteration of a busy-wait loop (e.g. waiting for pm_active)",
    "syscall_entry": "kernel syscall dispatch on top of exception_entry",
    "tlbi_vmalle1is_extra": "extra issue cost of TLBI VMALLE1IS over other broadcast TLBIs",
    "flush_bp_psci": "cpu_flush_bp_psci: the firmware call (SMC, SMCCC_ARCH_WORKAROUND_1) "
                     "pmap_setttb makes on every context switch on cores without CSV2",
    "icache_sync_page": "cpu_icache_sync_range over one 4 KB page (DC CVAU, DSB ISH, IC IVAU, "
                        "DSB ISH per line, then ISB) when a page is first mapped executable",
    "bhb_loop_iteration": "one iteration of trampoline.S's Spectre-BHB branch loop, run on "
                          "every exception entry from EL0 (core.bhb_loop iterations)",
}

# Values of core.ci_flush_bp: OpenBSD arm64 cpu.c, cpu_mitigate_spectre_v2().
FLUSH_BP = ("cpu_flush_bp_noop", "cpu_flush_bp_psci")


class PresetError(ValueError):
    """A core preset could not be found, parsed or validated (one clear message)."""


@dataclass(frozen=True)
class TlbGeometry:
    entries: int
    ways: int
    replacement: str
    max_block_shift: int | None = None   # None for the walk cache

    @property
    def sets(self) -> int:
        return self.entries // self.ways

    @property
    def fully_associative(self) -> bool:
        return self.ways == self.entries


@dataclass(frozen=True)
class CostTable:
    base_cpi: int
    l1_tlb_hit: int
    l2_tlb_hit: int
    walk_cache_hit: int
    descriptor_read: int
    fault_entry: int
    exception_entry: int
    exception_return: int
    descriptor_write: int
    frame_free: int
    frame_zero: int
    tlbi_local: int
    tlbi_broadcast: int
    dsb_local: int
    dsb_ish_base: int
    dsb_ish_per_cpu: int
    dsb_ishst: int
    dsb_idle: int
    isb: int
    msr_ttbr: int
    msr_tcr: int
    lock_acquire: int
    lock_contended: int
    context_switch: int
    spin_wait_iteration: int
    syscall_entry: int
    tlbi_vmalle1is_extra: int
    flush_bp_psci: int
    icache_sync_page: int
    bhb_loop_iteration: int

    def dsb_ish(self, other_cpus: int) -> int:
        """Cost of a DSB ISH that completes at least one broadcast TLBI."""
        return self.dsb_ish_base + self.dsb_ish_per_cpu * max(0, other_cpus)


COST_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CostTable))
assert set(COST_FIELDS) == set(COST_DOC)


@dataclass(frozen=True)
class CorePreset:
    name: str
    description: str
    freq_ghz: float
    asid_bits: int
    l1i: TlbGeometry
    l1d: TlbGeometry
    l2: TlbGeometry
    walk_cache: TlbGeometry
    cost: CostTable
    sources: dict[str, str] = field(hash=False, compare=False)  # "cost.isb" -> provenance
    repeat_tlbi: bool = False               # ARM64_WORKAROUND_REPEAT_TLBI: tlbi; dsb ish; tlbi
    ci_flush_bp: str = "cpu_flush_bp_noop"  # what pmap_setttb's ci_flush_bp() does
    bhb_loop: int = 0                       # trampoline_vectors_loop_<k> (0: none)
    path: str = field(default="", compare=False)

    def cycles_to_us(self, cycles: int | float) -> float:
        return cycles / (self.freq_ghz * 1000.0)


# ---------------------------------------------------------------- schema

_CORE_KEYS = ("name", "description", "freq_ghz", "asid_bits", "repeat_tlbi", "ci_flush_bp", "bhb_loop")
_CORE_SOURCED = ("freq_ghz", "asid_bits", "repeat_tlbi", "ci_flush_bp", "bhb_loop")
_TLB_KEYS = ("entries", "ways", "replacement", "max_block_shift")
_WALK_KEYS = ("entries", "ways", "replacement")
_TOP_KEYS = ("inherit", "core", "tlb", "cost")


def _section_keys(section: str) -> tuple[str, ...]:
    if section == "core":
        return _CORE_KEYS
    if section == "cost":
        return COST_FIELDS
    if section == "tlb.walk_cache":
        return _WALK_KEYS
    return _TLB_KEYS


def _sourced_keys(section: str) -> tuple[str, ...]:
    return _CORE_SOURCED if section == "core" else _section_keys(section)


_SECTIONS = ("core",) + tuple(f"tlb.{t}" for t in TLB_NAMES) + ("cost",)


# ---------------------------------------------------------------- locating files

def _presets_dir():
    return resources.files("emu").joinpath("presets")


def list_presets() -> list[str]:
    """Names of the built-in presets, sorted."""
    d = _presets_dir()
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".toml"))


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".toml") or "/" in spec or "\\" in spec


def _locate(spec: str | Path, base_dir: Path | None) -> tuple[Any, str, bool]:
    """-> (traversable/path, label, builtin?)."""
    if isinstance(spec, Path) or _looks_like_path(str(spec)):
        p = Path(spec).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        if not p.is_file():
            raise PresetError(f"core preset file not found: {p}")
        return p, str(p), False
    name = str(spec).strip().lower()
    res = _presets_dir().joinpath(f"{name}.toml")
    if not res.is_file():
        # last chance: an existing file given without .toml / slash
        p = Path(str(spec))
        if p.is_file():
            return p, str(p), False
        raise PresetError(f"unknown core preset {spec!r}; known presets: "
                          f"{', '.join(list_presets())} (or give a path to a .toml file)")
    return res, str(res), True


def _read(loc: Any, label: str) -> dict:
    try:
        text = loc.read_text(encoding="utf-8")
    except OSError as e:
        raise PresetError(f"core preset file {label}: cannot read: {e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PresetError(f"core preset file {label}: malformed TOML: {e}") from None


# ---------------------------------------------------------------- merging

def _get(d: dict, dotted: str) -> Any:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _resolve(spec: str | Path, base_dir: Path | None, seen: tuple[str, ...],
             ) -> tuple[dict, str, bool, str]:
    """Load one file and its inherit chain -> (merged raw dict, label, builtin, stem)."""
    loc, label, builtin = _locate(spec, base_dir)
    if label in seen:
        chain = " -> ".join(seen + (label,))
        raise PresetError(f"core preset inheritance cycle: {chain}")
    raw = _read(loc, label)
    stem = Path(label).stem
    parent_spec = raw.pop("inherit", None)
    if parent_spec is None:
        return raw, label, builtin, stem
    if not isinstance(parent_spec, str) or not parent_spec:
        raise PresetError(f"core preset file {label}: 'inherit' must be a preset name "
                          f"or a path, got {parent_spec!r}")
    here = Path(label).parent if not builtin else None
    parent, plabel, _, pstem = _resolve(parent_spec, here, seen + (label,))
    merged = _deep_merge(parent, raw)
    fname = Path(label).name
    # provenance of overridden values
    for section in _SECTIONS:
        child = _get(raw, section)
        if not isinstance(child, dict):
            continue
        csrc = child.get("source") if isinstance(child.get("source"), dict) else {}
        msec = _get(merged, section)
        if not isinstance(msec, dict):
            continue
        msrc = dict(msec.get("source") or {}) if isinstance(msec.get("source"), dict) else {}
        for key in child:
            if key != "source" and key not in csrc and key in _sourced_keys(section):
                msrc[key] = f"override in {fname} (no source given)"
        msec["source"] = msrc
    child_core = raw.get("core") if isinstance(raw.get("core"), dict) else {}
    if isinstance(merged.get("core", {}), dict):
        core = merged["core"] = dict(merged.get("core", {}))
        if "name" not in child_core:
            core["name"] = stem
        if "description" not in child_core:
            pname = _get(parent, "core.name") or pstem
            core["description"] = f"{pname} with overrides from {fname}"
    return merged, label, builtin, stem


# ---------------------------------------------------------------- validation

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate(raw: dict, label: str, strict_sources: bool) -> list[str]:
    errs: list[str] = []
    extra = [k for k in raw if k not in _TOP_KEYS]
    if extra:
        errs.append(f"unknown top-level key(s): {', '.join(extra)}")
    missing_sections = [s for s in ("core", "tlb", "cost") if not isinstance(raw.get(s), dict)]
    if "tlb" not in missing_sections:
        tlb = raw["tlb"]
        missing_sections += [f"tlb.{t}" for t in TLB_NAMES if not isinstance(tlb.get(t), dict)]
        bad = [f"tlb.{t}" for t in tlb if t not in TLB_NAMES]
        if bad:
            errs.append(f"unknown table(s): {', '.join(bad)} (expected tlb.{', tlb.'.join(TLB_NAMES)})")
    if missing_sections:
        errs.append(f"missing table(s): {', '.join('[' + s + ']' for s in missing_sections)}")

    for section in _SECTIONS:
        sec = _get(raw, section)
        if not isinstance(sec, dict):
            continue
        want = _section_keys(section)
        missing = [f"{section}.{k}" for k in want if k not in sec]
        extra = [f"{section}.{k}" for k in sec if k not in want and k != "source"]
        if missing:
            errs.append(f"missing key(s): {', '.join(missing)}")
        if extra:
            errs.append(f"unknown key(s): {', '.join(extra)}")
        src = sec.get("source", {})
        if not isinstance(src, dict):
            errs.append(f"{section}.source must be a table of strings")
            continue
        sourced = _sourced_keys(section)
        bad_src = [f"{section}.source.{k}" for k in src if k not in sourced]
        if bad_src:
            errs.append(f"source string(s) for unknown key(s): {', '.join(bad_src)}")
        not_str = [f"{section}.source.{k}" for k, v in src.items()
                   if k in sourced and not (isinstance(v, str) and v.strip())]
        if not_str:
            errs.append(f"source(s) must be non-empty strings: {', '.join(not_str)}")
        if strict_sources:
            nosrc = [f"{section}.{k}" for k in sourced if k in sec and k not in src]
            if nosrc:
                errs.append(f"built-in preset lacks source string(s) for: {', '.join(nosrc)}")

        if section == "core":
            for k in ("name", "description"):
                if k in sec and not (isinstance(sec[k], str) and sec[k].strip()):
                    errs.append(f"core.{k} must be a non-empty string")
            f = sec.get("freq_ghz")
            if "freq_ghz" in sec and not (isinstance(f, (int, float)) and not isinstance(f, bool)
                                          and f > 0):
                errs.append(f"core.freq_ghz must be a positive number, got {f!r}")
            a = sec.get("asid_bits")
            if "asid_bits" in sec and not (_is_int(a) and a in ASID_BITS):
                errs.append(f"core.asid_bits must be 8 or 16, got {a!r}")
            r = sec.get("repeat_tlbi")
            if "repeat_tlbi" in sec and not isinstance(r, bool):
                errs.append(f"core.repeat_tlbi must be true or false, got {r!r}")
            b = sec.get("ci_flush_bp")
            if "ci_flush_bp" in sec and b not in FLUSH_BP:
                errs.append(f"core.ci_flush_bp must be one of {', '.join(FLUSH_BP)}, got {b!r}")
            n = sec.get("bhb_loop")
            if "bhb_loop" in sec and not (_is_int(n) and n >= 0):
                errs.append(f"core.bhb_loop must be a non-negative integer (loop iterations), got {n!r}")
        elif section == "cost":
            for k in COST_FIELDS:
                if k not in sec:
                    continue
                v = sec[k]
                if not _is_int(v):
                    errs.append(f"cost.{k} must be an integer number of cycles, got {v!r}")
                elif v < 0:
                    errs.append(f"cost.{k} is negative ({v})")
        else:
            ok = True
            for k in ("entries", "ways"):
                if k in sec and not (_is_int(sec[k]) and sec[k] > 0):
                    errs.append(f"{section}.{k} must be a positive integer, got {sec[k]!r}")
                    ok = False
            e, w = sec.get("entries"), sec.get("ways")
            if ok and _is_int(e) and _is_int(w):
                if e % w:
                    errs.append(f"{section}: ways ({w}) does not divide entries ({e})")
                else:
                    s = e // w
                    if s & (s - 1):
                        errs.append(f"{section}: sets = entries/ways = {e}/{w} = {s} "
                                    f"is not a power of two")
            r = sec.get("replacement")
            if "replacement" in sec and r not in REPLACEMENTS:
                errs.append(f"{section}.replacement {r!r} is not one of "
                            f"{', '.join(REPLACEMENTS)}")
            if "max_block_shift" in want and "max_block_shift" in sec:
                m = sec["max_block_shift"]
                if not (_is_int(m) and MIN_BLOCK_SHIFT <= m <= MAX_BLOCK_SHIFT):
                    errs.append(f"{section}.max_block_shift must be an integer in "
                                f"{MIN_BLOCK_SHIFT}..{MAX_BLOCK_SHIFT}, got {m!r}")
    return errs


def _geometry(sec: dict) -> TlbGeometry:
    return TlbGeometry(entries=sec["entries"], ways=sec["ways"],
                       replacement=sec["replacement"],
                       max_block_shift=sec.get("max_block_shift"))


def load_preset(name_or_path: str | Path = DEFAULT_CORE) -> CorePreset:
    """Load a built-in preset by name ("cortex-a72") or a user's TOML file by path."""
    raw, label, builtin, _stem = _resolve(name_or_path, None, ())
    errs = _validate(raw, label, strict_sources=builtin)
    if errs:
        raise PresetError(f"core preset {label}: " + "; ".join(errs))
    sources: dict[str, str] = {}
    for section in _SECTIONS:
        sec = _get(raw, section)
        src = sec.get("source", {})
        for k in _sourced_keys(section):
            sources[f"{section}.{k}"] = src.get(k, f"no source given ({Path(label).name})")
    core, tlb = raw["core"], raw["tlb"]
    return CorePreset(
        name=core["name"], description=core["description"],
        freq_ghz=float(core["freq_ghz"]), asid_bits=core["asid_bits"],
        repeat_tlbi=core["repeat_tlbi"], ci_flush_bp=core["ci_flush_bp"], bhb_loop=core["bhb_loop"],
        l1i=_geometry(tlb["l1i"]), l1d=_geometry(tlb["l1d"]), l2=_geometry(tlb["l2"]),
        walk_cache=_geometry(tlb["walk_cache"]),
        cost=CostTable(**{k: raw["cost"][k] for k in COST_FIELDS}),
        sources=sources, path=label)
