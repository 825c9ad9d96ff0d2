"""The user documentation (README.md, docs/*.md): every relative link and every `#anchor` resolves.

Anchors are GitHub's: a heading's text in lowercase, punctuation dropped (letters, digits, spaces,
hyphens and underscores kept), spaces turned into '-'; a repeated heading gets '-1', '-2', ... Links
inside code (fenced blocks and `inline code`) are not links; http(s) and mailto links are not checked
(no network in the tests).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _prose(markdown: str) -> str:
    """The text outside fenced code blocks and inline code."""
    markdown = re.sub(r"(?ms)^(```|~~~).*?^\1[ \t]*$", "", markdown)
    return re.sub(r"`[^`\n]*`", "", markdown)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text."""
    text = re.sub(r"`|\*\*|__|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a markdown file's headings (outside code blocks), duplicates numbered."""
    text = re.sub(r"(?ms)^(```|~~~).*?^\1[ \t]*$", "", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"(?m)^#{1,6}[ \t]+(.+?)[ \t#]*$", text):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    return LINK.findall(_prose(path.read_text(encoding="utf-8")))


def test_slug_is_githubs():
    assert slug("Data fingerprints and `--allow-data-change`") == "data-fingerprints-and---allow-data-change"
    assert slug("getdata.sh") == "getdatash"
    assert slug("What the memory keeps: the probe") == "what-the-memory-keeps-the-probe"
    assert slug("Your own text, byte level") == "your-own-text-byte-level"
    assert links(Path(__file__)) == []  # this file is no markdown: nothing found is fine
    page = REPO / "README.md"
    assert "docs/data.md" in links(page) and all(not x.startswith("`") for x in links(page))


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest} "
                          "does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading of {dest.name} has the anchor #{anchor}")
    assert not broken, f"{page.name}: " + "; ".join(broken)
