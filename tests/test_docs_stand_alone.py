"""The repository's text stands alone: no file cites a document or section a reader cannot open.

Sources outside the repository are cited by their public name (DECTRIS SIMPLON and stream documentation, NeXus
NXmx, EuXFEL data format documentation, …), never as a section number or a reference file that is not here; a
Markdown document's relative links point at files that exist.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml"}
SECTION_SIGN = "\u00a7"
# Reference documents that were never part of the repository. A name among them that docs/ holds (docs/agipd.md,
# docs/triage.md) is fine as docs/<name>, or by its bare name inside docs/.
REFERENCE_NAMES = ("eiger", "agipd", "nexus", "triage", "tango", "style")
_REFERENCE = re.compile(r"(?<![\w-])(" + "|".join(REFERENCE_NAMES) + r")\.md\b")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_FENCED = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
_INLINE_CODE = re.compile(r"`[^`\n]*`")


def checked_files() -> list[Path]:
    """Tracked files and new ones not ignored (what the next commit may hold), outside the virtual environment."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    paths = {ROOT / name for name in listing if not name.startswith(".venv/")}
    return sorted(p for p in paths if p.is_file() and (p.suffix in CHECKED_SUFFIXES or p.name == "Makefile"))


def reference_problems(text: str, relative_path: str) -> list[str]:
    """``line: what`` for every section sign and every reference to a document that is not in docs/."""
    in_docs = relative_path.startswith("docs/")
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        if SECTION_SIGN in line:
            problems.append(f"{number}: section sign: {line.strip()}")
        for match in _REFERENCE.finditer(line):
            name = match.group(0)
            before = line[:match.start()]
            through_docs = before.endswith("docs/") or (in_docs and not before.endswith("/"))
            if not (through_docs and (ROOT / "docs" / name).is_file()):
                problems.append(f"{number}: {name} is not in the repository: {line.strip()}")
    return problems


def broken_links(text: str, document: Path) -> list[str]:
    """Relative Markdown link targets of ``document`` (code spans and blocks aside) that name no existing file."""
    prose = _INLINE_CODE.sub("", _FENCED.sub("", text))
    broken = []
    for target in _LINK.findall(prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same document
        path = target.split("#", 1)[0]
        if not (document.parent / path).exists():
            broken.append(target)
    return broken


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """Each rule rejects its example and lets the allowed forms through, so the repository-wide tests can fail."""
    spec = "eiger" + ".md"
    line = f"see {spec} {SECTION_SIGN}3"
    assert reference_problems(line, "pipeline/x.py") == [f"1: section sign: {line}",
                                                         f"1: {spec} is not in the repository: {line}"]
    assert reference_problems("written to " + "../shared/specs/agipd" + ".md", "README.md")
    assert reference_problems("style" + ".md says so", "docs/architecture.md")
    assert not reference_problems("see docs/agipd" + ".md and docs/triage_output.md", "pipeline/x.py")
    assert not reference_problems("see [the triage](triage" + ".md)", "docs/architecture.md")
    assert reference_problems("see triage" + ".md", "pipeline/x.py")
    (tmp_path / "there.md").write_text("")
    document = tmp_path / "doc.md"
    text = "[a](there.md) [b](there.md#part) [c](missing.md) [d](https://example.org) [e](#top) `[f](gone.md)`"
    assert broken_links(text, document) == ["missing.md"]


def test_no_file_cites_a_section_number_or_a_document_outside_the_repository() -> None:
    problems = []
    for path in checked_files():
        relative = path.relative_to(ROOT).as_posix()
        text = path.read_text(errors="replace")
        problems += [f"{relative}:{problem}" for problem in reference_problems(text, relative)]
    assert not problems, "cite the public source by name instead:\n" + "\n".join(problems)


DOCUMENTS = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_relative_markdown_links_point_at_existing_files(document: str) -> None:
    path = ROOT / document
    assert not broken_links(path.read_text(), path), f"{document} links to files that do not exist"
