"""The text trace: one event per line, hex addresses, the exact TLBI mnemonic."""
from emu.machine import Machine
from emu.sysregs import SysReg, make_ttbr
from emu.tlbi import TLBIOp, tlbi_operand
from emu.trace import Ev


def test_tlbi_sequence_reads_like_the_code():
    m = Machine(ncpus=2, mem_size=4 << 20, trace=True)
    c = m.cpus[1]
    c.msr(SysReg.TTBR1_EL1, make_ttbr(0, 0x2a))
    c.dsb("ishst")
    c.tlbi(TLBIOp.VAE1IS, tlbi_operand(va=0x7f_ffff_7000, asid=0x2a))
    c.dsb("ish")
    c.isb()
    lines = m.trace.format_text().splitlines()
    assert lines[0].split()[1:] == ["cpu1", "msr", "MSR", "TTBR1_EL1,", "0x2a000000000000"]
    assert lines[1].split()[1:] == ["cpu1", "dsb", "DSB", "ISHST"]
    assert lines[2].split()[1:] == ["cpu1", "tlbi", "TLBI", "VAE1IS", "va=0x7fffff7000", "asid=0x2a"]
    assert lines[3].split()[1:] == ["cpu1", "dsb", "DSB", "ISH", "completes=1"]
    assert lines[4].split()[1:] == ["cpu1", "tlbi-done", "ops=1"]
    assert lines[5].split()[1:] == ["cpu1", "isb", "ISB"]
    cycles = [int(l.split()[0]) for l in lines]
    assert cycles == sorted(cycles) and cycles[3] - cycles[2] >= m.core.cost.dsb_ish_base
    assert [r[2] for r in m.trace.records] == [Ev.MSR, Ev.DSB, Ev.TLBI, Ev.DSB, Ev.TLBI_DONE, Ev.ISB]
