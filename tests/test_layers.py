"""Layers (docs/architecture.md §Dependency direction): emu's hardware modules import nothing from pmap_py or guest;
only the outer layer (emu/run/, emu/cli/) composes the three."""
import ast
import subprocess
import sys
from pathlib import Path

EMU = Path(__file__).resolve().parent.parent / "emu"
OUTER = {"run", "cli"}


def hardware_modules():
    for path in sorted(EMU.glob("*.py")):
        if path.name not in OUTER:
            yield path


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level >= 2:
                out.add("<outside emu>")
            elif node.level == 1 and node.module and node.module.split(".")[0] in {"run", "cli"}:
                out.add("<outer layer>")
    return out


def test_there_are_hardware_modules():
    names = {p.name for p in hardware_modules()}
    assert {"cpu.py", "machine.py", "tlb.py", "walker.py", "trace.py"} <= names


def test_hardware_modules_import_no_os_or_guest_code():
    bad = {p.name: imported(p) & {"pmap_py", "guest", "<outside emu>", "<outer layer>"}
           for p in hardware_modules()}
    assert {k: v for k, v in bad.items() if v} == {}


def test_importing_the_hardware_loads_no_os_or_guest_module():
    mods = ", ".join(f"emu.{p.stem}" for p in hardware_modules() if p.stem != "__init__")
    code = (f"import sys, importlib\nfor m in '{mods}'.split(', '): importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pmap_py', 'guest')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=EMU.parent)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_the_import_scan_sees_a_forbidden_import(tmp_path):
    f = tmp_path / "mod.py"
    f.write_text("from pmap_py.pmap import Pmap\nfrom ..guest import x\nimport guest.asm\n")
    assert imported(f) >= {"pmap_py", "guest", "<outside emu>"}
