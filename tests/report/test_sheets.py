"""Contact sheets: the layout each kind of batch gets, the cells, and the labelled PNG grid."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from batchgen.manifest.pipeline import manifest_jobs
from batchgen.report import glyphs
from batchgen.report.grids import save_grid
from batchgen.report.sheets import MAX_ROWS, ReportJob, Sheet, contact_sheets

REPO = Path(__file__).resolve().parents[2]


def job(
    index: int, state: str = "completed", labels: dict[str, Any] | None = None, **params: Any
) -> ReportJob:
    params.setdefault("prompt", "a fox")
    params.setdefault("mode", "base")
    return ReportJob(
        f"{index:064x}", index, params, labels or {}, state, code=422 if state == "failed" else None
    )


def from_manifest(path: Path) -> tuple[list[ReportJob], dict[str, tuple[str, ...]]]:
    """A manifest's jobs as the report sees them (all completed), and its ``report:`` names."""
    found = manifest_jobs(path)
    jobs = [ReportJob(j.key, j.index, j.params.to_api(), dict(j.labels), "completed") for j in found]
    return jobs, dict(found.manifest.report)


def sheets_of(path: Path) -> list[Sheet]:
    jobs, report = from_manifest(path)
    return contact_sheets(jobs, rows=report.get("rows"), columns=report.get("columns"))


def shape(sheet: Sheet) -> tuple[str, int, int, int]:
    """Title, rows, columns and filled cells of a sheet."""
    return sheet.title, len(sheet.row_headers), len(sheet.column_headers), len(sheet.cells)


def every_job_once(sheets: list[Sheet], jobs: list[ReportJob]) -> bool:
    placed = [j.key for s in sheets for j in s.cells.values()]
    return sorted(placed) == sorted(j.key for j in jobs)


CATALOG = """\
name: catalog-30
defaults:
  mode: fast
jobs:
  - prompt: "Studio photo of a {color} {name}"
    rows: products.csv
    aspect_ratio: ["1:1", "4:5"]
    seeds: 2
output:
  filename: "{sku}/{aspect_ratio}-{seed}.png"
"""


def write_catalog(folder: Path, *, seeds: str = "seeds: 2") -> Path:
    """30 products in a CSV x 2 aspect ratios x 2 seeds (derived per product, or given)."""
    rows = ["sku,name,category,color"]
    rows += [f"SKU-{i:03d},product {i},{['bags', 'shoes', 'lamps'][i % 3]},red" for i in range(30)]
    (folder / "products.csv").write_text("\n".join(rows) + "\n")
    manifest = folder / "catalog.yaml"
    manifest.write_text(CATALOG.replace("seeds: 2", seeds))
    return manifest


def test_a_csv_catalog_is_a_row_per_product_and_a_column_per_ratio_and_seed(tmp_path: Path) -> None:
    """30 products x 2 aspect ratios x 2 derived seeds: one 30 x 4 sheet, the product's columns beside it."""
    jobs, _ = from_manifest(write_catalog(tmp_path))
    (sheet,) = contact_sheets(jobs)
    assert shape(sheet) == ("sku x aspect_ratio · seed #", 30, 4, 120)
    assert sheet.column_headers == [("1:1", "#1"), ("1:1", "#2"), ("4:5", "#1"), ("4:5", "#2")]
    assert sheet.row_headers[0].text == "SKU-000"
    assert sheet.row_headers[0].notes == ("name=product 0", "category=bags")
    # Each product's row holds its own four images.
    for r, header in enumerate(sheet.row_headers):
        assert {sheet.cells[(r, c)].labels["sku"] for c in range(4)} == {header.text}
        assert [sheet.cells[(r, c)].params["aspect_ratio"] for c in range(4)] == ["1:1", "1:1", "4:5", "4:5"]


def test_a_catalog_with_given_seeds_has_them_as_columns(tmp_path: Path) -> None:
    """The same catalog with `seed: [1, 2]`: the columns are ratio x seed, by value."""
    jobs, _ = from_manifest(write_catalog(tmp_path, seeds="seed: [1, 2]"))
    (sheet,) = contact_sheets(jobs)
    assert shape(sheet) == ("sku x aspect_ratio · seed", 30, 4, 120)
    assert sheet.column_headers == [("1:1", "1"), ("1:1", "2"), ("4:5", "1"), ("4:5", "2")]


def test_shipped_catalog_is_a_row_per_product_and_a_column_per_shot() -> None:
    """manifests/catalog.yaml: 36 products x packshot / lifestyle (each with its own seed)."""
    jobs, _ = from_manifest(REPO / "manifests" / "catalog.yaml")
    (sheet,) = sheets_of(REPO / "manifests" / "catalog.yaml")
    assert shape(sheet) == ("sku x shot", 36, 2, 72)
    assert sheet.column_headers == [("packshot",), ("lifestyle",)]
    assert sheet.row_headers[0] == replace(sheet.row_headers[0], text="BAG-001")
    assert every_job_once([sheet], jobs)


def test_shipped_sweep_is_seeds_by_setting() -> None:
    """manifests/sweep.yaml (report: rows seed, columns guidance and steps): one 10 x 6 sheet."""
    (sheet,) = sheets_of(REPO / "manifests" / "sweep.yaml")
    assert shape(sheet) == ("seed x text_guidance_scale · steps_num", 10, 6, 60)
    assert [h.text for h in sheet.row_headers[:3]] == ["1", "12", "23"]
    assert sheet.column_headers[:3] == [("5", "30"), ("5", "50"), ("7", "30")]


def sweep() -> list[ReportJob]:
    """10 seeds x 3 guidance scales x 2 step counts, like manifests/sweep.yaml."""
    combos = itertools.product(range(1, 101, 11), [5, 7, 9], [30, 50])
    return [job(i, seed=s, text_guidance_scale=g, steps_num=n) for i, (s, g, n) in enumerate(combos)]


def test_a_sweep_without_report_keys_is_seeds_by_setting() -> None:
    """No report: keys: rows are the seeds (the name with most values), columns every setting."""
    (sheet,) = contact_sheets(sweep())
    assert shape(sheet) == ("seed x text_guidance_scale · steps_num", 10, 6, 60)


def test_report_keys_override_and_a_left_out_crossing_name_makes_a_sheet_per_value() -> None:
    """report: {rows: seed, columns: text_guidance_scale}: one 10 x 3 sheet per step count."""
    sheets = contact_sheets(sweep(), rows="seed", columns="text_guidance_scale")
    assert [shape(s) for s in sheets] == [
        ("seed x text_guidance_scale, steps_num=30", 10, 3, 30),
        ("seed x text_guidance_scale, steps_num=50", 10, 3, 30),
    ]
    assert [h.text for h in sheets[0].row_headers[:3]] == ["1", "12", "23"]


def test_report_keys_take_lists_and_may_swap_the_axes() -> None:
    """report: {rows: [text_guidance_scale, steps_num], columns: seed}: settings by seeds."""
    (sheet,) = contact_sheets(sweep(), rows=("text_guidance_scale", "steps_num"), columns=("seed",))
    assert shape(sheet) == ("text_guidance_scale · steps_num x seed", 6, 10, 60)
    assert sheet.row_headers[1].text == "5 · 50"


def test_report_columns_the_rows_determine_are_left_out_and_a_bad_choice_falls_back() -> None:
    """catalog.yaml with columns [shot, aspect_ratio] (each product's own ratio): sku x shot; with rows
    that leave most cells empty (seed: a packshot seed and 36 lifestyle ones), the automatic sheet."""
    jobs, _ = from_manifest(REPO / "manifests" / "catalog.yaml")
    (sheet,) = contact_sheets(jobs, rows="sku", columns=("shot", "aspect_ratio"))
    assert shape(sheet) == ("sku x shot", 36, 2, 72)
    (sheet,) = contact_sheets(jobs, rows="seed", columns="shot")
    assert shape(sheet) == ("sku x shot", 36, 2, 72)


def test_shipped_demo_is_a_row_per_subject() -> None:
    """manifests/demo.yaml: 3 subjects x (2 styles x 2 seeds); the prompt made of them is no axis."""
    (sheet,) = sheets_of(REPO / "manifests" / "demo.yaml")
    assert shape(sheet) == ("subject x style · seed", 3, 4, 12)
    assert [h.text for h in sheet.row_headers] == [
        "lighthouse on a cliff",
        "red fox in the snow",
        "tea house in a bamboo forest",
    ]  # in the order written


def test_shipped_nightly_is_a_sheet_per_entry() -> None:
    """manifests/nightly.yaml: banners theme x seed #, social item x medium, the regression seeds in a row."""
    jobs, _ = from_manifest(REPO / "manifests" / "nightly.yaml")
    sheets = sheets_of(REPO / "manifests" / "nightly.yaml")
    assert [shape(s) for s in sheets] == [
        ("theme x seed #", 3, 2, 6),
        ("item x medium, slot=social", 2, 2, 4),
        ("seed, slot=regression", 1, 4, 4),
    ]
    assert sheets[0].row_headers[0].notes == ("slot=home",)
    assert sheets[2].column_headers == [("7",), ("77",), ("777",), ("7777",)]
    assert every_job_once(sheets, jobs)
    assert not any("—" in s.title or any("—" in h for c in s.column_headers for h in c) for s in sheets)


def test_a_mostly_empty_layout_gives_no_sheet() -> None:
    """Three quarters of a layout's cells must hold a job: a ragged set gets none."""
    jobs = [job(0, seed=1, text_guidance_scale=5), job(1, seed=2, text_guidance_scale=7)]
    jobs += [job(2, seed=3, text_guidance_scale=9), job(3, seed=1, text_guidance_scale=9)]
    jobs += [job(4 + i, seed=10 + i, text_guidance_scale=3 + i) for i in range(20)]
    assert contact_sheets(jobs) == []


def test_one_varying_name_is_a_strip_up_to_a_dozen() -> None:
    """Jobs that differ only by seed: one row of them; more than a dozen: no sheet (the gallery)."""
    (strip,) = contact_sheets([job(i, seed=i + 1) for i in range(6)])
    assert shape(strip) == ("seed", 1, 6, 6) and strip.rows == ()
    assert contact_sheets([job(i, seed=i + 1) for i in range(13)]) == []


def test_a_prompt_made_from_the_axes_is_not_an_axis() -> None:
    """A prompt rendered from the labels varies with them: it is neither a row, a column nor a sheet."""
    jobs = [
        job(i, labels={"subject": s, "style": t}, prompt=f"A {s}, {t}", seed=7)
        for i, (s, t) in enumerate(itertools.product(["fox", "owl", "cat"], ["ink", "oil"]))
    ]
    (sheet,) = contact_sheets(jobs)
    assert (sheet.rows, sheet.columns, sheet.fixed) == (("subject",), ("style",), ())


def test_failed_and_missing_cells() -> None:
    """A failed job keeps its cell; a combination no job has is an empty cell."""
    jobs = [
        job(i, "failed" if (s, t) == (2, 5) else "completed", seed=s, text_guidance_scale=t)
        for i, (s, t) in enumerate(itertools.product([1, 2, 3], [5, 7, 9]))
        if (s, t) != (3, 9)
    ]
    (sheet,) = contact_sheets(jobs, rows="seed", columns="text_guidance_scale")
    assert sheet.cells[(1, 0)].state == "failed"
    assert (2, 2) not in sheet.cells


def test_big_sheets_are_capped() -> None:
    """More rows than MAX_ROWS: the sheet keeps the first ones and says how many it left out."""
    jobs = [
        job(i, seed=s, text_guidance_scale=g)
        for i, (s, g) in enumerate(itertools.product(range(1, 81), [5, 7]))
    ]
    (sheet,) = contact_sheets(jobs, rows="seed", columns="text_guidance_scale")
    assert len(sheet.row_headers) == MAX_ROWS and sheet.hidden_rows == 80 - MAX_ROWS


def test_too_many_setting_columns_split_into_sheets() -> None:
    """5 styles x (4 seeds x 3 modes x 2 steps): 24 columns are too many; the innermost name makes sheets."""
    combos = itertools.product(range(1, 5), ["a", "b", "c", "d", "e"], ["base", "fast", "hd"], [20, 40])
    jobs = [
        job(i, labels={"style": st}, seed=s, mode=m, steps_num=n, prompt=f"a {st} fox")
        for i, (s, st, m, n) in enumerate(combos)
    ]
    sheets = contact_sheets(jobs)
    assert [shape(s) for s in sheets] == [
        ("style x seed · mode, steps_num=20", 5, 12, 60),
        ("style x seed · mode, steps_num=40", 5, 12, 60),
    ]


def test_png_grid_is_labelled_with_the_failed_cell_marked(tmp_path: Path) -> None:
    """The PNG has a cell per value pair: thumbnails pasted, a failed cell drawn in red."""
    thumb = tmp_path / "thumbs" / "t.jpg"
    thumb.parent.mkdir()
    Image.new("RGB", (64, 64), (0, 90, 200)).save(thumb)
    jobs = [
        job(i, "failed" if i == 1 else "completed", seed=s, text_guidance_scale=g)
        for i, (s, g) in enumerate(itertools.product([1, 2], [5, 7]))
    ]
    jobs = [j if j.state == "failed" else replace(j, thumb="thumbs/t.jpg") for j in jobs]
    (sheet,) = contact_sheets(jobs, rows="seed", columns="text_guidance_scale")
    rel = save_grid(sheet, tmp_path, "01-test", cell=128)
    assert rel == "grids/01-test.png"
    with Image.open(tmp_path / rel) as grid:
        grid = grid.convert("RGB")
        # The cells fill the bottom right corner: sample each cell's centre from there.
        right, bottom = grid.width - 128 // 16, grid.height - 128 // 16
        centre = [
            grid.getpixel((right - (2 - c) * 128 + 40, bottom - (2 - r) * 128 + 64))
            for r in range(2)
            for c in range(2)
        ]
    assert centre[0] == centre[2] == centre[3] == (0, 90, 200)  # thumbnails (JPEG: near enough)
    assert centre[1] == (253, 226, 226)  # the failed cell


class Recorder:
    """Every string a grid draws, and the font it draws it in."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.drawn: list[tuple[str, Any]] = []
        original = ImageDraw.ImageDraw.text

        def text(draw: ImageDraw.ImageDraw, xy: Any, text: str, *args: Any, **kw: Any) -> None:
            self.drawn.append((text, kw.get("font")))
            original(draw, xy, text, *args, **kw)

        monkeypatch.setattr(ImageDraw.ImageDraw, "text", text)


HOSTILE = ["Café crème — «日本の急須» → ☐", "naïve\nline\ttab", "emoji 🦊 ok", "plain"]


@pytest.mark.parametrize("files", [glyphs.FONT_FILES, ("no-such-font.ttf",)], ids=["system", "pillow"])
def test_every_character_a_grid_draws_has_a_glyph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: tuple[str, ...]
) -> None:
    """Labels in any script and the grid's own signs render in the font used (no missing-glyph boxes),
    with a system font and with Pillow's own (which lacks é, — and →)."""
    chosen = glyphs.font.__wrapped__  # uncached, so each case gets the font it asks for
    monkeypatch.setattr("batchgen.report.grids.font", lambda size: chosen(size, files))
    jobs = [
        job(i, labels={"style": style, "subject": subject}, prompt=f"{subject} {style}", seed=7)
        for i, (subject, style) in enumerate(itertools.product(HOSTILE, ["ink ✓", "oil—paint"]))
    ]
    (sheet,) = contact_sheets(jobs)
    recorder = Recorder(monkeypatch)
    save_grid(sheet, tmp_path, "glyphs", cell=96)
    assert recorder.drawn
    faces = {id(face): face for _, face in recorder.drawn}
    for face in faces.values():
        missing = bytes(face.getmask("\U0010fffd"))
        for text, used in recorder.drawn:
            if used is face:
                lacking = {c for c in text if not c.isspace() and bytes(face.getmask(c)) == missing}
                assert not lacking, f"{text!r}: no glyph for {sorted(lacking)}"
    drawn = " ".join(text for text, _ in recorder.drawn)
    assert "Caf" in drawn and "subject" in drawn  # the labels are there, not dropped


def test_a_font_keeps_what_it_has_and_replaces_what_it_lacks() -> None:
    """Pillow's own font has no é or —: they become e and -, an unknown sign ?, plain text stays."""
    pillow = glyphs.font.__wrapped__(12, ("no-such-font.ttf",))
    assert pillow.name == "Pillow default"
    assert pillow.drawable("Café — x → y ☐") == "Cafe - x -> y ?"
    assert pillow.drawable("plain ASCII, 12:34") == "plain ASCII, 12:34"
