"""CSV rows: a ``rows:`` file (or a whole CSV manifest) read into a checked :class:`RowSource`.

UTF-8 with or without a BOM, CRLF or LF line ends. The header names the columns: a
parameter name sets that parameter, any other name is a label. An empty cell is "not
set"; a blank line is no row. Every cell is checked here, located at its row's line. A
row with the wrong number of cells is an error that hides nothing: the other rows are
still read and checked, so every problem of the file shows at once.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
from pathlib import Path

from batchgen.manifest.checks import Checker
from batchgen.manifest.model import Row, RowSource
from batchgen.manifest.params import PARAMETER_NAMES
from batchgen.manifest.reads import MAX_CSV_BYTES, Unreadable, read_bounded

__all__ = ["read_rows"]


def read_rows(
    check: Checker, path: Path, shown: str, line: int | None, where: str, *, data: bytes | None = None
) -> RowSource | None:
    """The rows of the CSV file at ``path`` (named ``shown``), or None with its problems noted.

    ``line`` and ``where`` locate the ``rows:`` key that names the file (None and "" for
    a CSV manifest); ``data`` is the file's content when the caller has read it already.
    """
    try:
        if data is None:
            data = read_bounded(path, MAX_CSV_BYTES, "a rows: CSV file")
        text = data.decode("utf-8-sig")
    except Unreadable as exc:
        if exc.missing:
            check.error(line, where, f"CSV file not found: {shown}{_nearby(path)}")
        else:
            check.error(line, where, f"{shown} {exc}")
        return None
    except UnicodeDecodeError as exc:
        check.error(None, "", f"is not UTF-8 text ({exc.reason} at byte {exc.start})", file=shown)
        return None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        check.error(line, where, f"{shown} is empty; it needs a header row and at least one row")
        return None
    except csv.Error as exc:
        check.error(1, "", f"CSV error: {exc}", file=shown)
        return None
    ok = True
    for i, column in enumerate(header):
        if not column:
            check.error(1, f"column {i + 1}", "has no name in the header", file=shown)
            ok = False
        elif header.index(column) != i:
            check.error(1, f"column {column}", "appears twice in the header", file=shown)
            ok = False
        elif column not in PARAMETER_NAMES:
            ok = check.label_name(column, 1, f"column {column}", file=shown) and ok
    rows: list[Row] = []
    previous = reader.line_num
    try:
        for record in reader:
            row_line = previous + 1
            previous = reader.line_num
            if not any(cell.strip() for cell in record):
                continue  # blank lines are not rows
            if len(record) != len(header):
                check.error(
                    row_line, "", f"has {len(record)} cells; the header has {len(header)}", file=shown
                )
                continue  # noted; the other rows are still checked
            cells = {h: c for h, c in zip(header, record, strict=True) if c.strip() and h}
            # A bad cell is reported but keeps its row: the row's other checks (its
            # prompt, its template names) still run, so every problem shows at once.
            for column, cell in cells.items():
                if column in PARAMETER_NAMES:
                    check.check_param(column, cell, row_line, f"column {column}", file=shown)
                else:
                    check.check_label(cell, row_line, f"column {column}", file=shown)
            rows.append(Row(row_line, cells))
    except csv.Error as exc:
        check.error(reader.line_num, "", f"CSV error: {exc}", file=shown)
        return None
    if not rows:
        check.error(line, where, f"{shown} has a header but no rows")
        return None
    sha = hashlib.sha256(data).hexdigest()
    return RowSource(path, shown, tuple(header), tuple(rows), sha) if ok else None


def _nearby(path: Path) -> str:
    """A "did you mean" among the CSV files in the folder ``path`` names, or the list of them."""
    try:
        found = sorted(p.name for p in path.parent.iterdir() if p.suffix.lower() == ".csv" and p.is_file())
    except OSError:
        return ""
    # Compared without ".csv", which every name shares and which would make any two look alike.
    stems = {Path(name).stem: name for name in found}
    close = difflib.get_close_matches(path.stem, list(stems), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {stems[close[0]]}?)"
    if found and len(found) <= 10:
        return f" (the CSV files there: {', '.join(found)})"
    return ""
