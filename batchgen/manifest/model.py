"""The manifest's data model: a validated :class:`Manifest` and the parts it is made of.

Everything here is a frozen value built by :func:`batchgen.manifest.load.load_manifest`
and read by :mod:`batchgen.manifest.expand`; every part keeps where it was written (the
file, the line, the path of keys), so a problem found later can still be located.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from batchgen.errors import Problem
from batchgen.manifest.template import Template

__all__ = ["Axis", "JobSpec", "Manifest", "Row", "RowSource", "Scalar", "Value"]

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Value:
    """One located value: a job field, a default, or a label."""

    value: Scalar
    where: str
    line: int | None


@dataclass(frozen=True, slots=True)
class Axis:
    """A list of values for one name (grid, zip, or a list-valued field); ``values`` may be a range."""

    name: str
    values: Sequence[Scalar]
    where: str
    line: int | None


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


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One entry of ``jobs`` with everything resolved except the expansion itself.

    ``fields`` merges ``defaults`` and the job's own scalar fields (job wins); ``axes``
    are the grid axes in written order, then list-valued fields; ``zip`` axes have equal
    lengths; rows (if any) override all of them cell by cell.
    """

    where: str
    line: int | None
    fields: Mapping[str, Value]
    labels: Mapping[str, Value]
    axes: tuple[Axis, ...]
    zip: tuple[Axis, ...]
    rows: RowSource | None
    seeds: int | None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest, ready for :func:`batchgen.manifest.expand.expand`."""

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

    @property
    def display(self) -> str:
        """The manifest's path as problems name it."""
        return str(self.path)
