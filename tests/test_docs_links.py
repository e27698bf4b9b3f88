"""Every relative link in README.md and docs/**/*.md points at a file or folder of the repository
(issue 32: the README's content moved into docs/ pages, which link each other and results/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
# [text](target) and ![alt](target); the target ends at whitespace or ")" (a title after a space is ignored)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def relative_links(text: str) -> list[str]:
    """The link targets of a Markdown text outside code blocks and inline code, without external
    URLs (a scheme, `//` or `mailto:`) and same-page anchors; a target's own anchor is dropped."""
    text = FENCE.sub("", text)
    text = re.sub(r"`[^`\n]*`", "", text)
    out = []
    for target in LINK.findall(text):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("//", "#")):
            continue
        out.append(target.split("#", 1)[0])
    return out


def test_relative_links_are_found_and_external_ones_skipped():
    text = ("[a](docs/x.md) ![b](fig.png) [c](https://example.org) [d](#anchor) [e](y.md#sec) "
            "`[f](not/a/link.md)`\n```\n[g](in/code.md)\n```\n[h](z.md \"title\")")
    assert relative_links(text) == ["docs/x.md", "fig.png", "y.md", "z.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page: Path):
    missing = [t for t in relative_links(page.read_text(encoding="utf-8"))
               if not (page.parent / t).resolve().exists()]
    assert not missing, f"{page.relative_to(REPO)}: links to missing files: {missing}"


def test_the_pages_are_found():
    names = {p.relative_to(REPO).as_posix() for p in PAGES}
    assert {"README.md", "docs/method.md", "docs/experiments/README.md"} <= names
