"""``OUT/report.html``: one self-contained page about a run that opens from disk, offline.

Everything is inline (CSS, script, data); images and thumbnails are relative links
(``images/...``, ``thumbs/...``, ``grids/...``), so the folder can be zipped, copied or
served as it is, and nothing is fetched from elsewhere. The page has:

- a header: the run, its manifest and sha256, jobs by state, wall time, images per
  minute, inference p50 / p95, requests per image, 429s (:mod:`batchgen.outcome.status`);
- a failures table: labels, prompt, seed, code, the server's detail;
- the jobs not known whether paid (their submit in doubt), why, and what to do;
- contact sheets (:mod:`batchgen.report.sheets`), each also saved as a labelled PNG in
  ``OUT/grids/``, a failed cell a marked blank;
- a gallery of thumbnails (:mod:`batchgen.report.thumbs`), filtered by a text box over labels
  and parameters (``#q=...`` in the address pre-fills it); clicking a thumbnail or a
  sheet cell shows the image with all its parameters and copies its prompt.

It stays quick at 10,000 images: the jobs are one JSON object in the page (parameters
shared by every job written once), the gallery is drawn by the script a page of
thumbnails at a time as it scrolls, and thumbnails load lazily; only contact sheets
are HTML from the start, capped (:data:`batchgen.report.sheets.MAX_ROWS`), and their images
get a ``src`` from the script only when the sheet comes near the view (``loading=lazy``
alone still fetched all 8,000 of a 10,000-image run's sheets in headless Chromium).
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from batchgen import __version__
from batchgen.errors import LocalWriteError
from batchgen.manifest.template import render_value
from batchgen.outcome.figures import format_duration, format_number
from batchgen.outcome.status import Status
from batchgen.output.jsontext import dumps
from batchgen.output.layout import GRIDS_DIR, REPORT_HTML
from batchgen.output.ledger import format_ts
from batchgen.output.resume import leads_outside
from batchgen.output.temporary import replace_whole
from batchgen.report.grids import save_grid
from batchgen.report.sheets import ReportJob, Sheet, column_spans, contact_sheets
from batchgen.report.thumbs import make_thumbnails, thumb_relpath

__all__ = ["ReportStopped", "report_jobs", "write_report"]


def report_jobs(status: Status) -> list[ReportJob]:
    """Every job the report shows: the manifest's (when known) with what the ledger says of each."""
    records = status.state.records
    jobs: list[ReportJob] = []
    listed: set[str] = set()
    values = _SharedNames()
    for job in status.manifest.jobs or ():
        listed.add(job.key)
        jobs.append(
            _report_job(job.key, job.index, values(job.params.to_api()), job.labels, records.get(job.key))
        )
    for key, record in records.items():
        if key not in listed and record.params is not None and status.manifest.jobs is None:
            jobs.append(_report_job(key, record.index, record.params, record.labels or {}, record))
    jobs.sort(key=lambda j: (j.index is None, j.index or 0))
    return jobs


class _Values(Mapping[str, Any]):
    """A job's parameters, read-only: its values in the order of names every job shares.

    A dict of 13 parameters is 656 bytes a job; this is a tuple of the values and a
    reference to the shared names (about 200 bytes), for reports of 100,000 jobs.
    """

    __slots__ = ("_at", "_values")

    def __init__(self, at: Mapping[str, int], values: tuple[Any, ...]) -> None:
        self._at = at
        self._values = values

    def __getitem__(self, name: str) -> Any:
        return self._values[self._at[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._at)

    def __len__(self) -> int:
        return len(self._values)


class _SharedNames:
    """Makes :class:`_Values` of parameter dicts, sharing one name table per set of names."""

    def __init__(self) -> None:
        self._tables: dict[tuple[str, ...], dict[str, int]] = {}

    def __call__(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        names = tuple(params)
        at = self._tables.get(names)
        if at is None:
            at = self._tables[names] = {name: i for i, name in enumerate(names)}
        return _Values(at, tuple(params.values()))


def _report_job(
    key: str, index: int | None, params: Mapping[str, Any], labels: Mapping[str, Any], record: Any
) -> ReportJob:
    if record is None:
        return ReportJob(key, index, params, labels, "not started")
    state = {"submitted": "in flight"}.get(record.state, record.state)
    return ReportJob(
        key,
        index,
        params,
        labels,
        state,
        file=record.file if state == "completed" else None,
        sha256=record.sha256 if state == "completed" else None,
        code=record.code,
        error=record.error,
        retryable=record.retryable,
        request_id=record.request_id,
        inference_time=record.inference_time,
    )


class ReportStopped(Exception):
    """Writing the report was stopped (``stop()`` became true): the page was not replaced."""


def _with_thumbs(out_dir: Path, jobs: list[ReportJob], stop: Callable[[], bool]) -> list[ReportJob]:
    """Make the thumbnails of the jobs' images and set each job's ``thumb`` (in place)."""
    # An image that leads outside OUT/images (a symlink) is not the run's: it is neither
    # read nor shown (`batchgen status` and the page's warnings name it).
    wanted = [
        j
        for j in jobs
        if j.file and j.sha256 and (out_dir / j.file).is_file() and not leads_outside(out_dir, j.file)
    ]
    made = make_thumbnails(out_dir, ((j.file or "", j.sha256 or "") for j in wanted), stop=stop)
    for job in wanted:
        if job.sha256 in made:
            job.thumb = thumb_relpath(job.sha256)
    return jobs


def write_report(status: Status, *, stop: Callable[[], bool] = lambda: False) -> Path:
    """Write ``OUT/report.html`` (and the thumbnails and grid PNGs it needs); its path.

    ``status`` is what a run holds at its end (:func:`batchgen.outcome.status.run_status`)
    or what ``batchgen report OUT`` read from the folder
    (:func:`batchgen.outcome.read.read_status` with ``keep_jobs=True``): the page is
    written from it and the images, and reads nothing else. ``stop`` is asked between
    thumbnails and grids: once it is true, :class:`ReportStopped` is raised and the page
    is left as it was (thumbnails and grids already made are kept for the next one).
    A folder that refuses a write (read-only, full) raises
    :class:`~batchgen.errors.LocalWriteError` naming the file (exit 4).
    """

    def check() -> None:
        if stop():
            raise ReportStopped("the report was stopped before it was written")

    out_dir = status.out_dir
    try:
        jobs = _with_thumbs(out_dir, report_jobs(status), stop)
        check()
        report = status.manifest.report
        sheets = contact_sheets(jobs, rows=report.get("rows"), columns=report.get("columns"))
        grids = []
        for i, sheet in enumerate(sheets):
            check()
            grids.append(save_grid(sheet, out_dir, f"{i + 1:02d}-{sheet.slug}"))
        check()
        for stale in set((out_dir / GRIDS_DIR).glob("*.png")) - {out_dir / g for g in grids}:
            stale.unlink(missing_ok=True)  # a sheet of an earlier report that is no longer drawn
        target = out_dir / REPORT_HTML

        def write(part: Path) -> None:
            # Written as it is made: the page of 100,000 jobs is tens of megabytes of text.
            with part.open("w", encoding="utf-8") as file:
                file.writelines(_page(status, jobs, sheets, grids))

        replace_whole(target, write)
    except OSError as exc:  # a read-only folder, a full disk: say where, no traceback
        raise LocalWriteError.from_os_error("write", exc.filename or out_dir, exc) from None
    return target


# --- the page ------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(render_value(value), quote=True)


def _url(path: str) -> str:
    return urllib.parse.quote(path, safe="/")


def _header(status: Status, jobs: Sequence[ReportJob]) -> str:
    s = status
    num = format_number
    name = s.manifest.name or s.out_dir.name
    total = len(jobs) if s.manifest.jobs is not None else s.total
    not_started = s.not_started
    doubts = len(s.in_doubt)
    sha = s.manifest.recorded_sha256 or ""
    running = (
        f'<p class="live">A run is going (pid {s.running_pid}): this page shows it as of '
        f"{_e(format_ts(s.now))}; it is written again when the run ends.</p>"
        if s.running_pid is not None
        else ""
    )
    if s.running_pid is None and s.last_stop:
        # An interrupted (or stopped) run's page is about what was done by then.
        running = (
            f'<p class="live">The last run stopped early ({_e(s.last_stop)}): this page shows what was'
            " done by then. Run the same command again to finish the batch.</p>"
        )
    facts = [
        ("manifest", f"{_e(s.manifest.path or 'none recorded')}"
         + (f' <code title="{_e(sha)}">sha256 {_e(sha[:12])}</code>' if sha else "")
         + (' <span class="warn">changed since the run</span>' if s.manifest.changed else "")),
        ("jobs", f"{total if total is not None else '?'}"),
        # Jobs by state as `batchgen status` counts them (outcome/status.py), every job in one.
        ("completed", str(s.completed)),
        ("failed", str(len(s.failed))),
        *([("not known whether paid", f'<a class="warn" href="#in-doubt">{doubts}</a>')] if doubts else []),
        ("in flight", str(len(s.in_flight) + s.expired)),
        ("not started", str(not_started) if not_started is not None else "?"),
        ("runs", str(len(s.runs))),
        ("wall time", format_duration(s.wall_time)),
        ("images/min", num(s.overall_images_per_minute, ".1f")),
        ("inference p50 / p95", f"{num(s.inference_p50, '.1f', ' s')} / {num(s.inference_p95, '.1f', ' s')}"),
        ("requests/image", num(s.requests_per_image, ".2f")),
        ("429s", str(s.rate_limited)),
    ]  # fmt: skip
    items = "".join(f"<div><dt>{_e(k)}</dt><dd>{v}</dd></div>" for k, v in facts)
    warnings = "".join(f"<li>{_e(w)}</li>" for w in s.warnings)
    return (
        f"<header><h1>{_e(name)}</h1>"
        f'<p class="sub">{_e(s.out_dir)} · written {_e(format_ts(s.now))} · batchgen {_e(__version__)}</p>'
        f'{running}<dl class="facts">{items}</dl>'
        + (f'<ul class="warn">{warnings}</ul>' if warnings else "")
        + "</header>"
    )


def _labels_text(job: ReportJob) -> str:
    return ", ".join(f"{k}={render_value(v)}" for k, v in job.labels.items())


def _failures(jobs: Sequence[ReportJob]) -> str:
    failed = [j for j in jobs if j.state == "failed"]
    if not failed:
        return '<section id="failures"><h2>Failures</h2><p class="none">No job failed.</p></section>'
    rows = "".join(
        f'<tr data-key="{_e(j.key)}"><td>{_e(j.index)}</td><td>{_e(_labels_text(j))}</td>'
        f'<td class="prompt">{_e(j.params.get("prompt", ""))}</td><td>{_e(j.params.get("seed", ""))}</td>'
        f"<td>{_e(j.code if j.code is not None else '-')}</td><td>{_e(j.error or '')}</td>"
        f"<td>{'retried by a rerun' if j.retryable else 'permanent'}</td></tr>"
        for j in failed
    )
    table = (
        '<table class="failures"><thead><tr><th>#</th><th>labels</th><th>prompt</th><th>seed</th>'
        f"<th>code</th><th>server detail</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
    )
    if len(failed) > 20:  # a long list should not push the sheets and the gallery off the page
        table = f"<details><summary>Show all {len(failed)} failed jobs</summary>{table}</details>"
    return f'<section id="failures"><h2>Failures <small>({len(failed)})</small></h2>{table}</section>'


def _in_doubt(status: Status, jobs: Sequence[ReportJob]) -> str:
    """The jobs not known whether paid (their submit in doubt), and what to do about them;
    nothing when there are none."""
    doubts = status.in_doubt
    if not doubts:
        return ""
    shown = {j.key: j for j in jobs}
    rows = []
    for record in sorted(doubts, key=lambda r: (r.index is None, r.index or 0)):
        job = shown.get(record.key)
        params = job.params if job is not None else (record.body or {})
        labels = _labels_text(job) if job is not None else ""
        why = record.doubt or "no answer recorded (the run ended while it was sent)"
        rows.append(
            f'<tr data-key="{_e(record.key)}"><td>{_e(record.index)}</td><td>{_e(labels)}</td>'
            f'<td class="prompt">{_e(params.get("prompt", ""))}</td><td>{_e(params.get("seed", ""))}</td>'
            f"<td>{_e(why)}</td></tr>"
        )
    table = (
        '<table class="failures"><thead><tr><th>#</th><th>labels</th><th>prompt</th><th>seed</th>'
        f"<th>why not known</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    if len(rows) > 20:
        table = f"<details><summary>Show all {len(rows)} jobs</summary>{table}</details>"
    advice = (
        '<p class="note">Their submit got no usable answer and the request history did not hold it'
        " (yet): each may have been paid for, so none was submitted again. Run the same command"
        " again later: it looks for them in the request history first, polls those it finds, and"
        " submits again only those a read past <code>--history-lag</code> proves were never"
        " accepted. <code>--resubmit-uncertain</code> submits them at once, accepting that some"
        " may be paid twice (docs/running.md, Submits in doubt).</p>"
    )
    return (
        f'<section id="in-doubt"><h2>Not known whether paid <small>({len(rows)})</small></h2>'
        f"{advice}{table}</section>"
    )


def _sheet_html(sheet: Sheet, grid: str, number: int, item_of: Mapping[str, int]) -> str:
    """A sheet as a pivot table: a header row per column level (equal neighbours spanned),
    a header cell per row (its values, then its companions), a thumbnail per cell."""
    head: list[str] = []
    levels = len(sheet.columns)
    for level, name in enumerate(sheet.columns):
        # The corner names the level; the last one also the rows: "sku \\ aspect_ratio".
        last = level == levels - 1 and sheet.rows
        corner = f"{_e(' · '.join(sheet.rows))} \\ {_e(name)}" if last else _e(name)
        spans = "".join(
            f'<th scope="colgroup" colspan="{width}">{_e(text)}</th>'
            if width > 1
            else f'<th scope="col">{_e(text)}</th>'
            for text, width in column_spans(sheet, level)
        )
        head.append(f'<tr><th class="corner">{corner}</th>{spans}</tr>')
    body: list[str] = []
    for r, header in enumerate(sheet.row_headers):
        notes = "".join(f"<small>{_e(note)}</small>" for note in header.notes)
        cells = [f'<th scope="row">{_e(header.text)}{notes}</th>']
        for c in range(len(sheet.column_headers)):
            job = sheet.cells.get((r, c))
            if job is None:
                cells.append('<td class="empty" title="no job with these values"></td>')
            elif job.thumb:
                cells.append(
                    f'<td class="done"><img data-src="{_url(job.thumb)}"'
                    f' data-i="{item_of[job.key]}" alt="{_e(job.params.get("prompt", ""))}"'
                    f' title="#{_e(job.index)} seed {_e(job.params.get("seed", ""))}"></td>'
                )
            elif job.state == "failed":
                detail = f"{job.code if job.code is not None else ''} {job.error or ''}".strip()
                cells.append(f'<td class="failed" title="{_e(detail)}"><span>failed</span></td>')
            else:
                cells.append(f'<td class="pending"><span>{_e(job.state)}</span></td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    hidden = ""
    if sheet.hidden_rows or sheet.hidden_columns:
        hidden = (
            f'<p class="note">Showing the first {len(sheet.row_headers)} rows and'
            f" {len(sheet.column_headers)} columns: {sheet.hidden_rows} rows and {sheet.hidden_columns}"
            " columns more are in the gallery.</p>"
        )
    return (
        f'<figure class="sheet" id="sheet-{number}"><figcaption><b>{_e(sheet.title)}</b> '
        f'<a href="{_url(grid)}">PNG</a></figcaption>{hidden}'
        f'<div class="scroll"><table class="grid" data-rows="{len(sheet.row_headers)}"'
        f' data-columns="{len(sheet.column_headers)}"><thead>{"".join(head)}</thead>'
        f"<tbody>{''.join(body)}</tbody></table></div></figure>"
    )


def _gallery(jobs: Sequence[ReportJob]) -> tuple[list[ReportJob], dict[str, Any]]:
    """The jobs the gallery shows (those with a thumbnail), and the parameters they all share."""
    shown = [j for j in jobs if j.thumb and j.file]
    common: dict[str, Any] = {}
    if shown:
        first = shown[0].params
        common = {k: v for k, v in first.items() if all(j.params.get(k) == v for j in shown)}
    return shown, common


def _items(shown: Sequence[ReportJob], common: Mapping[str, Any]) -> Iterator[str]:
    """The gallery's data as JSON text, a piece at a time: the common parameters once, the
    rest per item (each object as strict JSON, without holding the whole)."""
    yield '{"common":' + _json(common) + ',"items":['
    for n, j in enumerate(shown):
        item = {
            "i": j.index,
            "k": j.key,
            "f": _url(j.file or ""),
            "t": _url(j.thumb or ""),
            "p": {k: v for k, v in j.params.items() if k not in common},
            "l": dict(j.labels),
            "r": j.request_id,
            "s": j.inference_time,
        }
        yield ("," if n else "") + _json(item)
    yield "]}"


def _json(value: Any) -> str:
    # Strict JSON (the page's script parses it); inside <script>, "</" would end it.
    return dumps(value, compact=True).replace("</", "<\\/")


@cache
def _asset(name: str) -> str:
    """A file of ``batchgen/report/assets`` (the page's CSS and script, inlined)."""
    return files("batchgen.report").joinpath("assets", name).read_text(encoding="utf-8")


def render_page(
    status: Status, jobs: Sequence[ReportJob], sheets: Sequence[Sheet], grids: Sequence[str]
) -> str:
    """The whole page as one string."""
    return "".join(_page(status, jobs, sheets, grids))


def _page(
    status: Status, jobs: Sequence[ReportJob], sheets: Sequence[Sheet], grids: Sequence[str]
) -> Iterator[str]:
    """The page, a piece at a time (:func:`write_report` writes them as they come)."""
    shown, common = _gallery(jobs)
    in_sheets = {job.key for sheet in sheets for job in sheet.cells.values()}
    item_of = {j.key: n for n, j in enumerate(shown) if j.key in in_sheets}
    sheets_html = "".join(
        _sheet_html(s, g, i + 1, item_of) for i, (s, g) in enumerate(zip(sheets, grids, strict=True))
    )
    if not sheets:
        sheets_html = (
            '<p class="none">No layout fits these jobs: a sheet needs something that varies across'
            " items (an aspect ratio, a seed, a style) with three quarters of its cells filled;"
            " <code>report: {rows, columns}</code> in the manifest chooses the axes.</p>"
        )
    title = _e(status.manifest.name or status.out_dir.name)
    count = len(shown)
    doubts = len(status.in_doubt)
    doubts_link = f' <a href="#in-doubt">Not known whether paid ({doubts})</a>' if doubts else ""
    yield f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>batchgen report: {title}</title>
<style>{_asset("report.css")}</style></head>
<body>
{_header(status, jobs)}
<nav><a href="#failures">Failures</a>{doubts_link} <a href="#sheets">Contact sheets ({len(sheets)})</a>
<a href="#gallery">Gallery ({count})</a></nav>
<main>
{_failures(jobs)}
{_in_doubt(status, jobs)}
<section id="sheets"><h2>Contact sheets <small>({len(sheets)})</small></h2>
<div class="sheets">{sheets_html}</div></section>
<section id="gallery"><h2>Gallery <small>({count})</small></h2>
<div class="bar"><input id="filter" type="search" autocomplete="off"
 placeholder="filter: words in the prompt or labels, or name=value (seed=12 mode=fast)">
<span id="count" aria-live="polite"></span></div>
<div id="thumbs"></div><div id="more"></div>
</section></main>
<dialog id="viewer"><form method="dialog"><button class="close" aria-label="close">×</button></form>
<div class="view"><a id="full-link" target="_blank"><img id="full" alt=""></a>
<div class="info"><p id="copied" role="status"></p><table id="params"></table></div></div></dialog>
<script type="application/json" id="data">"""
    yield from _items(shown, common)
    yield f"""</script>
<script>{_asset("report.js")}</script>
</body></html>
"""
