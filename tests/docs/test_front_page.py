"""The README stays a front page, its first manifest is the demo's, and docs/index.md links every page."""

from __future__ import annotations

import re

from tests.docs.markdown import ROOT, links

README_MAX_LINES = 260


def test_the_readme_stays_a_front_page() -> None:
    """README.md is at most 260 lines: details belong in docs/."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move details to a page in docs/"


def test_the_readmes_first_manifest_is_the_demo_manifest() -> None:
    """The manifest the README shows is manifests/demo.yaml as it is (without its comment header)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A first manifest", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    demo = (ROOT / "manifests" / "demo.yaml").read_text(encoding="utf-8")
    assert block.group(1) == re.sub(r"\A(?:#.*\n)+", "", demo)


def test_the_docs_index_links_every_page() -> None:
    """docs/index.md links every Markdown page under docs/ and the README."""
    index = ROOT / "docs" / "index.md"
    linked = {
        (index.parent / link.target.partition("#")[0]).resolve()
        for link in links(index.read_text(encoding="utf-8"))
        if link.relative
    }
    pages = {page.resolve() for page in (ROOT / "docs").rglob("*.md")} - {index.resolve()}
    assert pages | {(ROOT / "README.md").resolve()} <= linked
