"""The README's strategy file and guest run as written there (users copy them), and the
numbers the README quotes for them are what they print."""
import re
from pathlib import Path

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def block(lang: str, first_line: str) -> str:
    for code in re.findall(rf"```{lang}\n(.*?)```", README, re.S):
        if code.startswith(first_line):
            return code
    raise AssertionError(f"README has no {lang} block starting {first_line!r}")


def test_strategy_file_example(armmu, tmp_path):
    (tmp_path / "my_strategy.py").write_text(block("py", "# my_strategy.py"))
    rc, out, err = armmu("compare", "--strategy-file", "my_strategy.py", "--strategies", "purge,purge-locked",
                         "--workload", "storm", "--procs", "4", "--threads", "2", "--pages", "256")
    assert rc == 0, err
    lat = [int(x.replace(",", "")) for x in re.search(r"^exit latency\s+([\d,]+)\*?\s+([\d,]+)", out, re.M).groups()]
    quoted = [int(x.replace(",", "")) for x in re.search(r"exit latency ([\d,]+) -> ([\d,]+) cycles", README).groups()]
    # what the README says holds: the lock held across uvm_purge costs storm's exit latency
    # most of a factor 2 (the quoted figures are from one run; cost-model changes move them)
    assert lat[1] > 1.5 * lat[0] and quoted[1] > 1.5 * quoted[0]


def test_guest_example(armmu, tmp_path):
    (tmp_path / "mine.S").write_text(block("asm", "// mine.S"))
    rc, out, err = armmu("run", "--guest", "mine.S", "--strategy", "reaper", "--trace", "mine.txt")
    assert rc == 0, err
    assert "exit(0)" in out
    stores = [ln for ln in (tmp_path / "mine.txt").read_text().splitlines() if " fill va=0x2000" in ln]
    assert len(stores) == 16                        # one demand fill per heap page stored to
