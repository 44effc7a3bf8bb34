"""ASID allocator: pairs, generations, rollover (one VMALLE1IS), stale frees, uniqueness."""
from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pmap_py import PMAP_ASID_MASK

from .conftest import delta, make


def switch_in(ps, cpu, pm):
    ps.pmap_setttb(cpu, pm)
    return pm


def test_bootstrap_state():
    m, ps = make(asid_bits=8)
    assert ps.pmap_nasid == 256 and ps.pmap_asid_gen == 65536
    assert ps.asids.used_pairs() == [0]
    k = ps.pmap_kernel()
    assert k.pm_asid == 0 and k.pm_active == 1 and k.pm_privileged and k.pm_pt0pa == ps.zero_page
    for c in m.cpus:
        assert c.ttbr0 == ps.zero_page and c.asid == 0 and ps.curpm(c) is k
        assert c.tcr & 0x3F == 25 and c.tcr >> 22 & 1 and not c.tcr >> 36 & 1     # T0SZ, A1, AS=0
    m16, ps16 = make()
    assert ps16.pmap_nasid == 65536 and m16.cpus[0].tcr >> 36 & 1


def test_127_pmaps_fit_then_rollover_with_one_vmalle1is():
    m, ps = make(asid_bits=8)
    c0, c1 = m.cpus
    pms = []
    for _ in range(127):
        pm = ps.pmap_create(c0)
        _, d = delta(m, switch_in, ps, c0, pm)
        assert "tlbi.VMALLE1IS" not in d[0]
        pms.append(pm)
    asids = sorted(p.asid for p in pms)
    assert asids == list(range(2, 256, 2))                       # every pair but the kernel's
    assert {p.generation for p in pms} == {65536}
    last = pms[-1]                                               # cpu0's ci_curpm
    ps.pmap_setttb(c1, pms[5])                                   # cpu1 runs another one
    pm128 = ps.pmap_create(c0)
    _, d = delta(m, switch_in, ps, c0, pm128)
    assert d[0] == {"tlbi.VMALLE1IS": 1, "dsb": 2, "isb": 4, "ttbr_writes": 3} and d[1] == {}
    assert m.events()["asid_rollovers"] == 1
    assert ps.pmap_asid_gen == 2 * 65536 and pm128.generation == 2 * 65536
    # the CPUs' current pmaps were carried over into the new generation
    assert last.generation == pms[5].generation == 2 * 65536
    assert sorted(ps.asids.used_pairs()) == sorted({0, last.asid, pms[5].asid, pm128.asid})
    assert pm128.asid not in (last.asid, pms[5].asid)
    assert ps.pmap_kernel().pm_asid & PMAP_ASID_MASK == 0
    # stale pmaps get a fresh ASID on their next switch-in, preferably their old one
    old = pms[0].asid
    _, d = delta(m, switch_in, ps, c1, pms[0])
    assert "tlbi.VMALLE1IS" not in d[1] and pms[0].generation == 2 * 65536
    assert pms[0].asid == old


def test_stale_asid_is_not_released_twice():
    m, ps = make(asid_bits=8)
    c0, c1 = m.cpus
    a = ps.pmap_create(c0)
    switch_in(ps, c0, a)
    x = a.asid
    ps.pmap_setttb(c0, ps.pmap_kernel())
    fill = [switch_in(ps, c0, ps.pmap_create(c0)) for _ in range(126)]
    b = switch_in(ps, c0, ps.pmap_create(c0))                    # 128th: rollover
    assert ps.pmap_asid_gen == 2 * 65536 and a.generation == 65536
    # find the pmap that now owns x in the new generation
    holder = next((p for p in fill + [b] if p.generation == ps.pmap_asid_gen and p.asid == x), None)
    while holder is None:
        ps.pmap_setttb(c1, ps.pmap_kernel())
        p = switch_in(ps, c1, ps.pmap_create(c1))
        holder = p if p.asid == x else None
    assert ps.asids.bits(x) == 3
    bitmap = list(ps.pmap_asid)
    _, d = delta(m, ps.pmap_destroy, c0, a)                      # a is stale
    assert d[0]["tlbi.ASIDE1IS"] == 2                            # still flushed
    assert ps.pmap_asid == bitmap and ps.asids.bits(x) == 3      # but holder keeps its pair
    for c in m.cpus:
        if ps.curpm(c) is holder:
            ps.pmap_setttb(c, ps.pmap_kernel())
    ps.pmap_destroy(c0, holder)                                  # current generation: released
    assert ps.asids.bits(x) == 0


def test_free_current_generation_releases_pair():
    m, ps = make(asid_bits=8)
    c0 = m.cpus[0]
    a = switch_in(ps, c0, ps.pmap_create(c0))
    ps.pmap_setttb(c0, ps.pmap_kernel())
    x = a.asid
    ps.pmap_destroy(c0, a)
    assert ps.asids.bits(x) == 0 and x not in ps.asids.used_pairs()


def test_linear_scan_when_random_candidates_collide():
    m, ps = make(asid_bits=8)
    c0 = m.cpus[0]
    ps.asids.rng = random.Random(1)
    # occupy everything but pair 250; random probes will almost surely miss it
    for w in range(len(ps.pmap_asid)):
        ps.pmap_asid[w] = 0xFFFF_FFFF if w < 8 else 0
    ps.pmap_asid[250 // 32] &= ~(3 << (250 % 32))
    pm = ps.pmap_create(c0)
    assert ps.pmap_find_asid(pm) == 250


def check_invariants(m, ps):
    gen = ps.pmap_asid_gen
    current = [p for p in ps.live if p.generation == gen]
    asids = [p.asid for p in current]
    assert len(asids) == len(set(asids)), "two live pmaps share an ASID"
    for p in current:
        assert p.asid % 2 == 0 and 0 < p.asid < ps.pmap_nasid
        assert ps.asids.bits(p.asid) == 3
    for c in m.cpus:
        cur = ps.curpm(c)
        assert cur is ps.pmap_kernel() or cur.generation == gen
        assert c.asid == cur.asid


OPS = st.lists(st.tuples(st.sampled_from(["create", "switch", "destroy", "idle"]),
                         st.integers(0, 1), st.integers(0, 10_000)), min_size=1, max_size=400)


@settings(max_examples=30, deadline=None)
@given(ops=OPS, seed=st.integers(0, 2**16))
def test_live_pmaps_never_share_an_asid(ops, seed):
    m, ps = make(asid_bits=8, seed=seed)
    pms = []
    for op, ci, k in ops:
        cpu = m.cpus[ci]
        if op == "create" or not pms:
            pms.append(ps.pmap_create(cpu))
        elif op == "switch":
            ps.pmap_setttb(cpu, pms[k % len(pms)])
        elif op == "idle":
            ps.pmap_setttb(cpu, ps.pmap_kernel())
        else:
            pm = pms.pop(k % len(pms))
            for c in m.cpus:
                if ps.curpm(c) is pm:
                    ps.pmap_setttb(c, ps.pmap_kernel())
            ps.pmap_destroy(cpu, pm)
        check_invariants(m, ps)


def test_many_pmaps_random_sequence_with_rollovers():
    m, ps = make(asid_bits=8, seed=7)
    rng = random.Random(7)
    pms = []
    for i in range(3000):
        cpu = m.cpus[rng.randrange(2)]
        r = rng.random()
        if r < 0.4 or not pms:
            pms.append(ps.pmap_create(cpu))
        elif r < 0.8:
            ps.pmap_setttb(cpu, rng.choice(pms))
        else:
            pm = pms.pop(rng.randrange(len(pms)))
            for c in m.cpus:
                if ps.curpm(c) is pm:
                    ps.pmap_setttb(c, ps.pmap_kernel())
            ps.pmap_destroy(cpu, pm)
        if i % 50 == 0:
            check_invariants(m, ps)
    assert m.events()["asid_rollovers"] >= 1
    assert m.events()["tlbi.VMALLE1IS"] == m.events()["asid_rollovers"] + 1     # + bootstrap
