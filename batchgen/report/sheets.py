"""Contact sheets: a run's jobs laid out the way a person looks at them.

A *sheet* is a pivot table of thumbnails: one row per *item*, one column per
combination of what else varies. What the shipped manifests get:

- a catalog (products from a CSV, 2 aspect ratios, 2 seeds each): a row per product,
  its other columns (name, category) beside it, a column per aspect ratio and seed;
- a seed sweep: a row per seed, a column per setting (guidance x steps);
- a manifest of unlike entries (``manifests/nightly.yaml``): a sheet per entry.

How the layout is chosen, for each *group* of jobs (the jobs that carry the same set of
labels: a manifest's entries, mostly), in order of their first job:

1. the names that vary in the group (parameters and labels); a prompt rendered from the
   others (a template of labels) is not one of them;
2. the rows: the name with the most values that something else *crosses* (occurs with
   most of its values: a product's aspect ratios) or *repeats under* (several values
   each: a product's derived seeds). The names it determines (a SKU's name and
   category) are its *companions*, shown in its row headers, not axes of their own;
3. the columns: the crossing names, as the levels of a pivot-table header, outermost
   first (labels in the order written, then parameters); a name that repeats under the
   rows (derived seeds, different for every product) becomes a last level of ordinals,
   ``seed #1``, ``seed #2``; a name the rows and columns determine is left to the cells;
4. more than :data:`MAX_AUTO_COLUMNS` columns: the innermost crossing names make one
   sheet per value instead (the Z of A1111's X/Y/Z plot).

A group where a single name varies (up to :data:`MAX_STRIP` values) is a one-row strip.
The manifest's ``report: {rows, columns}`` (a name, or a list of names each) overrides
the automatic choice in each group where those names vary: there, a name left out that
crosses them makes one sheet per value, one that repeats under them a level of
ordinals, and a column name the rows determine (a product's own aspect ratio) is left
out. A layout is kept only when at least three quarters of its cells hold a job (the manifest's choice
too: else the automatic one is tried), else the group gets no sheet (the gallery has
every image). Rows and columns keep the
order of the jobs (the order the manifest wrote them in).

Each sheet is also drawn as a labelled PNG (:func:`batchgen.report.grids.save_grid`) into ``OUT/grids/``, in
a font that has a glyph for every character it draws (:mod:`batchgen.report.glyphs`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchgen.manifest.template import render_value

__all__ = [
    "MAX_AUTO_COLUMNS",
    "MAX_COLUMNS",
    "MAX_ROWS",
    "MAX_STRIP",
    "ReportJob",
    "RowHeader",
    "Sheet",
    "column_spans",
    "contact_sheets",
]

MAX_ROWS = 60  # per sheet; beyond, the sheet says how many it leaves out
MAX_COLUMNS = 30
MAX_AUTO_COLUMNS = 12  # the automatic layout moves crossing names to sheets of their own beyond
MAX_STRIP = 12  # a single varying name: a one-row strip of at most this many images
MAX_SHEETS = 40
MIN_FILL = 0.75  # of a layout's cells that must hold a job
_CANDIDATES = 16  # names tried for the rows, most values first
_MISSING = "—"  # a label some jobs do not have (only across groups: a group's jobs all have it)
_ORDINAL = " #"  # a level of ordinals is named after the name that repeats: "seed #"
_NOTES = 2  # companions shown in a row header


@dataclass(slots=True, eq=False)
class ReportJob:
    """One job as the report shows it: identity, values, and what became of it.

    ``thumb`` is filled in once the thumbnails are made, in place: a report of 100,000
    jobs holds one record each, not a copy per step.
    """

    key: str
    index: int | None
    params: Mapping[str, Any]
    labels: Mapping[str, Any]
    state: str  # completed, failed, in flight, expired, not started
    file: str | None = None  # relative to OUT
    sha256: str | None = None
    thumb: str | None = None  # relative to OUT, when one could be made
    code: int | None = None
    error: str | None = None
    retryable: bool | None = None
    request_id: str | None = None
    inference_time: float | None = None

    def value(self, name: str) -> Any:
        """The job's value of a parameter or label (labels win, as in templates)."""
        if name in self.labels:
            return self.labels[name]
        return self.params.get(name, _MISSING)


@dataclass(frozen=True, slots=True)
class RowHeader:
    """A row's values as text, and its companions (``name=value``, the first few)."""

    text: str
    notes: tuple[str, ...] = ()


@dataclass(slots=True)
class Sheet:
    """One contact sheet: row headers, column header levels, the fixed values, jobs by cell.

    ``columns`` names the header's levels, outermost first (``"seed #"`` for ordinals);
    ``column_headers[c]`` has one text per level. A one-row strip has ``rows == ()``.
    """

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    fixed: tuple[tuple[str, Any], ...]
    row_headers: list[RowHeader]
    column_headers: list[tuple[str, ...]]
    cells: dict[tuple[int, int], ReportJob] = field(default_factory=dict)
    hidden_rows: int = 0  # beyond MAX_ROWS
    hidden_columns: int = 0  # beyond MAX_COLUMNS

    @property
    def title(self) -> str:
        """``sku x aspect_ratio · seed #``, ``seed x text_guidance_scale, steps_num=30``."""
        columns = " · ".join(self.columns)
        axes = f"{' · '.join(self.rows)} x {columns}" if self.rows else columns
        fixed = ", ".join(f"{name}={render_value(value)}" for name, value in self.fixed)
        return axes + (f", {fixed}" if fixed else "")

    @property
    def slug(self) -> str:
        """A file name for the sheet's PNG."""
        parts = [*self.rows, *self.columns, *(f"{n}-{render_value(v)}" for n, v in self.fixed)]
        return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))[:120].strip("_") or "sheet"


# --- choosing the layout ---------------------------------------------------------------


class _Group:
    """A group's jobs (in index order) with each varying name's values rendered once."""

    def __init__(self, jobs: Sequence[ReportJob]) -> None:
        self.jobs = sorted(jobs, key=lambda j: j.index if j.index is not None else 0)
        names: dict[str, None] = {}
        for job in self.jobs:
            names.update(dict.fromkeys(job.labels))
        for job in self.jobs:
            names.update(dict.fromkeys(n for n in job.params if n not in names))
        self.text: dict[str, list[str]] = {}
        self.constant: dict[str, Any] = {}
        for name in names:
            column = [render_value(job.value(name)) for job in self.jobs]
            if len(set(column)) > 1:
                self.text[name] = column
            else:
                self.constant[name] = self.jobs[0].value(name)
        # Labels first (as written), then parameters (the table's order).
        self.varying = list(self.text)

    def distinct(self, names: Sequence[str]) -> int:
        """How many distinct value combinations ``names`` take."""
        return len(set(self.keys(names)))

    def keys(self, names: Sequence[str]) -> list[tuple[str, ...]]:
        """Each job's values of ``names``, as text."""
        columns = [self.text[n] for n in names]
        return [tuple(c[i] for c in columns) for i in range(len(self.jobs))]

    def determined(self, name: str, by: Sequence[str]) -> bool:
        """Whether ``name``'s value is a function of the values of ``by``."""
        seen: dict[tuple[str, ...], str] = {}
        return all(seen.setdefault(k, v) == v for k, v in zip(self.keys(by), self.text[name], strict=True))

    def crosses(self, name: str, rows: Sequence[str]) -> bool:
        """Whether ``name``'s values occur with most row values (a product's aspect ratios)."""
        pairs = self.distinct([*rows, name])
        return pairs >= MIN_FILL * self.distinct(rows) * self.distinct([name])


@dataclass(frozen=True, slots=True)
class _Layout:
    rows: tuple[str, ...]
    columns: tuple[str, ...]  # crossing names, outermost first
    ordinals: tuple[str, ...]  # names that repeat under a cell: a level of ordinals
    fixed: tuple[str, ...]  # one sheet per value
    companions: tuple[str, ...]


def _layout(
    group: _Group, axes: Sequence[str], rows: Sequence[str], columns: Sequence[str] | None
) -> _Layout | None:
    """The layout with ``rows`` (and ``columns`` when given), or None if it shows nothing;
    ``axes`` are the names that may be axes (the group's varying names, less a derived prompt)."""
    names = [n for n in axes if n not in rows]
    companions = [n for n in names if n != "prompt" and group.determined(n, rows)]
    rest = [n for n in names if n not in companions and not group.determined(n, rows)]
    if columns is None:
        crossing = [n for n in rest if group.crosses(n, rows)]
        shown = list(crossing)
        fixed: list[str] = []
        # Too many columns: the innermost crossing names get sheets of their own.
        while len(shown) > 1 and group.distinct(shown) > MAX_AUTO_COLUMNS:
            fixed.insert(0, shown.pop())
    else:
        # A name the rows determine (a product's own aspect ratio) is the row's, not a column.
        shown = [n for n in columns if n not in rows and n not in companions]
        fixed = [n for n in rest if n not in shown and group.crosses(n, [*rows, *shown])]
    # A sheet's fixed name implied by the others (a style's code beside the style) is not
    # one more split.
    for name in reversed(list(fixed)):
        if group.determined(name, [*rows, *shown, *(n for n in fixed if n != name)]):
            fixed.remove(name)
    placed = [*rows, *shown, *fixed]
    ordinals = [n for n in rest if n not in placed and not group.determined(n, placed)]
    if not shown and not ordinals:
        return None  # the rows explain everything: not an item axis
    return _Layout(tuple(rows), tuple(shown), tuple(ordinals[:1]), tuple(fixed), tuple(companions))


def _sheets(group: _Group, layout: _Layout, title_fixed: Sequence[tuple[str, Any]]) -> list[Sheet]:
    """Place every job of ``group`` by ``layout``: a sheet per combination of its fixed names."""
    jobs = group.jobs
    row_keys = group.keys(layout.rows)
    column_keys = group.keys(layout.columns)
    fixed_keys = group.keys(layout.fixed)
    # A name that repeats under a cell: its values there in job order are #1, #2, ...
    ordinal: list[int] = [0] * len(jobs)
    if layout.ordinals:
        counts: dict[tuple[Any, ...], int] = defaultdict(int)
        for i in range(len(jobs)):
            cell = (fixed_keys[i], row_keys[i], column_keys[i])
            counts[cell] += 1
            ordinal[i] = counts[cell]
    by_sheet: dict[tuple[str, ...], list[int]] = {}
    for i in range(len(jobs)):
        by_sheet.setdefault(fixed_keys[i], []).append(i)
    level_names = (*layout.columns, *(f"{n}{_ORDINAL}" for n in layout.ordinals))
    sheets = []
    for members in by_sheet.values():
        rows: dict[tuple[str, ...], int] = {}
        columns: dict[tuple[str, ...], int] = {}
        headers: list[RowHeader] = []
        for i in members:
            if row_keys[i] not in rows:
                rows[row_keys[i]] = len(rows)
                job = jobs[i]
                notes = tuple(
                    f"{n}={render_value(job.value(n))}" for n in layout.companions if n in job.labels
                )[:_NOTES]
                headers.append(RowHeader(" · ".join(row_keys[i]), notes))
            column = column_keys[i] + ((f"#{ordinal[i]}",) if layout.ordinals else ())
            columns.setdefault(column, len(columns))
        first = jobs[members[0]]
        sheet = Sheet(
            layout.rows,
            level_names,
            (*title_fixed, *((n, first.value(n)) for n in layout.fixed)),
            headers,
            list(columns),
        )
        for i in members:
            column = column_keys[i] + ((f"#{ordinal[i]}",) if layout.ordinals else ())
            sheet.cells.setdefault((rows[row_keys[i]], columns[column]), jobs[i])
        sheets.append(sheet)
    return sheets


def _fill(sheets: Sequence[Sheet]) -> float:
    cells = sum(len(s.row_headers) * len(s.column_headers) for s in sheets)
    return sum(len(s.cells) for s in sheets) / cells if cells else 0.0


def _strip(group: _Group, title_fixed: Sequence[tuple[str, Any]]) -> list[Sheet]:
    """A one-row strip, when one name tells the group's few jobs apart (a prompt last)."""
    if not 2 <= len(group.jobs) <= MAX_STRIP:
        return []
    names = sorted(group.varying, key=lambda n: n == "prompt")
    for name in names:
        if group.distinct([name]) == len(group.jobs):
            sheet = Sheet((), (name,), tuple(title_fixed), [RowHeader("")], [])
            for i, value in enumerate(group.text[name]):
                sheet.column_headers.append((value,))
                sheet.cells[(0, i)] = group.jobs[i]
            return [sheet]
    return []


def _groups(jobs: Sequence[ReportJob]) -> list[list[ReportJob]]:
    """Jobs by the set of labels they carry, in order of each group's first job."""
    groups: dict[frozenset[str], list[ReportJob]] = {}
    for job in sorted(jobs, key=lambda j: j.index if j.index is not None else 0):
        groups.setdefault(frozenset(job.labels), []).append(job)
    return list(groups.values())


def _as_names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _group_sheets(
    group: _Group, rows: tuple[str, ...], columns: tuple[str, ...], title_fixed: Sequence[tuple[str, Any]]
) -> list[Sheet]:
    varying = set(group.varying)
    given_rows = rows if rows and set(rows) <= varying else ()
    given_columns = tuple(n for n in columns if n in varying and n not in given_rows) or None
    # A prompt rendered from the other names (a template of labels) is no axis of its own.
    derived = "prompt" in varying and group.determined("prompt", [n for n in group.varying if n != "prompt"])
    axes = [n for n in group.varying if not (derived and n == "prompt")]
    order = {n: i for i, n in enumerate(group.varying)}
    ranked = sorted(axes, key=lambda n: (-group.distinct([n]), order[n]))[:_CANDIDATES]
    # The manifest's choice first; should it leave most cells empty, the automatic one.
    tries: list[tuple[tuple[str, ...], tuple[str, ...] | None]] = []
    if given_rows:
        tries.append((given_rows, given_columns))
    elif given_columns:
        tries += [((n,), given_columns) for n in ranked if n not in given_columns]
    tries += [((n,), None) for n in ranked]
    for rows_tried, columns_tried in tries:
        layout = _layout(group, axes, rows_tried, columns_tried)
        if layout is None:
            continue
        sheets = _sheets(group, layout, title_fixed)
        if _fill(sheets) >= MIN_FILL:
            return sheets
    return _strip(group, title_fixed)


def contact_sheets(
    jobs: Sequence[ReportJob],
    *,
    rows: str | Sequence[str] | None = None,
    columns: str | Sequence[str] | None = None,
) -> list[Sheet]:
    """The contact sheets of ``jobs`` (see the module docstring); [] when nothing fits.

    ``rows`` and ``columns`` are the manifest's ``report:`` names, if any.
    """
    groups = [_Group(members) for members in _groups(jobs)]
    sheets: list[Sheet] = []
    for group in groups:
        # What tells this group apart from the others: its labels that are constant here.
        title_fixed = (
            [(n, v) for n, v in group.constant.items() if n in group.jobs[0].labels]
            if len(groups) > 1
            else []
        )
        sheets.extend(_group_sheets(group, _as_names(rows), _as_names(columns), title_fixed))
    return [_capped(s) for s in sheets[:MAX_SHEETS]]


def _capped(sheet: Sheet) -> Sheet:
    """At most MAX_ROWS x MAX_COLUMNS cells (a page and a PNG stay a sensible size)."""
    sheet.hidden_rows = max(0, len(sheet.row_headers) - MAX_ROWS)
    sheet.hidden_columns = max(0, len(sheet.column_headers) - MAX_COLUMNS)
    if sheet.hidden_rows or sheet.hidden_columns:
        del sheet.row_headers[MAX_ROWS:]
        del sheet.column_headers[MAX_COLUMNS:]
        sheet.cells = {(r, c): j for (r, c), j in sheet.cells.items() if r < MAX_ROWS and c < MAX_COLUMNS}
    return sheet


def column_spans(sheet: Sheet, level: int) -> list[tuple[str, int]]:
    """The header texts of one level with how many columns each spans (equal neighbours
    under the same outer values are one span, as in a pivot table)."""
    spans: list[tuple[str, int]] = []
    previous: tuple[str, ...] | None = None
    for header in sheet.column_headers:
        prefix = header[: level + 1]
        if prefix == previous:
            text, width = spans[-1]
            spans[-1] = (text, width + 1)
        else:
            spans.append((header[level], 1))
        previous = prefix
    return spans


# --- the PNG grid ------------------------------------------------------------------------
