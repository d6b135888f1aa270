"""CSV rows: a ``rows:`` file (or a whole CSV manifest) read into a checked :class:`RowSource`.

UTF-8 with or without a BOM, CRLF or LF line ends. The header names the columns: a
parameter name sets that parameter, any other name is a label. An empty cell is "not
set"; a blank line is no row. Every cell is checked here, located at its row's line.
"""

from __future__ import annotations

import csv
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
            check.error(line, where, f"CSV file not found: {shown}")
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
            ok = check.label_name(column, 1, f"column {column}", file=shown, axis=True) and ok
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
                ok = False
                continue
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
    return RowSource(path, shown, tuple(header), tuple(rows)) if ok else None
