"""Every file, module, public name and test that README.md and docs/ name in code exists."""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs.markdown import ROOT, code_spans, docs

PACKAGES = sorted(p.name for p in (ROOT / "batchgen").iterdir() if (p / "__init__.py").is_file())
# `tests/e2e/test_chaos.py`, `bench/shards.py`, `docs/deploy/crontab`, `.ci/run`
_REPO_PATH = re.compile(r"^(?:batchgen|tests|bench|docs|manifests|\.ci)/[\w./-]*$")
# `engine/steps.py`, `engine/`: a module or package of batchgen (not `output/demo/`, a run's folder)
_PACKAGE_PATH = re.compile(rf"^(?:{'|'.join(PACKAGES)})/(?:[\w/]*\.py)?$")
# `tests/output/test_ledger.py::test_...`
_TEST = re.compile(r"^([\w./-]+\.py)::(\w+)$")
# `batchgen.output.resume.decide`, `batchgen.run`
_DOTTED = re.compile(r"^batchgen(?:\.\w+)+$")
# `steps.py` alone, in a paragraph about its package
_MODULE = re.compile(r"^\w+\.py$")
_SOURCES = ("batchgen", "tests", "bench", "docs")


def _shown(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name


def _defines(module: Path, name: str) -> bool:
    """``module`` defines or imports ``name`` at its top level, or exports it in ``__all__``
    (a name a package imports on first use, PEP 562)."""
    text = module.read_text(encoding="utf-8")
    exported = re.search(r"^__all__ = \[([^\]]*)\]", text, re.M | re.S)
    return bool(
        re.search(rf"^(?:async def|def|class) {name}\b|^{name}\s*[:=]", text, re.M)
        or re.search(rf"^from \S+ import (?:\(\s*)?(?:[\w ,\n]*\b)?{name}\b", text, re.M)
        or (exported and re.search(rf"[\"']{name}[\"']", exported.group(1)))
    )


def _module_of(dotted: str) -> tuple[Path, list[str]] | None:
    """The longest prefix of ``dotted`` that is a module file, and the names after it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate, parts[cut:]
    return None


def missing_names(pages: list[Path]) -> list[str]:
    """``FILE:LINE: name: why`` for every repository path, package module, module name,
    test or ``batchgen.`` name in a code span of ``pages`` that does not exist."""
    problems = []
    for page in pages:
        for line, span in code_spans(page.read_text(encoding="utf-8")):
            for token in span.split():
                token = token.strip("'\"(),;")
                where = f"{_shown(page)}:{line}: {token}"
                test = _TEST.match(token)
                if test:
                    path, name = test.groups()
                    file = ROOT / path
                    if not file.is_file():
                        problems.append(f"{where}: no such file")
                    elif not re.search(rf"^(?:async )?def {name}\(", file.read_text(encoding="utf-8"), re.M):
                        problems.append(f"{where}: no test {name} in {path}")
                elif _REPO_PATH.match(token):
                    if not (ROOT / token).exists():
                        problems.append(f"{where}: no such file or folder")
                elif _PACKAGE_PATH.match(token):
                    if not (ROOT / "batchgen" / token).exists():
                        problems.append(f"{where}: no such module or folder in batchgen/")
                elif _MODULE.match(token):
                    if not any(any((ROOT / top).rglob(token)) for top in _SOURCES):
                        problems.append(f"{where}: no module of that name")
                elif _DOTTED.match(token):
                    found = _module_of(token)
                    if found is None:
                        problems.append(f"{where}: no such module")
                    elif found[1] and not _defines(found[0], found[1][0]):
                        problems.append(f"{where}: {found[0].relative_to(ROOT)} has no {found[1][0]}")
    return problems


def test_every_file_module_and_test_the_docs_name_exists() -> None:
    """Paths, modules (`engine/steps.py`), `batchgen.` names and `tests/...py::test_x` in the
    docs' code spans all exist, so a rename or a split that leaves the docs behind fails here."""
    assert missing_names(docs()) == []


def test_a_name_that_is_gone_is_found(tmp_path: Path) -> None:
    """The check fails on a missing module, file, test and attribute, and passes real ones."""
    page = tmp_path / "page.md"
    page.write_text(
        "`engine/runner.py` `engine/gone.py` `bench/nothing.py` `batchgen.output.resume.decide`\n"
        "`batchgen.output.resume.vanished` `tests/docs/test_names.py::test_a_name_that_is_gone_is_found`\n"
        "`tests/docs/test_names.py::test_nobody_wrote` `output/demo/images` `OUT/images` `wire.py`\n"
        "`python bench/shards.py` `gone.py`\n\n```\n`bench/in_a_block.py`\n```\n",
        encoding="utf-8",
    )
    assert missing_names([page]) == [
        "page.md:1: engine/gone.py: no such module or folder in batchgen/",
        "page.md:1: bench/nothing.py: no such file or folder",
        "page.md:2: batchgen.output.resume.vanished: batchgen/output/resume.py has no vanished",
        "page.md:3: tests/docs/test_names.py::test_nobody_wrote: no test test_nobody_wrote "
        "in tests/docs/test_names.py",
        "page.md:4: gone.py: no module of that name",
    ]
