"""The README and docs/: every relative link reaches a file, and the README stays short.

Links carry no `#anchor`: a heading renamed or moved to another file breaks an anchor
silently, while a file that moves breaks this test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README_MAX_LINES = 320
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
        REPO / "bench" / "README.md", REPO / "bench" / "results" / "history.md"]

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`[^`]*`")
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image outside code blocks and code spans."""
    links = []
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        prose = _INLINE_CODE.sub("", line)
        links += [(number, m.group(1)) for m in _INLINE_LINK.finditer(prose)]
        links += [(number, m.group(1)) for m in _REFERENCE.finditer(prose)]
    return links


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    """Each relative link of `path` that has an anchor or names no existing file."""
    problems = []
    for number, target in markdown_links(path.read_text(encoding="utf-8")):
        if _SCHEME.match(target):
            continue
        where = f"{path.relative_to(root)}:{number}: {target!r}"
        if "#" in target:
            problems.append(f"{where} has an anchor")
        elif not target or not (path.parent / target).exists():
            problems.append(f"{where} names no file")
    return problems


def test_the_link_finder_sees_links_and_images_but_not_code():
    text = ("[a](docs/a.md) ![b](docs/b.png) [c](https://x.org/#y) `[d](no.md)`\n"
            "```\n[e](no.md)\n```\n[f]: docs/f.md\n[g](#anchor)\n")
    assert markdown_links(text) == [(1, "docs/a.md"), (1, "docs/b.png"),
                                    (1, "https://x.org/#y"), (5, "docs/f.md"), (6, "#anchor")]


def test_a_missing_file_and_an_anchor_are_both_reported(tmp_path: Path):
    (tmp_path / "there.md").write_text("x")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [gone](gone.md) [anchored](there.md#part) [top](#top)\n")
    assert broken_links(page, tmp_path) == ["page.md:1: 'gone.md' names no file",
                                  "page.md:1: 'there.md#part' has an anchor",
                                  "page.md:1: '#top' has an anchor"]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_names_an_existing_file_without_an_anchor(path: Path):
    assert path.exists()
    assert broken_links(path) == []


def test_the_readme_is_a_front_door_of_at_most_320_lines():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES
    assert "make test" in (REPO / "README.md").read_text(encoding="utf-8")
