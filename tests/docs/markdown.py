"""Markdown read the way GitHub renders it, as far as the docs tests need: prose lines outside
code, links, code spans, headings and their anchors."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^ *(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); the text may hold one level of brackets.
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
_HTML_TARGET = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)
_HTML_ANCHOR = re.compile(r"""<[a-z]+\b[^>]*?\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.I)
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def docs() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def prose(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) for every line outside fenced code blocks."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        opened = _FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)
        elif fence is not None:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
        else:
            yield number, line


def code_spans(text: str) -> Iterator[tuple[int, str]]:
    """(line number, content) of every inline code span outside fenced code blocks."""
    for number, line in prose(text):
        for match in _CODE_SPAN.finditer(line):
            yield number, match.group(2).strip()


@dataclass(frozen=True)
class Link:
    """A link target as written, and where."""

    line: int
    target: str

    @property
    def relative(self) -> bool:
        """A link into this repository (not a URL, not mailto:)."""
        return not _SCHEME.match(self.target) and not self.target.startswith("//")


def links(text: str) -> Iterator[Link]:
    """Every link target in Markdown and HTML, outside code."""
    for number, line in prose(text):
        line = _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        for pattern in (_INLINE_LINK, _REFERENCE, _HTML_TARGET):
            for match in pattern.finditer(line):
                yield Link(number, match.group(1))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lower-cased, punctuation dropped, each
    space a ``-`` (github-slugger)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def mkdocs_slug(heading: str) -> str:
    """The anchor the docs site gives a heading (Python-Markdown's ``toc`` slugify): as
    GitHub's, but a run of spaces and hyphens becomes one ``-``."""
    text = unicodedata.normalize("NFKD", github_slug(heading).replace("-", " "))
    return re.sub(r"[\s-]+", "-", text.encode("ascii", "ignore").decode().strip())


def anchors(text: str, slug_of: Callable[[str], str] = github_slug) -> set[str]:
    """Every anchor a page has: its headings' slugs (repeats get -1, -2, ...) and HTML ids."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose(text):
        found.update(_HTML_ANCHOR.findall(line))
        heading = _HEADING.match(line)
        if heading is None:
            continue
        slug = slug_of(heading.group(2))
        if slug in seen:
            seen[slug] += 1
            slug = f"{slug}-{seen[slug]}"
        else:
            seen[slug] = 0
        found.add(slug)
    return found
