"""docs/design.md against the code that cites it.

Docstrings, comments and parameters cite design decisions as ``docs/design.md#<anchor>`` (or
``docs/design.md "Heading"``). These tests fail when a cited anchor or heading does not exist in
docs/design.md, and when anything still cites the developers' notes outside the repository
(``DESIGN.md``, ``DESIGN "..."``, ``../shared/DESIGN.md``, ``../shared/papers``), which users do not have.
``../shared/data`` is not a citation but where developers find the data archive, and stays allowed.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN_DOC = ROOT / "docs" / "design.md"

#: What cites docs/design.md: the package, the notebook sources, the pipeline files, the README and tools.
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt", ".cfg", ".mplstyle"}


def _cited_files() -> list[Path]:
    files = [p for p in (ROOT / "lib").rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES
             and ".egg-info" not in p.as_posix() and "__pycache__" not in p.parts]
    files += sorted((ROOT / "notebooks").glob("*.py"))
    files += [p for p in (ROOT / "tools").rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES]
    files += [ROOT / name for name in ("params.yaml", "dvc.yaml", "README.md", "Makefile") if (ROOT / name).is_file()]
    return sorted(set(files))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _headings() -> list[str]:
    text = DESIGN_DOC.read_text(encoding="utf-8")
    text = re.sub(r"(?ms)^```.*?^```", "", text)  # no headings inside code blocks
    return [m.group(1).strip() for m in re.finditer(r"(?m)^#{1,6}\s+(.+?)\s*#*\s*$", text)]


# docs/design.md#anchor  |  docs/design.md "Heading"  |  docs/design.md 'Heading'  |  docs/design.md (whole file)
CITATION = re.compile(r"docs/design\.md(?:#(?P<anchor>[\w-]+)|[ \t]*[\"'](?P<heading>[^\"'\n]+)[\"'])?")

#: Citations of the developers' notes outside the repository (the word DESIGN in capitals is how they were cited).
EXTERNAL = [
    (re.compile(r"\bDESIGN\b"), "cites the external DESIGN notes"),
    (re.compile(r"\.\./shared/(?!data\b)"), "points into ../shared (outside the repository)"),
    (re.compile(r"shared/(?:DESIGN|STYLE)\.md|shared/papers\b"), "points into ../shared (outside the repository)"),
]


def test_github_anchor():
    assert github_anchor("Models that every table shares") == "models-that-every-table-shares"
    assert github_anchor("Targets, seeds and placement") == "targets-seeds-and-placement"
    assert github_anchor("PTQ and `dynamic` quantization") == "ptq-and-dynamic-quantization"


def test_design_doc_exists_with_unique_headings():
    assert DESIGN_DOC.is_file(), "docs/design.md is missing"
    anchors = [github_anchor(h) for h in _headings()]
    assert anchors, "docs/design.md has no headings"
    duplicates = sorted({a for a in anchors if anchors.count(a) > 1})
    assert not duplicates, f"docs/design.md: headings with the same anchor (GitHub would number them): {duplicates}"


def test_design_doc_links_resolve():
    """The file's own links (its contents list, its cross-references) point at its headings."""
    anchors = {github_anchor(h) for h in _headings()}
    links = re.findall(r"\]\(#([\w-]+)\)", DESIGN_DOC.read_text(encoding="utf-8"))
    missing = sorted({a for a in links if a not in anchors})
    assert not missing, f"docs/design.md links to headings it does not have: {missing}"


def test_every_citation_names_an_existing_section():
    headings = _headings()
    anchors = {github_anchor(h) for h in headings}
    titles = {h.lower() for h in headings}
    bad, n = [], 0
    for path in _cited_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for m in CITATION.finditer(line):
                n += 1
                anchor, heading = m.group("anchor"), m.group("heading")
                if anchor is not None and anchor not in anchors:
                    bad.append(f"{path.relative_to(ROOT)}:{lineno}: docs/design.md#{anchor}")
                if heading is not None and heading.lower() not in titles and github_anchor(heading) not in anchors:
                    bad.append(f"{path.relative_to(ROOT)}:{lineno}: docs/design.md \"{heading}\"")
    assert n > 0, "nothing cites docs/design.md: is the scan looking at the right files?"
    assert not bad, ("citations of sections that docs/design.md does not have (headings: "
                     + ", ".join(sorted(anchors)) + "):\n" + "\n".join(bad))


@pytest.mark.parametrize("pattern,why", EXTERNAL, ids=["DESIGN", "../shared", "shared-notes"])
def test_nothing_cites_notes_outside_the_repository(pattern, why):
    bad = []
    for path in _cited_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if pattern.search(line):
                bad.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not bad, f"{why}; cite docs/design.md#<section> instead:\n" + "\n".join(bad)
