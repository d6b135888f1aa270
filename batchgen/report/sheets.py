"""Contact sheets: a run's jobs laid out along two axes, in the manner of A1111's X/Y/Z plot.

A *sheet* puts one parameter or label on its rows and another on its columns; every
other name that varies and is not already implied by those (a prompt built from the
labels on the axes, a SKU's name) is a *Z* value, one sheet per combination. A cell
holds the job with those values: its thumbnail, a marked blank if it failed, a plain
blank if it has not run (or no job has those values).

The axes are the manifest's ``report: {rows, columns}`` when given; otherwise the
names with the most distinct values, trying pairs in that order until one fills at
least three quarters of its cells, with four cells a sheet on average (a catalog's
derived seeds differ per product, so seed x SKU is mostly empty and is passed over for
SKU x shot). No pair fills: no sheets.

Each sheet is also drawn as a labelled PNG (:func:`save_grid`) into ``OUT/grids/``.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from batchgen.manifest.template import render_value
from batchgen.output.layout import GRIDS_DIR

__all__ = [
    "MAX_COLUMNS",
    "MAX_ROWS",
    "ReportJob",
    "Sheet",
    "axis_values",
    "contact_sheets",
    "save_grid",
]

MAX_ROWS = 60  # per sheet; beyond, the sheet says how many it leaves out
MAX_COLUMNS = 30
MAX_SHEETS = 40
_CANDIDATES = 16  # names considered for the axes, most values first
_MISSING = "—"  # a label some jobs do not have


@dataclass(frozen=True, slots=True)
class ReportJob:
    """One job as the report shows it: identity, values, and what became of it."""

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


@dataclass(slots=True)
class Sheet:
    """One contact sheet: row and column values, the fixed Z values, the jobs by cell."""

    rows: str
    columns: str
    fixed: tuple[tuple[str, Any], ...]
    row_values: list[Any]
    column_values: list[Any]
    cells: dict[tuple[int, int], ReportJob] = field(default_factory=dict)
    hidden_rows: int = 0  # beyond MAX_ROWS
    hidden_columns: int = 0

    @property
    def title(self) -> str:
        """``seed x text_guidance_scale, steps_num=30``."""
        fixed = ", ".join(f"{name}={render_value(value)}" for name, value in self.fixed)
        return f"{self.rows} x {self.columns}" + (f", {fixed}" if fixed else "")

    @property
    def slug(self) -> str:
        """A file name for the sheet's PNG."""
        text = "-".join([self.rows, self.columns, *(f"{n}-{render_value(v)}" for n, v in self.fixed)])
        return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:120].strip("_") or "sheet"


def _sort_key(value: Any) -> tuple[int, float, str]:
    if isinstance(value, bool):
        return (1, float(value), "")
    if isinstance(value, int | float):
        return (0, float(value), "")
    return (2, 0.0, render_value(value))


def axis_values(jobs: Sequence[ReportJob]) -> dict[str, list[Any]]:
    """Every name that varies across ``jobs`` and its distinct values, most values first."""
    seen: dict[str, dict[str, Any]] = {}
    for job in jobs:
        for name in itertools.chain(job.params, job.labels):
            seen.setdefault(name, {})
    for name, values in seen.items():
        for job in jobs:
            value = job.value(name)
            values.setdefault(render_value(value), value)
    varying = {n: list(v.values()) for n, v in seen.items() if len(v) > 1}
    order = list(varying)
    return dict(sorted(varying.items(), key=lambda item: (-len(item[1]), order.index(item[0]))))


def _determined(jobs: Sequence[ReportJob], name: str, by: Sequence[str]) -> bool:
    """Whether ``name``'s value is a function of the values of ``by`` over ``jobs``."""
    seen: dict[tuple[str, ...], str] = {}
    for job in jobs:
        given = tuple(render_value(job.value(n)) for n in by)
        value = render_value(job.value(name))
        if seen.setdefault(given, value) != value:
            return False
    return True


def _fixed_names(jobs: Sequence[ReportJob], rows: str, columns: str, varying: Sequence[str]) -> list[str]:
    """The Z names: what else varies, less what the others imply (prompt first)."""
    rest = [n for n in varying if n not in (rows, columns)]
    for name in sorted(rest, key=lambda n: n != "prompt"):
        others = [n for n in rest if n != name]
        if _determined(jobs, name, [rows, columns, *others]):
            rest.remove(name)
    return rest


def _layout(jobs: Sequence[ReportJob], rows: str, columns: str, fixed: Sequence[str]) -> list[Sheet]:
    groups: dict[tuple[str, ...], list[ReportJob]] = defaultdict(list)
    for job in jobs:
        groups[tuple(render_value(job.value(n)) for n in fixed)].append(job)
    sheets = []
    for members in groups.values():
        row_values = sorted(
            {render_value(j.value(rows)): j.value(rows) for j in members}.values(), key=_sort_key
        )
        column_values = sorted(
            {render_value(j.value(columns)): j.value(columns) for j in members}.values(), key=_sort_key
        )
        row_at = {render_value(v): i for i, v in enumerate(row_values)}
        column_at = {render_value(v): i for i, v in enumerate(column_values)}
        sheet = Sheet(
            rows,
            columns,
            tuple((n, members[0].value(n)) for n in fixed),
            row_values,
            column_values,
        )
        for job in sorted(members, key=lambda j: j.index if j.index is not None else 0):
            cell = (row_at[render_value(job.value(rows))], column_at[render_value(job.value(columns))])
            sheet.cells.setdefault(cell, job)
        sheets.append(sheet)
    return sheets


def _fill(sheets: Sequence[Sheet]) -> float:
    cells = sum(len(s.row_values) * len(s.column_values) for s in sheets)
    return sum(len(s.cells) for s in sheets) / cells if cells else 0.0


def contact_sheets(
    jobs: Sequence[ReportJob], *, rows: str | None = None, columns: str | None = None, min_fill: float = 0.75
) -> list[Sheet]:
    """The contact sheets of ``jobs`` (see the module docstring); [] when nothing fits."""
    varying = axis_values(jobs)
    names = list(varying)
    # A prompt rendered from the other values (labels in its template) is not an axis of
    # its own; a list of prompts is.
    derived = "prompt" in varying and _determined(jobs, "prompt", [n for n in names if n != "prompt"])
    candidates = [n for n in names if not (derived and n == "prompt")][:_CANDIDATES]
    pairs: list[tuple[str, str]]
    if rows in varying and columns in varying and rows != columns:
        pairs = [(rows, columns)]
    elif rows in varying or columns in varying:
        given = rows if rows in varying else columns
        assert given is not None
        pairs = [(given, o) if rows == given else (o, given) for o in candidates if o != given]
    else:
        pairs = list(itertools.combinations(candidates, 2))
    for row_name, column_name in pairs:
        fixed = _fixed_names(jobs, row_name, column_name, names)
        sheets = _layout(jobs, row_name, column_name, fixed)
        if len(sheets) > len(jobs) / 4 or _fill(sheets) < min_fill:
            continue  # sheets of a few cells, or with many holes: not a useful view
        sheets.sort(key=lambda s: tuple(_sort_key(v) for _, v in s.fixed))
        return [_capped(s) for s in sheets[:MAX_SHEETS]]
    return []


def _capped(sheet: Sheet) -> Sheet:
    """At most MAX_ROWS x MAX_COLUMNS cells (a page and a PNG stay a sensible size)."""
    sheet.hidden_rows = max(0, len(sheet.row_values) - MAX_ROWS)
    sheet.hidden_columns = max(0, len(sheet.column_values) - MAX_COLUMNS)
    if sheet.hidden_rows or sheet.hidden_columns:
        del sheet.row_values[MAX_ROWS:]
        del sheet.column_values[MAX_COLUMNS:]
        sheet.cells = {(r, c): j for (r, c), j in sheet.cells.items() if r < MAX_ROWS and c < MAX_COLUMNS}
    return sheet


# --- the PNG grid ------------------------------------------------------------------------

_BACKGROUND = (255, 255, 255)
_INK = (20, 20, 20)
_FAILED = (253, 226, 226)
_FAILED_INK = (185, 28, 28)
_PENDING = (238, 238, 238)
_MUTED = (100, 106, 115)
_SIGNATURE_KEY = "batchgen-sheet"


def _text(
    draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font: Any, width: int, **kw: Any
) -> None:
    """Draw ``text`` cut to fit ``width`` pixels."""
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    draw.text(xy, text, font=font, **kw)


def _signature(sheet: Sheet, cell: int) -> str:
    """What a grid PNG shows, hashed: an unchanged sheet is not drawn again."""
    parts = [sheet.title, str(cell), repr(sheet.row_values), repr(sheet.column_values)]
    parts += [f"{r},{c}:{j.thumb}:{j.state}:{j.code}" for (r, c), j in sorted(sheet.cells.items())]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def save_grid(sheet: Sheet, out_dir: Path, name: str, *, cell: int = 192) -> str:
    """Draw ``sheet`` as a labelled PNG ``OUT/grids/<name>.png``; its path relative to OUT.

    The PNG carries a signature of what it shows; when the file there already has the
    same one it is left as it is (reports at the end of each run redraw only what changed).
    """
    path = out_dir / GRIDS_DIR / f"{name}.png"
    signature = _signature(sheet, cell)
    try:
        with Image.open(path) as existing:
            if existing.info.get(_SIGNATURE_KEY) == signature:
                return f"{GRIDS_DIR}/{name}.png"
    except (OSError, ValueError):
        pass
    cell = max(64, min(cell, 8192 // max(1, len(sheet.column_values))))
    font = ImageFont.load_default(size=max(11, cell // 12))
    title_font = ImageFont.load_default(size=max(14, cell // 9))
    pad = cell // 16
    header_w = cell
    header_h = cell // 4
    title_h = cell // 4 + pad
    width = header_w + cell * len(sheet.column_values) + pad
    height = title_h + header_h + cell * len(sheet.row_values) + pad
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    _text(draw, (pad, pad), sheet.title, title_font, width - 2 * pad, fill=_INK)
    top = title_h + header_h
    # The axis names once, in the corner; headers hold the values alone, so they fit.
    _text(draw, (pad, title_h), f"{sheet.columns} →", font, header_w - 2 * pad, fill=_MUTED)
    _text(draw, (pad, title_h + header_h // 2), f"{sheet.rows} ↓", font, header_w - 2 * pad, fill=_MUTED)
    for c, value in enumerate(sheet.column_values):
        x = header_w + c * cell
        text = render_value(value)
        shift = max(0, (cell - int(draw.textlength(text, font=font))) // 2)
        _text(draw, (x + shift, title_h + header_h // 4), text, font, cell - 2 * pad, fill=_INK)
    for r, value in enumerate(sheet.row_values):
        y = top + r * cell
        _text(draw, (pad, y + cell // 2 - pad), render_value(value), font, header_w - 2 * pad, fill=_INK)
        for c in range(len(sheet.column_values)):
            x = header_w + c * cell
            box = (x + 2, y + 2, x + cell - 2, y + cell - 2)
            job = sheet.cells.get((r, c))
            if job is not None and job.thumb:
                try:
                    with Image.open(out_dir / job.thumb) as thumb:
                        tile = thumb.convert("RGB")
                        tile.thumbnail((cell - 4, cell - 4))
                        image.paste(tile, (x + (cell - tile.width) // 2, y + (cell - tile.height) // 2))
                    continue
                except OSError:
                    pass
            if job is not None and job.state == "failed":
                draw.rectangle(box, fill=_FAILED, outline=_FAILED_INK, width=2)
                draw.line((box[0], box[1], box[2], box[3]), fill=_FAILED_INK, width=2)
                draw.line((box[0], box[3], box[2], box[1]), fill=_FAILED_INK, width=2)
                label = f"failed {job.code}" if job.code is not None else "failed"
                _text(draw, (x + pad, y + pad), label, font, cell - 2 * pad, fill=_FAILED_INK)
            else:
                draw.rectangle(box, fill=_PENDING)
                label = "no job" if job is None else job.state
                _text(draw, (x + pad, y + pad), label, font, cell - 2 * pad, fill=(110, 110, 110))
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text(_SIGNATURE_KEY, signature)
    part = path.with_name(path.name + ".part")
    image.save(part, format="PNG", pnginfo=info)  # optimize=True would take about twice as long
    os.replace(part, path)
    return f"{GRIDS_DIR}/{name}.png"
