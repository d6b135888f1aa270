"""Every relative link and #anchor in README.md and docs/**/*.md resolves, as GitHub renders it
and as the docs site (mkdocs) does."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from tests.docs.markdown import ROOT, anchors, docs, github_slug, links, mkdocs_slug


def broken_links(pages: list[Path], root: Path) -> list[str]:
    """``FILE:LINE: target: why`` for every relative link in ``pages`` that does not resolve
    to a file or folder under ``root``, or to a heading of the Markdown file it names."""
    problems = []
    # An anchor must work on GitHub and on the site: the two slug a heading differently.
    headings: dict[Path, set[str]] = {}
    for page in pages:
        for link in links(page.read_text(encoding="utf-8")):
            if not link.relative:
                continue
            path, _, anchor = link.target.partition("#")
            target = (page.parent / unquote(path)).resolve() if path else page.resolve()
            where = f"{page.relative_to(root)}:{link.line}: {link.target}"
            if not target.is_relative_to(root.resolve()):
                problems.append(f"{where}: leads outside the repository")
            elif not target.exists():
                problems.append(f"{where}: no such file")
            elif anchor:
                if target.suffix != ".md":
                    problems.append(f"{where}: an anchor into a file that is not Markdown")
                    continue
                if target not in headings:
                    text = target.read_text(encoding="utf-8")
                    headings[target] = anchors(text) & anchors(text, mkdocs_slug)
                if unquote(anchor) not in headings[target]:
                    problems.append(f"{where}: no heading #{anchor} in {target.relative_to(root.resolve())}")
    return problems


def test_every_relative_link_and_anchor_in_the_docs_resolves() -> None:
    """README.md and every docs page link only to files that exist and headings they have."""
    assert broken_links(docs(), ROOT) == []


def test_a_broken_file_or_anchor_is_found_and_code_is_not_read(tmp_path: Path) -> None:
    """The check fails on a missing file, a missing heading and a path out of the repository,
    and ignores link-like text in code spans and fenced blocks."""
    (tmp_path / "docs").mkdir()
    headings = "# A page\n\n## Exit codes\n\n## Exit codes\n\n## Ctrl-C / SIGTERM\n"
    (tmp_path / "docs" / "a.md").write_text(headings)
    page = tmp_path / "README.md"
    page.write_text(
        "# Front\n\n"
        "[site only](docs/a.md#ctrl-c-sigterm) [github only](docs/a.md#ctrl-c--sigterm)\n"
        "[ok](docs/a.md) [ok](docs/a.md#exit-codes) [repeat](docs/a.md#exit-codes-1) [self](#front)\n"
        "[web](https://example.com/x.md) ![image](docs/a.md)\n"
        "[gone](docs/b.md) [no heading](docs/a.md#exit-code) [out](../elsewhere.md)\n"
        "`[in code](nowhere.md)`\n\n"
        "```\n[in a block](nowhere.md)\n```\n"
    )
    assert broken_links([page], tmp_path) == [
        "README.md:3: docs/a.md#ctrl-c-sigterm: no heading #ctrl-c-sigterm in docs/a.md",
        "README.md:3: docs/a.md#ctrl-c--sigterm: no heading #ctrl-c--sigterm in docs/a.md",
        "README.md:6: docs/b.md: no such file",
        "README.md:6: docs/a.md#exit-code: no heading #exit-code in docs/a.md",
        "README.md:6: ../elsewhere.md: leads outside the repository",
    ]


def test_anchors_are_githubs_slugs() -> None:
    """Lower case, punctuation dropped, every space a hyphen: as GitHub links headings."""
    assert github_slug("Across machines: `--shard K/N`") == "across-machines---shard-kn"
    assert github_slug("`OUT/summary.json`: the contract with schedulers") == (
        "outsummaryjson-the-contract-with-schedulers"
    )
    assert github_slug("Ctrl-C / SIGTERM") == "ctrl-c--sigterm"
    assert github_slug("How a run is doing: `batchgen status`") == "how-a-run-is-doing-batchgen-status"
    assert github_slug("Nightly runs (cron, systemd, Kubernetes)") == "nightly-runs-cron-systemd-kubernetes"


def test_the_site_collapses_runs_of_hyphens() -> None:
    """Python-Markdown's slug: a run of spaces and hyphens is one hyphen, accents dropped."""
    assert mkdocs_slug("Shards: `--shard K/N`") == "shards-shard-kn"
    assert mkdocs_slug("Ctrl-C / SIGTERM") == "ctrl-c-sigterm"
    assert mkdocs_slug("Café menus") == "cafe-menus"
