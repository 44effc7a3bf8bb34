"""End to end: a guest at EL0 on cpu0 loads through pmap_enter'ed pages (its TLB fills
are tagged with ASID|ASID_USER), then pmap_remove on the active pmap flushes them
(2 VAE1IS per page, both ASIDs), and on the purge path the two ASIDE1IS already
cleaned the TLB so the teardown issues no VAE1IS at all."""
from __future__ import annotations

from emu.cpu import StopKind
from guest.asm import assemble as guest_assemble
from emu.frames import FrameKind
from emu.walker import Access, Fault, FaultKind, Translation
from pmap_py import PROT_EXEC, PROT_READ, PROT_WRITE

from .conftest import delta, make

CODE_VA = 0x40_0000
DATA_VA = 0x1000_0000
NDATA = 3

SRC = f"""
    movz x0, #{DATA_VA >> 16:#x}, lsl #16
    ldr  x1, [x0]
    ldr  x2, [x0, #0x1000]
    ldr  x3, [x0, #0x2000]
    add  x4, x1, x2
    add  x4, x4, x3
    str  x4, [x0, #8]
    svc  #0
"""


def assemble(src):
    return guest_assemble(src, CODE_VA).code


def setup(trace=None):
    m, ps = make(trace=trace)
    c0 = m.cpus[0]
    pm = ps.pmap_create(c0)
    code_pa = m.frames.alloc(FrameKind.USER, owner=pm)
    m.load_code(code_pa, assemble(SRC))
    ps.pmap_enter(c0, pm, CODE_VA, code_pa, PROT_READ | PROT_EXEC)
    data = []
    for i in range(NDATA):
        pa = m.frames.alloc(FrameKind.USER, owner=pm)
        m.mem.write64(pa, 100 * (i + 1))
        ps.pmap_enter(c0, pm, DATA_VA + i * 0x1000, pa, PROT_READ | PROT_WRITE)
        data.append(pa)
    ps.pmap_activate(c0, pm)                  # curproc on cpu0: pmap_setttb
    return m, ps, pm, data


def run_guest(m, ps, pm):
    c0 = m.cpus[0]
    assert c0.ttbr0 == pm.pm_pt0pa and c0.asid == pm.asid
    ps.pmap_userret(c0)                       # EL0 with ASID|ASID_USER in TTBR1
    stop = c0.run(100, pc=CODE_VA)
    assert stop.kind is StopKind.SVC, stop
    ps.pmap_kernel_entry(c0)
    return stop


def user_entries(cpu, pm, vas):
    return [va for va in vas for a in (pm.asid, pm.asid | 1) if cpu.tlb.probe(va, a) is not None]


DATA_VAS = [DATA_VA + i * 0x1000 for i in range(NDATA)]


def test_guest_loads_then_remove_flushes_active_pmap():
    m, ps, pm, data = setup()
    c0 = m.cpus[0]
    run_guest(m, ps, pm)
    assert c0.reg(4) == 600 and m.mem.read64(data[0] + 8) == 600
    # fills happened in userland: tagged with the odd ASID only
    assert user_entries(c0, pm, DATA_VAS) == DATA_VAS
    assert all(c0.tlb.probe(va, pm.asid | 1) for va in DATA_VAS)
    assert c0.tlb.probe(CODE_VA, pm.asid | 1) is not None
    # the kernel (even ASID) sees the same tables through cpu.lookup
    r = c0.lookup(DATA_VA + 0x1010, Access.READ, 0)
    assert isinstance(r, Translation) and r.pa == data[1] + 0x10
    assert c0.tlb.probe(DATA_VA + 0x1000, pm.asid) is not None       # now both ASIDs hold it
    n, d = delta(m, ps.pmap_remove, c0, pm, DATA_VA, DATA_VA + NDATA * 0x1000)
    assert n == NDATA and d[0]["tlbi.VAE1IS"] == 2 * NDATA and d[1] == {}
    assert user_entries(c0, pm, DATA_VAS) == []
    assert c0.tlb.probe(CODE_VA, pm.asid | 1) is not None          # untouched
    f = c0.lookup(DATA_VA, Access.READ, 0)
    assert isinstance(f, Fault) and f.kind is FaultKind.TRANSLATION and f.level == 3
    # the guest itself now faults on its first load
    ps.pmap_userret(c0)
    stop = c0.run(100, pc=CODE_VA)
    assert stop.kind is StopKind.FAULT and stop.fault.va == DATA_VA and stop.fault.level == 3


def test_purge_path_zero_vae1is_and_clean_tlb():
    m, ps, pm, data = setup()
    c0, c1 = m.cpus
    run_guest(m, ps, pm)
    c0.lookup(DATA_VA, Access.READ, 1)                 # an even-ASID entry as well
    assert len(user_entries(c0, pm, DATA_VAS)) == NDATA + 1
    _, d = delta(m, ps.pmap_purge, c0, pm)
    assert d[0] == {"tlbi.ASIDE1IS": 2, "dsb": 4, "isb": 3, "ttbr_writes": 1}
    assert user_entries(c0, pm, DATA_VAS + [CODE_VA]) == []
    n, d = delta(m, ps.pmap_remove, c0, pm, 0, 0x2000_0000)       # uvm_map_teardown
    assert n == NDATA + 1 and d == [{}, {}]
    assert user_entries(c0, pm, DATA_VAS + [CODE_VA]) == []
    # nothing can refill: TTBR0 is the zero page, even after a reschedule
    assert isinstance(c0.lookup(DATA_VA, Access.READ, 1), Fault)
    ps.pmap_setttb(c0, pm)
    assert c0.ttbr0 == ps.zero_page and isinstance(c0.lookup(DATA_VA, Access.READ, 1), Fault)
    # exit1 tail, switch to idle, reaper on cpu1
    _, d = delta(m, ps.pmap_deactivate, c0, pm)
    assert d == [{}, {}]
    ps.pmap_setttb(c0, ps.pmap_kernel())
    before_free = m.frames.counts()[FrameKind.FREE]
    _, d = delta(m, ps.pmap_destroy, c1, pm)
    assert d == [{}, {"tlbi.ASIDE1IS": 2, "dsb": 4, "isb": 2}]
    assert m.frames.counts()[FrameKind.FREE] - before_free == 4   # L1, L2, two L3s (code, data)
    assert [m.frames.info(p).kind for p in m.frames.owned_by(pm)] == [FrameKind.USER] * (NDATA + 1)


# ---------------------------------------------------------------------------------------
# exec: a guest ELF mapped by emu.run.scenario.map_program (pmap_enter per page)

EXEC_SRC = """// text, rodata, data, a populated heap and a demand region
#include <armmu/asm.h>
	ARMMU_REGION heap, 0x20000000, 0x2000, PROT_RW, REGION_POPULATE
	ARMMU_REGION lazy, 0x30000000, 0x4000, PROT_RW, REGION_DEMAND
	.text
	.globl _start
_start:
	adrp	x1, ro
	ldr	x0, [x1, :lo12:ro]
	adrp	x2, rw
	str	x0, [x2, :lo12:rw]
	MOV48	x3, 0x20001000
	str	x0, [x3]
	MOV48	x4, 0x30002000
	str	x0, [x4]		// a demand page: the kernel enters it on this fault
	SYSTRAP	SYS_exit
	.section .rodata
ro:	.quad 0x1234
	.data
rw:	.quad 0
"""


def _pa(cpu, va, el=0):
    """PA of va through cpu's TLB model."""
    return cpu.lookup(va, Access.READ, el).pa_of(va)


def test_exec_maps_segments_and_regions_with_their_protections(tmp_path):
    from emu.run.scenario import map_program
    from guest.programs import load_file
    from pmap_py import PROT_READ as R, PROT_WRITE as W
    src = tmp_path / "exec.S"
    src.write_text(EXEC_SRC)
    prog = load_file(src)
    m, ps = make()
    c0 = m.cpus[0]
    pm = ps.pmap_create(c0)
    frames = map_program(m, ps, c0, pm, prog)
    assert len(frames) == 3 + 2                       # text, rodata, data pages + 2 heap pages
    ps.pmap_activate(c0, pm)
    el0 = {}
    for name in ("text", "rodata", "data", "heap"):
        r = c0.lookup(prog.layout[name].start, Access.READ, 0)
        assert isinstance(r, Translation), name
        el0[name] = r.perms >> 3 & 7
    assert el0 == {"text": 1 | 4, "rodata": 1, "data": 1 | 2, "heap": 1 | 2}   # r-x, r--, rw-, rw-
    assert m.mem.read64(_pa(c0, prog.symbols["ro"])) == 0x1234        # the segment's bytes
    assert isinstance(c0.lookup(0x30000000, Access.READ, 0), Fault)   # demand: not entered
    ps.pmap_userret(c0)
    stop = c0.run(100, pc=prog.entry)
    assert stop.kind is StopKind.FAULT and stop.fault.va == 0x30002000
    ps.pmap_kernel_entry(c0)
    pa = m.frames.alloc(FrameKind.USER, owner=pm)                     # uvm_fault -> pmap_enter
    ps.pmap_enter(c0, pm, 0x30002000, pa, R | W)
    ps.pmap_userret(c0)
    stop = c0.run(100, pc=stop.pc)
    assert stop.kind is StopKind.SVC and c0.reg(8) == 1 and c0.reg(0) == 0x1234
    assert m.mem.read64(pa) == 0x1234
    assert m.mem.read64(_pa(c0, prog.symbols["rw"], 1)) == 0x1234
    assert m.mem.read64(_pa(c0, 0x20001000, 1)) == 0x1234


def test_threads_c_runs_on_two_cpus_through_the_pmap():
    """guest/programs/threads_c.c on the emulated MMU: main on cpu0 calls __tfork, the
    child runs on cpu1 in the same pmap (registers copied, x0 = 0, sp = tf_stack, as the
    ABI in guest/syscalls.py says), both touch their pages; the child __threxit's, main
    waits for its DONE flag and exits 0. A small kernel loop stands in for the kernel."""
    from unicorn.arm64_const import UC_ARM64_REG_NZCV

    from emu.run.scenario import map_program, setregs
    from guest.programs import load
    from guest.syscalls import Sys
    prog = load("threads_c", {"NTHREADS": 2, "NPAGES": 6, "THREAD_EXIT": 1})
    m, ps = make()
    c0, c1 = m.cpus
    pm = ps.pmap_create(c0)
    map_program(m, ps, c0, pm, prog)
    ps.pmap_activate(c0, pm)
    ps.pmap_userret(c0)
    setregs(c0, prog)
    calls, status = [], []

    def ret(cpu, value):
        ps.pmap_userret(cpu)
        cpu.set_reg(0, value)
        cpu.uc.reg_write(UC_ARM64_REG_NZCV, cpu.uc.reg_read(UC_ARM64_REG_NZCV) & ~(1 << 29))   # C clear: success

    def on_stop(cpu, stop):
        assert stop.kind is StopKind.SVC, stop
        ps.pmap_kernel_entry(cpu)
        num = cpu.reg(8)
        calls.append((cpu.index, num))
        cpu.pc = prog.syscall_return(stop.pc - 4)
        if num == Sys.TFORK:
            param = cpu.reg(0)
            tidp, stack = (m.mem.read64(_pa(cpu, param + off)) for off in (8, 16))
            m.mem.write(_pa(cpu, tidp), (100).to_bytes(4, "little"))
            ps.pmap_activate(c1, pm)
            for n in range(31):
                c1.set_reg(n, cpu.reg(n))
            ret(c1, 0)
            c1.sp_el0 = stack
            c1.pc = cpu.pc
            ret(cpu, 100)
            return False                       # start the second phase with both CPUs
        if num == Sys.SCHED_YIELD:
            ret(cpu, 0)
            return True
        if num == Sys.EXIT:
            status.append(cpu.reg(0))
        return False                           # exit, __threxit: the thread is gone

    m.run(quantum=50, budget=200_000, on_stop=on_stop, active=[c0])
    assert calls == [(0, Sys.TFORK)]
    m.run(quantum=50, budget=200_000, on_stop=on_stop, active=[c0, c1])
    assert status == [0] and (1, Sys.THREXIT) in calls and calls[-1] == (0, Sys.EXIT)
    heap = 0x20000000
    for i in range(6):                         # PER = 3: the child took pages 3..5
        va = heap + 4096 * (i + 1)
        assert m.mem.read64(_pa(c0, va)) == va
    assert m.mem.read64(_pa(c0, heap + 8)) == 1                           # DONE[1]
    assert m.mem.read64(_pa(c0, heap + 0x808)) & 0xFFFFFFFF == 100        # TID[1]
    assert c1.walks > 0 and c1.tlb.probe(heap + 4096 * 4, pm.asid | 1) is not None
