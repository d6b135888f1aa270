"""The manifest's data model: a validated :class:`Manifest` and the parts it is made of.

Everything here is a frozen value built by :func:`batchgen.manifest.load.load_manifest`
and read by :mod:`batchgen.manifest.expand`; every part keeps where it was written (the
file, the line, the path of keys), so a problem found later can still be located.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from batchgen.errors import Problem
from batchgen.manifest.template import Template

if TYPE_CHECKING:
    from batchgen.manifest.jsonl import JobLine
    from batchgen.manifest.prompts import Prompts

__all__ = ["Axis", "JobSpec", "Manifest", "Origin", "Row", "RowSource", "Sample", "Scalar", "Source", "Value"]

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a text value starts in its file, so that a character inside it can be located.

    ``column`` (1-based) is known for a value written on one line as it reads (a plain
    YAML scalar, a quoted one without escapes, a line of a wildcard file); a literal block
    (``|``) maps its lines one to one, each indented by ``block_indent``. ``file`` None is
    the manifest itself.
    """

    file: str | None
    line: int | None
    column: int | None = None
    block_indent: int | None = None

    def locate(self, text: str, offset: int) -> tuple[int | None, int | None]:
        """The line and column (None if not known) of character ``offset`` of ``text``."""
        if self.line is None:
            return None, None
        if self.block_indent is not None:
            start = text.rfind("\n", 0, offset) + 1
            return self.line + text.count("\n", 0, offset), self.block_indent + offset - start + 1
        if self.column is not None and "\n" not in text[:offset]:
            return self.line, self.column + offset
        return self.line, None


@dataclass(frozen=True, slots=True)
class Value:
    """One located value: a job field, a default, or a label (``origin``: where a text starts)."""

    value: Scalar
    where: str
    line: int | None
    origin: Origin | None = None


@dataclass(frozen=True, slots=True)
class Axis:
    """A list of values for one name (grid, zip, or a list-valued field); ``values`` may be a range."""

    name: str
    values: Sequence[Scalar]
    where: str
    line: int | None
    origins: Sequence[Origin | None] = ()  # of each text value, when known


@dataclass(frozen=True, slots=True)
class Row:
    """One CSV row: its line and its non-empty cells (an empty cell is "not set")."""

    line: int
    cells: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RowSource:
    """The rows of a CSV file, read once at load."""

    path: Path
    display: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    sha256: str = ""  # of the file's bytes: the manifest's sha256 covers it


@dataclass(frozen=True, slots=True)
class Sample:
    """``sample:``: ``count`` random prompts per job instead of every combination, drawn with ``seed``."""

    count: int
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Source:
    """A file the jobs come from (the manifest, a ``rows:`` CSV, a wildcard file) and its sha256.

    ``path`` is where it was read (None for standard input); the manifest's sha256 names
    each file by it, relative to the manifest's folder, never by ``display``, which
    depends on how the manifest was named on the command line.
    """

    display: str
    sha256: str
    path: Path | None = None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One entry of ``jobs`` with everything resolved except the expansion itself.

    ``fields`` merges ``defaults`` and the job's own scalar fields (job wins); ``axes``
    are the grid axes in written order, then list-valued fields; ``zip`` axes have equal
    lengths; rows (if any) override all of them cell by cell. ``sample`` draws random
    prompts instead of listing every combination of a dynamic prompt.
    """

    where: str
    line: int | None
    fields: Mapping[str, Value]
    labels: Mapping[str, Value]
    axes: tuple[Axis, ...]
    zip: tuple[Axis, ...]
    rows: RowSource | None
    seeds: int | None
    sample: Sample | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest, ready for :func:`batchgen.manifest.expand.expand`.

    ``sha256`` is the manifest file's own when the jobs come from it alone, else that of
    the listing of every file they come from (``sources``: the manifest, its CSV files,
    the wildcard files its prompts use), so that a change to any of them shows.
    ``prompts`` chooses the prompts of dynamic templates; ``lines`` holds the jobs of a
    JSON Lines manifest, already resolved (such a manifest has no ``jobs`` entries).
    """

    path: Path
    name: str
    model: str
    sha256: str
    jobs: tuple[JobSpec, ...]
    filename: Template
    filename_line: int | None
    warnings: list[Problem] = field(default_factory=list)
    report: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # rows, columns: names
    date: str = ""  # the run's date (UTC, YYYY-MM-DD): fills {date} in the name and filenames
    prompts: Prompts | None = None
    sources: tuple[Source, ...] = ()
    lines: tuple[JobLine, ...] | None = None
    stdin: bool = False  # read from standard input (``-``)

    @property
    def display(self) -> str:
        """The manifest's path as problems name it (``<stdin>`` for standard input)."""
        return "<stdin>" if self.stdin else str(self.path)

    @property
    def recorded_path(self) -> str | None:
        """The path a run records, absolute so that ``batchgen status`` finds it from anywhere;
        None for a manifest read from standard input (there is no file to read again)."""
        return None if self.stdin else str(self.path.resolve())
