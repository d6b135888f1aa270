"""OUT/report.html: written at the end of a run, self-contained, and working in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchgen.cli.main import main
from batchgen.emulator import EmulatorConfig
from batchgen.engine.runner import run
from batchgen.engine.settings import RunSettings

MANIFEST = """\
name: report-test
defaults:
  mode: fast
  seed: 7
jobs:
  - prompt: "A {subject} in {style}"
    grid:
      subject: [fox, castle, owl]
      style: [ink, oil, clay]
report:
  rows: subject
  columns: style
output:
  filename: "{style}/{subject}"
"""


def run_manifest(tmp_path: Path, *, report: bool = True) -> Path:
    """9 jobs against the in-process emulator; 'castle in ink' is blocked by moderation."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    out = tmp_path / "out"
    config = EmulatorConfig(time_scale=0.001, workers=8, image_size=48, blocked_terms=("castle in ink",))

    async def go() -> None:
        summary = await run(
            manifest, out_dir=out, emulate=config, settings=RunSettings(seed=1, report=report), progress=False
        )
        assert summary.exit_code == 1  # the blocked job
        assert (summary.report_path is not None) is report

    anyio.run(go)
    return out


class Links(HTMLParser):
    """Every src and href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links.extend(v for k, v in attrs if k in ("src", "href") and v)


def test_the_run_writes_a_self_contained_report(tmp_path: Path) -> None:
    """report.html at the end of the run: relative links only, each to a file that exists."""
    out = run_manifest(tmp_path)
    page = (out / "report.html").read_text()
    parser = Links()
    parser.feed(page)
    files = [link for link in parser.links if not link.startswith("#")]
    assert files, "the page links its images"
    for link in files:
        assert not re.match(r"^[a-z]+:|^//", link), f"{link}: not a relative link"
        assert (out / link.replace("%20", " ")).is_file(), link
    assert "<link" not in page and "@import" not in page  # no stylesheet fetched from anywhere
    assert len(list((out / "thumbs").glob("*.jpg"))) == 8
    assert [p.name for p in (out / "grids").glob("*.png")] == ["01-subject-style.png"]
    # The failures table names the blocked job with the server's detail.
    assert "castle in ink" in page and "<td>422</td>" in page
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)[1])
    assert len(data["items"]) == 8 and data["common"]["seed"] == 7


def test_no_report_skips_it(tmp_path: Path) -> None:
    """--no-report (RunSettings(report=False)): no report.html, no thumbnails."""
    out = run_manifest(tmp_path, report=False)
    assert not (out / "report.html").exists() and not (out / "thumbs").exists()


def test_report_command_rewrites_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`batchgen report OUT` writes the page again (thumbnails already made are kept) and prints its path."""
    out = run_manifest(tmp_path)
    (out / "report.html").unlink()
    thumbs = {p: p.stat().st_mtime_ns for p in (out / "thumbs").iterdir()}
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    assert (out / "report.html").is_file()
    assert {p: p.stat().st_mtime_ns for p in (out / "thumbs").iterdir()} == thumbs
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def without_stamp(page: str) -> str:
    """The page without the moment it was written."""
    return re.sub(r"written [0-9T:.-]+Z", "written (now)", page)


def test_the_report_of_a_run_is_the_one_its_folder_gives(tmp_path: Path) -> None:
    """The page a run writes from memory is the page `batchgen report OUT` writes from the folder."""
    from batchgen.outcome.read import read_status
    from batchgen.report.page import write_report

    out = run_manifest(tmp_path)
    at_the_end = (out / "report.html").read_text()
    assert "written (now)" not in at_the_end and "written (now)" in without_stamp(at_the_end)
    write_report(read_status(out, keep_jobs=True))
    assert without_stamp((out / "report.html").read_text()) == without_stamp(at_the_end)


def test_a_report_without_its_manifest_shows_the_jobs_the_ledger_recorded(tmp_path: Path) -> None:
    """The manifest file is gone: `batchgen report OUT` still shows every image with the
    parameters and labels its submit recorded (replay keeps them only for this)."""
    from batchgen.outcome.read import read_status
    from batchgen.report.page import write_report

    out = run_manifest(tmp_path)
    (tmp_path / "m.yaml").unlink()
    status = read_status(out, keep_jobs=True)
    assert status.manifest.jobs is None and status.manifest.problem
    write_report(status)
    page = (out / "report.html").read_text()
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)[1])
    assert len(data["items"]) == 8 and data["common"]["seed"] == 7
    assert {item["p"]["prompt"] for item in data["items"]} >= {"A fox in ink", "A owl in clay"}


def test_the_report_of_a_run_does_not_read_its_manifest_again(tmp_path: Path) -> None:
    """A run's report places every job from the jobs it holds, even once its manifest file is gone."""
    from batchgen.manifest.load import load_manifest

    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST)
    manifest = load_manifest(path)
    path.unlink()
    out = tmp_path / "out"
    config = EmulatorConfig(time_scale=0.001, workers=8, image_size=48, blocked_terms=("castle in ink",))

    async def go() -> None:
        summary = await run(
            manifest, out_dir=out, emulate=config, settings=RunSettings(seed=1), progress=False
        )
        assert summary.exit_code == 1 and summary.report_path is not None

    anyio.run(go)
    page = (out / "report.html").read_text()
    assert "<h1>report-test</h1>" in page and "m.yaml not found" not in page
    assert [p.name for p in (out / "grids").glob("*.png")] == ["01-subject-style.png"]
    # Read from the folder instead, the manifest is missing: no name, no sheet, said so.
    assert main(["report", str(out)]) == 0
    again = (out / "report.html").read_text()
    assert "<h1>report-test</h1>" not in again and "m.yaml not found" in again


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(page: Path, fragment: str = "") -> str:
    """The DOM after the page's scripts ran, from a real headless Chromium."""
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,4000",
            "--virtual-time-budget=5000", "--dump-dom", page.as_uri() + fragment,
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


class Dom(HTMLParser):
    """What the browser test looks at: gallery figures and images, the sheet's table."""

    def __init__(self) -> None:
        super().__init__()
        self.gallery_imgs: list[dict[str, Any]] = []
        self.figures = 0
        self.sheet: dict[str, Any] | None = None
        self.rows: list[list[str]] = []
        self.count = ""
        self._in = {"thumbs": False, "count": False}
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id") == "thumbs":
            self._in["thumbs"] = True
        if a.get("id") == "count":
            self._in["count"] = True
        if self._in["thumbs"] and tag == "figure":
            self.figures += 1
        if self._in["thumbs"] and tag == "img":
            self.gallery_imgs.append(a)
        if tag == "table" and "grid" in (a.get("class") or ""):
            self.sheet = a
        if self.sheet is not None and tag == "tr":
            self.rows.append([])
        if self.sheet is not None and tag == "td" and self.rows:
            self.rows[-1].append(a.get("class") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._in["thumbs"] = False
        if tag == "span":
            self._in["count"] = False

    def handle_data(self, data: str) -> None:
        if self._in["count"]:
            self.count += data


@pytest.mark.e2e
@pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs Debian's chromium for a real browser (apt-get install chromium; .ci/run installs it)",
)
def test_report_in_a_real_browser(tmp_path: Path) -> None:
    """Headless Chromium: thumbnails load, a 3 x 3 sheet with the failed cell marked, the filter narrows."""
    out = run_manifest(tmp_path)
    dom = Dom()
    dom.feed(dump_dom(out / "report.html"))
    assert dom.figures == 8 and dom.count.strip() == "8 of 8 images"
    assert [img.get("data-state") for img in dom.gallery_imgs] == ["loaded"] * 8, "a thumbnail did not load"
    assert dom.sheet is not None and (dom.sheet["data-rows"], dom.sheet["data-columns"]) == ("3", "3")
    cells = [row for row in dom.rows if row]
    assert len(cells) == 3 and all(len(row) == 3 for row in cells)
    # Rows and columns in the order the manifest wrote them: fox, castle, owl; ink, oil, clay.
    assert cells[1] == ["failed", "done", "done"]  # castle in ink
    assert [c for row in cells for c in row].count("failed") == 1
    narrowed = Dom()
    narrowed.feed(dump_dom(out / "report.html", "#q=style%3Doil"))
    assert narrowed.figures == 3 and narrowed.count.strip() == "3 of 8 images"
    words = Dom()
    words.feed(dump_dom(out / "report.html", "#q=owl"))
    assert words.figures == 3


def test_a_stopped_report_leaves_the_page_as_it_was(tmp_path: Path) -> None:
    """write_report(stop=...) true before the page is written: ReportStopped, the old page untouched."""
    from batchgen.outcome.read import read_status
    from batchgen.report.page import ReportStopped, write_report

    out = run_manifest(tmp_path)
    before = (out / "report.html").read_bytes()
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return True

    with pytest.raises(ReportStopped):
        write_report(read_status(out, keep_jobs=True), stop=stop)
    assert asked and (out / "report.html").read_bytes() == before
    assert not list(out.glob("*.part"))


@pytest.mark.e2e
def test_an_interrupted_run_writes_the_report_of_what_is_done(tmp_path: Path) -> None:
    """Ctrl-C mid-run (a real process): exit 130, and report.html is written about what is done so
    far, saying the run stopped early; summary.json names it."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "jobs:\n  - prompt: a {subject}\n    grid: {subject: [fox, owl, cat], seed: '1-10'}\n"
    )
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "batchgen", "run", str(manifest), "--emulate", "--time-scale", "0.05",
            "--concurrency", "2", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        ledger = out / "ledger.jsonl"
        while not ledger.is_file() or ledger.read_text().count('"event":"completed"') < 3:
            assert time.monotonic() < deadline and proc.poll() is None, "the run did not get going"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"]["interrupted"] is True
    assert summary["report"] == str(out.resolve() / "report.html")
    page = (out / "report.html").read_text()
    assert "The last run stopped early (interrupted): this page shows what was done by then" in page
    done = summary["jobs"]["completed"]
    assert 3 <= done < 30 and f"<dt>completed</dt><dd>{done}</dd>" in page
    assert f"report: {out.resolve() / 'report.html'}" in stdout
    assert "writing the report of what is done so far" in stderr


class Pivot(HTMLParser):
    """The first contact sheet of a page: its header rows (text, colspan), its body rows' cell classes."""

    def __init__(self) -> None:
        super().__init__()
        self.head: list[list[tuple[str, int]]] = []
        self.body: list[list[str]] = []
        self._state = "before"  # before, in, after the first sheet
        self._part = ""
        self._text: list[str] | None = None
        self._span = 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if self._state == "before" and tag == "table" and "grid" in (a.get("class") or ""):
            self._state = "in"
        if self._state != "in":
            return
        if tag in ("thead", "tbody"):
            self._part = tag
        elif tag == "tr":
            if self._part == "thead":
                self.head.append([])
            else:
                self.body.append([])
        elif tag == "th" and self._part == "thead":
            self._text, self._span = [], int(a.get("colspan") or 1)
        elif tag == "td":
            self.body[-1].append(a.get("class") or "")

    def handle_endtag(self, tag: str) -> None:
        if self._state == "in" and tag == "table":
            self._state = "after"
        if tag == "th" and self._text is not None:
            self.head[-1].append(("".join(self._text).strip(), self._span))
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


@pytest.mark.e2e
@pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium for a real browser (apt-get install chromium)"
)
def test_a_csv_catalog_sheet_in_a_real_browser(tmp_path: Path) -> None:
    """Headless Chromium: the 30-product catalog's sheet has a header level per column name (ratios
    spanning their seeds), a row per product, and all 120 thumbnails in place."""
    from tests.report.test_sheets import write_catalog

    manifest = write_catalog(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--emulate", "--time-scale", "0.002", "--out", str(out)]) == 0
    pivot = Pivot()
    pivot.feed(dump_dom(out / "report.html"))
    assert pivot.head == [
        [("aspect_ratio", 1), ("1:1", 2), ("4:5", 2)],
        [("sku \\ seed #", 1), ("#1", 1), ("#2", 1), ("#1", 1), ("#2", 1)],
    ]
    assert len(pivot.body) == 30 and all(row == ["done"] * 4 for row in pivot.body)


class TestNotKnownWhetherPaid:
    """Jobs whose submit is in doubt at the end: a figure of their own, listed with what to do."""

    @pytest.fixture
    def anyio_backend(self, virtual_time: object) -> object:
        """On virtual time (tests/support/clock.py): the answers held back cost nothing."""
        return virtual_time

    @pytest.mark.anyio
    async def test_the_header_counts_them_and_the_page_lists_them(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Half the submits' answers come after --request-timeout and the history lags: the
        header shows them apart (the figures add up to the jobs), a section lists each with why."""
        from tests.support.clock import current_loop
        from tests.support.inprocess import BASE, emulator

        monkeypatch.setenv("SEGMIND_API_KEY", "test-key")
        manifest = tmp_path / "m.yaml"
        manifest.write_text(MANIFEST)
        out = tmp_path / "out"
        async with emulator(
            time_scale=0.001, workers=8, answer_delay=3.0, answer_delay_rate=0.5, history_lag=100000.0
        ) as emu:
            summary = await run(
                manifest,
                out_dir=out,
                client=emu.http,
                base_url=BASE,
                settings=RunSettings(seed=1, request_timeout=1.0),
                progress=False,
                wall_clock=current_loop().wall,
            )
        assert summary.uncertain > 0 and summary.exit_code == 1
        page = (out / "report.html").read_text()
        header = page[page.index("<header>") : page.index("</header>")]
        figures = dict(re.findall(r"<dt>([^<]+)</dt><dd>(?:<a[^>]*>)?([0-9?]+)", header))
        assert figures["not known whether paid"] == str(summary.uncertain)
        assert figures["completed"] == str(summary.completed)
        states = ("completed", "failed", "not known whether paid", "in flight", "not started")
        assert sum(int(figures[s]) for s in states) == int(figures["jobs"]) == 9
        section = page[page.index('<section id="in-doubt">') : page.index('<section id="sheets">')]
        assert f"Not known whether paid <small>({summary.uncertain})</small>" in section
        assert section.count("<tr data-key=") == summary.uncertain
        assert "no answer within 1 s" in section
        assert "Run the same command" in section and "--resubmit-uncertain" in section
