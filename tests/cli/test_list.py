"""armmu list: presets with the numbers of their TOML files, workloads with the options they
read, every strategy on one line."""
import re
import tomllib
from pathlib import Path

import emu


def test_list(armmu):
    rc, out, err = armmu("list")
    assert rc == 0 and err == ""
    presets = Path(emu.__file__).parent / "presets"
    for toml in sorted(presets.glob("*.toml")):
        core = tomllib.loads(toml.read_text())["core"]
        assert re.search(rf"^  {toml.stem} .*\n\s+{core['freq_ghz']} GHz, {core['asid_bits']}-bit ASIDs", out, re.M)
    section = out.split("exit strategies")[1].split("guest programs")[0]
    names = re.findall(r"^  (\S+)\s", section, re.M)
    assert len(names) == len(set(names)) == 10 and {"purge", "reaper", "linux", "freebsd"} <= set(names)
    assert re.search(r"^  storm .*\n\s+options: --procs P, --threads T", out, re.M)
