"""The bundled workloads: each builds, is documented, and runs to its result on raw
Unicorn under the mini kernel (tests/guest/minikernel.py). The ones that moved from
keystone assemble to the very bytes keystone produced (hashes recorded before the move),
so every exact instruction, miss and walk count measured on them still holds."""
from __future__ import annotations

import hashlib

import pytest
from capstone import CS_ARCH_ARM64, CS_MODE_ARM, Cs
from unicorn import UC_HOOK_CODE
from unicorn.arm64_const import UC_ARM64_REG_PC

from guest import programs
from guest.image import GuestBuildError
from guest.syscalls import Sys

from .minikernel import MiniKernel

CS = Cs(CS_ARCH_ARM64, CS_MODE_ARM)
PAGE = 4096
HEAP = 0x20000000

# sha256 (first 16 hex digits) of Program.code from keystone 0.9.2, guest/asm.py of d0d8ff9
KEYSTONE_CODE = {
    ("touch", ()): ("9bb881207aaf3848", 140),
    ("touch", (("NPAGES", 100000),)): ("6b2ca4608a448806", 140),
    ("stride", ()): ("23bfc87d7811eac8", 132),
    ("stride", (("NPAGES", 40), ("PASSES", 3), ("STRIDE", 8192))): ("9939bf440ce20492", 132),
    ("loop", ()): ("99b33fe98af7d475", 124),
    ("loop", (("ITERS", 300),)): ("2257b998d22db571", 124),
    ("threads", ()): ("29ff5eb2b63e0352", 404),
    ("threads", (("NTHREADS", 4), ("NPAGES", 10), ("THREAD_EXIT", 2))): ("d770ee6847a65d1b", 404),
    ("bad_jump", ()): ("8016979474fff92b", 16),
    ("bad_loop", ()): ("1ec77d099c3c144b", 8),
    ("bad_undef", ()): ("2a5fe00d4d6e41ec", 36),
}


@pytest.mark.parametrize("name,defines", sorted(KEYSTONE_CODE))
def test_moved_workloads_are_the_bytes_keystone_made(name, defines):
    code = programs.load(name, dict(defines)).code
    assert (hashlib.sha256(code).hexdigest()[:16], len(code)) == KEYSTONE_CODE[name, defines]


def test_every_workload_builds_with_docs_and_layout():
    progs = programs.list_programs()
    assert set(progs) == {"touch", "stride", "loop", "threads", "threads_c", "sparse", "spin", "storm",
                          "bad_jump", "bad_loop", "bad_undef"}
    for name, desc in progs.items():
        assert desc and not desc.startswith("//")
        info = programs.info(name)
        assert all(p.doc and p.default for p in info.params.values())
        p = programs.load(name)
        assert p.entry == p.symbols["_start"] == p.base == programs.DEFAULT_BASE
        layout = p.layout
        assert layout["text"].prot == 5 and p.entry in layout["text"]
        spans = sorted(layout.values(), key=lambda r: r.start)
        assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))
        assert all(r.start % PAGE == 0 and r.size % PAGE == 0 and r.size > 0 for r in spans)
        if name.startswith("bad_"):
            assert set(layout) == {"text"}
        else:
            assert layout["stack"].end == p.initial_sp <= (1 << 39) - 0x8000
        for va in p.svcs:                      # every syscall uses the OpenBSD sequence
            assert p.syscall_return(va) == va + 12
    assert set(programs.info("threads").params) == {"NPAGES", "NTHREADS", "THREAD_EXIT", "MAIN_WAIT"}
    assert set(programs.info("threads_c").params) == {"NPAGES", "NTHREADS", "THREAD_EXIT", "MAIN_WAIT"}
    assert set(programs.info("touch").params) == {"NPAGES", "POPULATE", "MMAP"}
    assert programs.info("touch").params["NPAGES"].default == "64"


def test_barriers_and_svcs_match_capstone():
    p = programs.load("threads")
    found = [(i.address, i.mnemonic) for i in CS.disasm(p.code, p.base) if i.mnemonic in ("dsb", "dmb", "isb")]
    svcs = [i.address for i in CS.disasm(p.code, p.base) if i.mnemonic == "svc"]
    assert p.barriers == found and p.svcs == svcs and len(svcs) == 6 and len(found) == 12


def test_knobs_are_checked():
    p = programs.load("touch", {"NPAGES": 256})
    assert p.layout["heap"].size == 256 * PAGE
    assert "heap" not in programs.load("touch", {"NPAGES": 0}).layout        # a 0-byte region is left out
    with pytest.raises(GuestBuildError, match=r"^touch\.S: no parameter 'NPAGE'; parameters: NPAGES, POPULATE, MMAP$"):
        programs.load("touch", {"NPAGE": 3})
    with pytest.raises(GuestBuildError, match="unknown guest program"):
        programs.load("nosuch")
    with pytest.raises(GuestBuildError, match="negative size"):
        programs.load("touch", {"NPAGES": -1})


# ---------------------------------------------------------------------------------------
# end to end

@pytest.mark.parametrize("populate,mmap", [(1, 0), (0, 0), (1, 1), (0, 1)])
def test_touch(populate, mmap):
    n = 24
    p = programs.load("touch", {"NPAGES": n, "POPULATE": populate, "MMAP": mmap})
    k = MiniKernel(p, count=True)
    assert k.run() == 0
    assert [k.u64(HEAP + i * PAGE) for i in range(n)] == [HEAP + i * PAGE for i in range(n)]
    assert k.u64(HEAP + (n - 1) * PAGE + 8) == 0                 # one word per page
    assert k.u64((1 << 39) - 0x8000 - 16) == 0
    assert k.faults == ([] if populate else [HEAP + i * PAGE for i in range(n)])
    assert k.syscalls == ([Sys.MMAP] if mmap else []) + [Sys.EXIT]
    if not mmap:
        # by hand from touch.S: 12 to set up, mov, mov, cbz, 5 per stored page, mov, mov,
        # cbz, 5 per loaded page, cmp, cset, mov x8, svc (armmu demo: 662 for 64 pages)
        assert k.insns == 12 + 3 + 5 * n + 3 + 5 * n + 4


def test_touch_zero_pages():
    assert MiniKernel(programs.load("touch", {"NPAGES": 0})).run() == 0


def test_loop_runs_k_iterations():
    iters, npages = 300, 4
    p = programs.load("loop", {"ITERS": iters, "NPAGES": npages})
    k = MiniKernel(p, count=True)
    assert k.run() == 0
    assert [k.u64(HEAP + i * PAGE) for i in range(npages)] == [iters] * npages
    assert k.u64(HEAP + 8) == iters
    # 11 to set up; per iteration cmp, b.hs, mov, mov, cbz + 6 per page + add, b; then
    # the last cmp, b.hs and str, mov, mov x8, svc
    assert k.insns == 11 + iters * (7 + 6 * npages) + 2 + 4


def test_stride():
    p = programs.load("stride", {"NPAGES": 40, "PASSES": 3, "STRIDE": 8192})
    k = MiniKernel(p)
    assert k.run() == 0
    assert [k.u64(HEAP + i * 8192) for i in range(40)] == [3] * 40 and k.u64(HEAP + PAGE) == 0


@pytest.mark.parametrize("name", ["threads", "threads_c"])
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_threads(name, mode):
    nthreads, npages = 4, 10                          # PER = 2, main also takes pages 8, 9
    p = programs.load(name, {"NTHREADS": nthreads, "NPAGES": npages, "THREAD_EXIT": mode})
    k = MiniKernel(p)
    assert k.run() == 0 and k.fault is None
    data = HEAP + PAGE
    assert [k.u64(data + i * PAGE) for i in range(npages)] == [data + i * PAGE for i in range(npages)]
    assert [k.u64(HEAP + 8 * i) for i in range(1, nthreads)] == [1] * (nthreads - 1)
    tids = [k.u64(HEAP + 0x800 + 8 * i) & 0xFFFFFFFF for i in range(1, nthreads)]
    assert tids == [100, 101, 102]
    assert len(k.threads) == (1 if mode == 1 else nthreads)      # threxit'ed threads are gone
    assert k.syscalls.count(Sys.TFORK) == nthreads - 1 and k.syscalls[-1] == Sys.EXIT


@pytest.mark.parametrize("name", ["threads", "threads_c"])
def test_threads_tfork_failure_exits_2(name):
    k = MiniKernel(programs.load(name, {"NTHREADS": 2, "NPAGES": 2}), refuse_tfork=True)
    assert k.run() == 2 and k.syscalls == [Sys.TFORK, Sys.EXIT]


@pytest.mark.parametrize("mmap", [0, 1])
def test_sparse_one_page_per_2mb(mmap):
    n = 5
    p = programs.load("sparse", {"NPAGES": n, "MMAP": mmap})
    k = MiniKernel(p, count=True)
    assert k.run() == 0
    base, stride = 0x40000000, 0x200000
    assert [k.u64(base + i * stride) for i in range(n)] == [base + i * stride for i in range(n)]
    assert sorted(va for va in k.mapped if base <= va < base + n * stride) == [base + i * stride for i in range(n)]
    if mmap:
        assert k.syscalls == [Sys.MMAP] * n + [Sys.EXIT] and k.faults == []
    else:
        assert k.faults == [base + i * stride for i in range(n)]
        assert k.insns == 17 + 4 * n                    # sparse.S: 14 to set up, 4 per page, 3


def test_spin_siblings_spin_while_main_exits():
    p = programs.load("spin", {"NPAGES": 8, "NSPIN": 2})
    k = MiniKernel(p)
    spins = []
    k.uc.hook_add(UC_HOOK_CODE, lambda uc, a, s, d: spins.append(a), None,
                  p.symbols["sibling_spin"], p.symbols["sibling_spin"])
    assert k.run() == 0
    assert len(k.threads) == 3 and len(spins) > 100       # both siblings were still spinning
    assert k.syscalls.count(Sys.TFORK) == 2 and Sys.THREXIT not in k.syscalls
    assert [k.u64(HEAP + 8 * i) for i in (1, 2)] == [1, 1]


@pytest.mark.parametrize("exit_all", [0, 1])
def test_storm(exit_all):
    t, n = 3, 4
    p = programs.load("storm", {"NTHREADS": t, "NPAGES": n, "EXIT_ALL": exit_all})
    k = MiniKernel(p)
    assert k.run() == 0
    data = HEAP + PAGE
    assert [k.u64(data + i * PAGE) for i in range(t * n)] == [data + i * PAGE for i in range(t * n)]
    assert k.u64(HEAP) == t                              # everybody arrived before the exit


def test_bad_programs():
    p = programs.load("bad_undef")
    k = MiniKernel(p)
    assert k.run() is None and k.fault == ("intr", 1, p.symbols["fault"])   # UNDEF at the udf
    p = programs.load("bad_jump", {"BAD_TARGET": 0xBAD000})
    k = MiniKernel(p)
    assert k.run() is None and k.fault[1] == 0xBAD000
    p = programs.load("bad_loop")
    k = MiniKernel(p)
    assert k.run(max_quanta=5) is None and k.fault is None and k.status is None
    assert k.uc.reg_read(UC_ARM64_REG_PC) == p.symbols["spin"]


def test_armmu_list_shows_workloads_and_knobs(capsys):
    from emu.cli import main
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "  touch          Touch NPAGES heap pages" in out
    assert "knobs: NPAGES=64 POPULATE=1 MMAP=0" in out
    assert "knobs: NPAGES=64 NTHREADS=4 THREAD_EXIT=0 MAIN_WAIT=1" in out
    assert "threads_c" in out and "sparse" in out and "storm" in out and "spin" in out
