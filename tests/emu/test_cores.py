"""Core presets: built-ins match the reference (docs/cost-presets.md), every number
has a source, inheritance works, and every bad input gives one clear PresetError."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from emu.cores import (COST_DOC, COST_FIELDS, DEFAULT_CORE, CorePreset, CostTable, PresetError,
                       TlbGeometry, list_presets, load_preset)

BUILTINS = ["cortex-a53", "cortex-a72", "cortex-a76", "neoverse-n1"]

# (entries, ways, max_block_shift) per TLB: docs/cost-presets.md and the TRMs it cites
EXPECTED_TLBS = {
    "cortex-a53": {"l1i": (10, 10, 20), "l1d": (10, 10, 20), "l2": (512, 4, 29),
                   "walk_cache": (64, 4, None)},
    "cortex-a72": {"l1i": (48, 48, 20), "l1d": (32, 32, 20), "l2": (1024, 4, 30),
                   "walk_cache": (64, 4, None)},
    "cortex-a76": {"l1i": (48, 48, 25), "l1d": (48, 48, 29), "l2": (1280, 5, 30),
                   "walk_cache": (64, 4, None)},
    "neoverse-n1": {"l1i": (48, 48, 25), "l1d": (48, 48, 29), "l2": (1280, 5, 30),
                    "walk_cache": (64, 4, None)},
}

# docs/cost-presets.md (an N1/A76-class table); A53/A72 use 5 for the L2 TLB hit
N1_COSTS = dict(l1_tlb_hit=0, l2_tlb_hit=3, walk_cache_hit=2, descriptor_read=10,
                exception_entry=50, tlbi_local=5, tlbi_broadcast=10, dsb_local=20,
                dsb_ish_base=500, dsb_ish_per_cpu=20, dsb_ishst=15, dsb_idle=15, isb=12,
                msr_ttbr=5, msr_tcr=5)

TAG = re.compile(r"\[(A|V|U|E|V-secondary)\]")


def test_builtin_list_and_default():
    assert list_presets() == BUILTINS
    assert DEFAULT_CORE in list_presets()
    assert load_preset().name == DEFAULT_CORE


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_loads_and_matches_reference(name):
    p = load_preset(name)
    assert isinstance(p, CorePreset)
    assert p.name == name
    assert p.asid_bits == 16
    assert p.freq_ghz > 0
    assert p.description
    assert Path(p.path).name == f"{name}.toml"
    for tlb, (entries, ways, shift) in EXPECTED_TLBS[name].items():
        g = getattr(p, tlb)
        assert isinstance(g, TlbGeometry)
        assert (g.entries, g.ways, g.max_block_shift) == (entries, ways, shift), tlb
        assert g.sets & (g.sets - 1) == 0
        assert g.replacement in ("lru", "plru", "random")
    expected = dict(N1_COSTS)
    if name in ("cortex-a53", "cortex-a72"):
        expected["l2_tlb_hit"] = 5
    for k, v in expected.items():
        assert getattr(p.cost, k) == v, k


def test_sets_and_fully_associative():
    a53, n1 = load_preset("cortex-a53"), load_preset("neoverse-n1")
    assert a53.l1d.fully_associative and a53.l1d.sets == 1
    assert a53.l2.sets == 128 and a53.walk_cache.sets == 16
    assert n1.l2.sets == 256 and not n1.l2.fully_associative
    assert load_preset("cortex-a72").l2.sets == 256


@pytest.mark.parametrize("name", BUILTINS)
def test_every_number_has_a_tagged_source(name):
    p = load_preset(name)
    for k in COST_FIELDS:
        src = p.sources[f"cost.{k}"]
        assert src.strip() and TAG.search(src), (k, src)
        assert "no source given" not in src
    for tlb in ("l1i", "l1d", "l2"):
        for k in ("entries", "ways", "replacement", "max_block_shift"):
            assert TAG.search(p.sources[f"tlb.{tlb}.{k}"]), (tlb, k)
    for k in ("entries", "ways", "replacement"):
        assert TAG.search(p.sources[f"tlb.walk_cache.{k}"])
    assert TAG.search(p.sources["core.freq_ghz"]) and TAG.search(p.sources["core.asid_bits"])


def test_cost_table_fields_documented_and_ints():
    assert set(COST_FIELDS) == set(COST_DOC)
    for name in BUILTINS:
        c = load_preset(name).cost
        for k in COST_FIELDS:
            v = getattr(c, k)
            assert isinstance(v, int) and not isinstance(v, bool) and v >= 0
    c = load_preset("neoverse-n1").cost
    assert c.dsb_ish(0) == 500 and c.dsb_ish(3) == 560


def test_name_is_case_insensitive_and_path_accepted():
    a = load_preset("Cortex-A72")
    b = load_preset(a.path)
    assert a == b


def write(tmp_path: Path, text: str, name: str = "user.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_inherit_overrides_only_given_keys(tmp_path):
    p = write(tmp_path, """
        inherit = "cortex-a72"
        [tlb.l2]
        entries = 2048
        [tlb.l2.source]
        entries = "my measurement"
        [cost]
        dsb_ish_base = 900
    """, "big-a72.toml")
    base = load_preset("cortex-a72")
    u = load_preset(str(p))
    assert u.name == "big-a72"
    assert "cortex-a72" in u.description
    assert u.l2 == dataclasses.replace(base.l2, entries=2048)
    assert u.l1d == base.l1d and u.walk_cache == base.walk_cache
    assert u.cost == dataclasses.replace(base.cost, dsb_ish_base=900)
    assert u.sources["tlb.l2.entries"] == "my measurement"
    assert "no source given" in u.sources["cost.dsb_ish_base"]
    assert u.sources["tlb.l2.ways"] == base.sources["tlb.l2.ways"]
    assert u.sources["cost.isb"] == base.sources["cost.isb"]
    assert u.path == str(p)


def test_inherit_chain_relative_path_and_name(tmp_path):
    write(tmp_path, """
        inherit = "neoverse-n1"
        [core]
        name = "mid"
        asid_bits = 8
    """, "mid.toml")
    p = write(tmp_path, """
        inherit = "mid.toml"
        [cost]
        isb = 30
    """, "leaf.toml")
    u = load_preset(p)
    assert u.name == "leaf" and u.asid_bits == 8 and u.cost.isb == 30
    assert u.l2.entries == 1280


def test_standalone_user_file(tmp_path):
    src = Path(load_preset("cortex-a53").path).read_text()
    src = src.replace('name = "cortex-a53"', 'name = "mine"')
    u = load_preset(write(tmp_path, src, "mine.toml"))
    assert u.name == "mine" and u.l2.entries == 512


# ------------------------------------------------------------------ bad inputs

def bad(tmp_path, text, *needles, name="bad.toml"):
    p = write(tmp_path, text, name)
    with pytest.raises(PresetError) as ei:
        load_preset(str(p))
    msg = str(ei.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def test_presets_error_is_value_error():
    assert issubclass(PresetError, ValueError)


def test_malformed_toml(tmp_path):
    msg = bad(tmp_path, 'inherit = "cortex-a72"\n[cost\nisb = 3\n', "malformed TOML", "bad.toml")
    assert re.search(r"line 2", msg)


def test_unknown_preset_name_lists_known():
    with pytest.raises(PresetError) as ei:
        load_preset("cortex-a99")
    msg = str(ei.value)
    assert "cortex-a99" in msg
    for n in BUILTINS:
        assert n in msg


def test_missing_file():
    with pytest.raises(PresetError, match="not found"):
        load_preset("/nonexistent/dir/core.toml")


def test_unknown_inherit(tmp_path):
    bad(tmp_path, 'inherit = "cortex-z1"\n', "cortex-z1", "cortex-a72")


def test_inherit_cycle(tmp_path):
    write(tmp_path, 'inherit = "b.toml"\n', "a.toml")
    bad(tmp_path, 'inherit = "a.toml"\n', "cycle", name="b.toml")


def test_missing_keys_named(tmp_path):
    src = Path(load_preset("cortex-a72").path).read_text()
    src = src.replace("dsb_idle = 15\n", "").replace("max_block_shift = 30\n", "")
    bad(tmp_path, src, "missing key", "cost.dsb_idle", "tlb.l2.max_block_shift")


def test_missing_table(tmp_path):
    src = Path(load_preset("cortex-a72").path).read_text()
    start = src.index("[tlb.walk_cache]")
    end = src.index("[cost]")
    bad(tmp_path, src[:start] + src[end:], "missing table", "tlb.walk_cache")


def test_extra_keys_named(tmp_path):
    bad(tmp_path, """
        inherit = "cortex-a72"
        colour = "blue"
        [cost]
        tlbi_everything = 3
        [tlb.l2]
        banks = 2
        [tlb.l3]
        entries = 8
    """, "colour", "cost.tlbi_everything", "tlb.l2.banks", "tlb.l3")


def test_source_for_unknown_key(tmp_path):
    bad(tmp_path, """
        inherit = "cortex-a72"
        [cost.source]
        isbb = "typo"
    """, "cost.source.isbb")


@pytest.mark.parametrize("value", ["0", "-4", "12.5", '"48"', "true"])
def test_bad_sizes(tmp_path, value):
    bad(tmp_path, f"""
        inherit = "cortex-a72"
        [tlb.l1d]
        entries = {value}
    """, "tlb.l1d.entries", "positive integer")


def test_ways_not_dividing_entries(tmp_path):
    bad(tmp_path, """
        inherit = "cortex-a72"
        [tlb.l2]
        entries = 1000
        ways = 3
    """, "tlb.l2", "does not divide")


def test_sets_not_power_of_two(tmp_path):
    bad(tmp_path, """
        inherit = "cortex-a72"
        [tlb.l2]
        entries = 1200
        ways = 4
    """, "tlb.l2", "300", "power of two")


def test_unknown_replacement(tmp_path):
    bad(tmp_path, """
        inherit = "cortex-a72"
        [tlb.walk_cache]
        replacement = "fifo"
    """, "tlb.walk_cache.replacement", "fifo", "lru")


@pytest.mark.parametrize("value", ["11", "31", "21.0"])
def test_bad_block_shift(tmp_path, value):
    bad(tmp_path, f"""
        inherit = "cortex-a72"
        [tlb.l1i]
        max_block_shift = {value}
    """, "tlb.l1i.max_block_shift")


def test_walk_cache_has_no_block_shift(tmp_path):
    bad(tmp_path, """
        inherit = "cortex-a72"
        [tlb.walk_cache]
        max_block_shift = 21
    """, "tlb.walk_cache.max_block_shift", "unknown key")


@pytest.mark.parametrize("value", ["12", "0", "16.0"])
def test_bad_asid_bits(tmp_path, value):
    bad(tmp_path, f"""
        inherit = "cortex-a72"
        [core]
        asid_bits = {value}
    """, "core.asid_bits", "8 or 16")


def test_bad_freq(tmp_path):
    bad(tmp_path, """
        inherit = "cortex-a72"
        [core]
        freq_ghz = 0
    """, "core.freq_ghz")


def test_negative_cost(tmp_path):
    bad(tmp_path, """
        inherit = "cortex-a72"
        [cost]
        dsb_ish_per_cpu = -1
    """, "cost.dsb_ish_per_cpu", "negative")


def test_non_integer_cost(tmp_path):
    bad(tmp_path, """
        inherit = "cortex-a72"
        [cost]
        isb = 1.5
    """, "cost.isb", "integer")


def test_several_problems_in_one_message(tmp_path):
    msg = bad(tmp_path, """
        inherit = "cortex-a72"
        [cost]
        isb = -1
        [core]
        asid_bits = 9
    """, "cost.isb", "core.asid_bits")
    assert msg.count("core preset") == 1


def test_bad_inherit_type(tmp_path):
    bad(tmp_path, "inherit = 3\n", "inherit")


def test_dataclasses_are_frozen():
    p = load_preset("cortex-a53")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.cost.isb = 3  # type: ignore[misc]
    assert isinstance(p.cost, CostTable)


# ------------------------------------------------------------------ core switches, new costs

# (repeat_tlbi, ci_flush_bp): Linux cpu_errata.c arm64_repeat_tlbi_list (A76 erratum
# 1286807 / 4118414, N1 erratum 4193800); OpenBSD arm64 cpu.c cpu_mitigate_spectre_v2()
# (A53 "Not vulnerable"; A72 without CSV2 -> cpu_flush_bp_psci; A76/N1 with CSV2)
# cpu_mitigate_spectre_bhb() (trampoline_vectors_loop_8 for A72, _24 for A76/N1, none for A53)
EXPECTED_SWITCHES = {"cortex-a53": (False, "cpu_flush_bp_noop", 0), "cortex-a72": (False, "cpu_flush_bp_psci", 8),
                     "cortex-a76": (True, "cpu_flush_bp_noop", 24), "neoverse-n1": (True, "cpu_flush_bp_noop", 24)}


@pytest.mark.parametrize("name", BUILTINS)
def test_core_switches(name):
    p = load_preset(name)
    assert (p.repeat_tlbi, p.ci_flush_bp, p.bhb_loop) == EXPECTED_SWITCHES[name]
    for k in ("repeat_tlbi", "ci_flush_bp", "bhb_loop"):
        assert TAG.search(p.sources[f"core.{k}"]) and "no source given" not in p.sources[f"core.{k}"]


def test_exit_path_costs_are_documented():
    for k in ("context_switch", "exception_entry", "exception_return", "lock_acquire", "lock_contended",
              "flush_bp_psci", "icache_sync_page", "bhb_loop_iteration"):
        assert k in COST_FIELDS and COST_DOC[k]


def test_cost_presets_doc_matches_the_presets():
    """docs/cost-presets.md's tables are the presets' numbers, row by row."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cost-presets.md").read_text()
    presets = [load_preset(n) for n in BUILTINS]
    for k in COST_FIELDS:
        row = re.search(rf"^\| `{k}` \|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|", doc, re.M)
        assert row, f"docs/cost-presets.md has no row for cost {k}"
        assert [int(v) for v in row.groups()] == [getattr(p.cost, k) for p in presets], k
    for p in presets:
        row = re.search(rf"^\| {p.name} \| (true|false) \| `(\w+)` \| (\d+) \| ([\d.]+) \|", doc, re.M)
        assert row and (row.group(1) == "true", row.group(2), int(row.group(3)), float(row.group(4))) == \
            (p.repeat_tlbi, p.ci_flush_bp, p.bhb_loop, p.freq_ghz), p.name


@pytest.mark.parametrize("value", ["true", '"12"', "[1]", "{ a = 1 }"])
def test_cost_of_the_wrong_type(tmp_path, value):
    msg = bad(tmp_path, f"""
        inherit = "cortex-a72"
        [cost]
        flush_bp_psci = {value}
    """, "cost.flush_bp_psci", "integer")
    assert msg.count("cost.") == 1


def test_missing_cost_alone_is_named(tmp_path):
    src = Path(load_preset("cortex-a76").path).read_text().replace("icache_sync_page = 2444\n", "")
    msg = bad(tmp_path, src, "missing key(s): cost.icache_sync_page")
    assert "cost.flush_bp_psci" not in msg


@pytest.mark.parametrize("key,value,needle", [
    ("repeat_tlbi", '"yes"', "core.repeat_tlbi must be true or false"),
    ("repeat_tlbi", "1", "core.repeat_tlbi must be true or false"),
    ("ci_flush_bp", '"cpu_flush_bp_smc"', "core.ci_flush_bp must be one of"),
    ("ci_flush_bp", "0", "core.ci_flush_bp must be one of"),
    ("bhb_loop", "-1", "core.bhb_loop must be a non-negative integer"),
    ("bhb_loop", "true", "core.bhb_loop must be a non-negative integer"),
])
def test_bad_core_switch(tmp_path, key, value, needle):
    bad(tmp_path, f"""
        inherit = "cortex-a72"
        [core]
        {key} = {value}
    """, needle)


def test_switch_override_keeps_provenance(tmp_path):
    p = write(tmp_path, """
        inherit = "cortex-a72"
        [core]
        repeat_tlbi = true
    """, "a72-errata.toml")
    u = load_preset(p)
    assert u.repeat_tlbi and u.ci_flush_bp == "cpu_flush_bp_psci"
    assert "no source given" in u.sources["core.repeat_tlbi"]


@pytest.mark.parametrize("body,needle", [
    ("[cost]\nisb = -3\n", "cost.isb is negative"),
    ("[cost]\nisb = \"fast\"\n", "cost.isb must be an integer"),
    ("[cost]\nisbb = 3\n", "unknown key(s): cost.isbb"),
    ("[core]\nrepeat_tlbi = \"yes\"\n", "core.repeat_tlbi must be true or false"),
])
def test_cli_bad_preset_is_one_line_and_exit_2(tmp_path, body, needle):
    p = write(tmp_path, 'inherit = "cortex-a72"\n' + body, "bad.toml")
    r = subprocess.run([sys.executable, "-m", "emu.cli", "run", "--core", str(p)],
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr


def test_cli_missing_cost_is_one_line_and_exit_2(tmp_path):
    src = Path(load_preset("cortex-a72").path).read_text().replace("dsb_idle = 15\n", "")
    p = write(tmp_path, src, "nodsb.toml")
    r = subprocess.run([sys.executable, "-m", "emu.cli", "run", "--core", str(p)],
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert "missing key(s): cost.dsb_idle" in r.stderr
