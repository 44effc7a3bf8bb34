"""The repository stands alone: no tracked file points outside it, and every link and
section reference in README.md and docs/ resolves to something in the repository.

A clone has no sibling notes directory next to it, so a comment that cites one sends the reader nowhere.
Citations go to docs/ (with a section: ``docs/hardware.md §Walker``) or to a primary
source (an OpenBSD file and revision, an Arm ARM section)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Spelled so that this file does not match its own patterns.
OUTSIDE = re.compile(r"\.\./shared|/work/share[d]|\bshared/(?:referenc[e]|docs)/")
# A path through a directory called "reference": there is none in this repository.
REFERENCE_PATH = re.compile(r"\S*\breferenc[e]/\S*")
# The names of the notes that lived outside the repository; fine only as a path that exists
# here (docs/openbsd-exit-path.md is ours).
NOTE_NAME = re.compile(r"[\w./-]*(?:DESIGN\.md|unicorn-note[s](?:\.md)?|armv8-mmu\.md|"
                       r"openbsd-exit-path\.md|uvm_purge-thread\.txt)")
DOC_REF = re.compile(r"docs/([\w-]+\.md)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def tracked_files() -> list[Path]:
    """Files git tracks (what a clone gets), or every file outside build dirs without git."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True,
                             timeout=30).stdout.decode()
        paths = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.SubprocessError):
        skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis"}
        paths = [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)
                 and not any(part.endswith(".egg-info") for part in p.parts)]
    this = Path(__file__).resolve()               # holds the bad examples below on purpose
    return [p for p in paths if p.is_file() and p.resolve() != this]


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None                                     # binary (plots, screenshots)


def exists_from(token: str, where: Path) -> bool:
    """Does `token` name an existing path, relative to the repository or to the file's dir?"""
    token = token.split("#", 1)[0]
    return bool(token) and any((base / token).exists() for base in (ROOT, where.parent))


def clean_token(token: str) -> str:
    return token.strip("`'\"()[]<>*,;:.")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(md: Path) -> list[str]:
    out, fenced = [], False
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := HEADING.match(line)):
            out.append(re.sub(r"`", "", m.group(2)))
    return out


def anchors(md: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for h in headings(md):
        s = slug(h)
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def section_resolves(rest: str, md: Path) -> bool:
    """A '§Name' reference resolves if its first k words (k >= 1) are a heading of md."""
    names = {re.sub(r"\s+", " ", h).strip().lower() for h in headings(md)}
    words = rest.split()
    for k in range(min(len(words), 10), 0, -1):
        cand = " ".join(words[:k]).strip("`'\"()[],;:.").lower()
        if cand in names:
            return True
    return False


# ---------------------------------------------------------------- the finders (one per rule)
def outside_pointers(text: str, where: Path) -> list[str]:
    bad = []
    for n, line in enumerate(text.splitlines(), 1):
        for m in OUTSIDE.finditer(line):
            bad.append(f"{n}: points outside the repository: {m.group(0)!r}")
        for m in REFERENCE_PATH.finditer(line):
            tok = clean_token(m.group(0))
            if "://" not in tok and not exists_from(tok, where):
                bad.append(f"{n}: no such path in the repository: {tok!r}")
        for m in NOTE_NAME.finditer(line):
            tok = clean_token(m.group(0))
            if "://" not in tok and not exists_from(tok, where):
                bad.append(f"{n}: {tok!r} is not a file of this repository (cite docs/...)")
    return bad


def bad_section_refs(text: str) -> list[str]:
    """Every '§Name' after 'docs/X.md' on a line must be a heading of docs/X.md."""
    bad = []
    for n, line in enumerate(text.splitlines(), 1):
        refs = list(DOC_REF.finditer(line))
        for i, m in enumerate(refs):
            md = DOCS / m.group(1)
            end = refs[i + 1].start() if i + 1 < len(refs) else len(line)
            segment = line[m.end():end]
            if not md.exists():
                bad.append(f"{n}: docs/{m.group(1)} does not exist")
                continue
            for part in segment.split("§")[1:]:
                if not section_resolves(part, md):
                    bad.append(f"{n}: docs/{m.group(1)} has no section §{part.strip()[:40]!r}")
    return bad


def bad_links(md: Path) -> list[str]:
    bad, fenced = [], False
    for n, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        for m in LINK.finditer(re.sub(r"`[^`]*`", "", line)):
            target = m.group(1)
            if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target):   # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            dest = (md.parent / path_part).resolve() if path_part else md
            if ROOT not in dest.parents and dest != ROOT:
                bad.append(f"{n}: {target!r} leaves the repository")
            elif not dest.exists():
                bad.append(f"{n}: {target!r} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{n}: {target!r}: no heading with anchor #{anchor} in {dest.name}")
    return bad


# ---------------------------------------------------------------- the rules, on the repository
def test_no_tracked_file_points_outside_the_repository():
    problems = []
    for path in tracked_files():
        text = text_of(path)
        if text is not None:
            problems += [f"{path.relative_to(ROOT)}:{p}" for p in outside_pointers(text, path)]
    assert not problems, "\n".join(problems)


def test_section_references_name_real_headings():
    problems = []
    for path in tracked_files() + sorted(DOCS.glob("*.md")):
        text = text_of(path)
        if text is not None:
            problems += [f"{path.relative_to(ROOT)}:{p}" for p in bad_section_refs(text)]
    assert not problems, "\n".join(sorted(set(problems)))


@pytest.mark.parametrize("md", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(md):
    assert not bad_links(md), "\n".join(bad_links(md))


def test_docs_index_lists_every_page_and_readme_links_the_docs():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    linked = {m.group(1).partition("#")[0] for m in LINK.finditer(index)}
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and p.name not in linked]
    assert not missing, f"docs/README.md does not link {missing}"
    readme_links = {m.group(1) for m in LINK.finditer((ROOT / "README.md").read_text(encoding="utf-8"))}
    assert "docs/README.md" in readme_links


# ---------------------------------------------------------------- the finders can fail
UP = ".."                                  # assembled at run time, not matched in this file
BAD_LINES = [
    f"# see {UP}/shared/docs/DESIGN" + ".md",
    "# ref = /work/" + "shared/reference/x",
    "Counts follow " + "reference/openbsd-exit-path.md",
    "(unicorn-" + "notes §4)",
    "per armv8-" + "mmu.md §1.3",
    "against openbsd-exit-path" + ".md §7",
]


@pytest.mark.parametrize("line", BAD_LINES)
def test_outside_pointer_finder_catches(line):
    assert outside_pointers(line, ROOT / "emu" / "cpu.py")


@pytest.mark.parametrize("line", [
    "walker API of docs/hardware.md §Walker",
    "see docs/openbsd-exit-path.md §Counts with N = mapped pages",
    "OpenBSD pmap.c 1.113 (sys/arch/arm64/arm64/pmap.c), Arm ARM D5.4",
    "a shared memory, every CPU shared by the walker",
])
def test_good_citations_pass(line):
    assert not outside_pointers(line, ROOT / "emu" / "cpu.py")
    assert not bad_section_refs(line)


def test_section_finder_catches_a_missing_heading_and_a_missing_page():
    assert bad_section_refs("(docs/hardware.md §No such section)")
    assert bad_section_refs("(docs/no-such-page" + ".md)")
    assert bad_section_refs("docs/openbsd-exit-path.md §Counts and §Nothing like this")


def test_link_finder_catches_broken_targets(tmp_path, monkeypatch):
    fake = tmp_path / "x.md"
    fake.write_text("# Title\n[a](missing.md) [b](README.md#no-anchor) [c](../../../etc/passwd)\n"
                    "[d](https://example.org/x) [e](#title)\n", encoding="utf-8")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = bad_links(fake)
    assert len(found) == 3, found
