"""Contact sheets: which axes, which Z sheets, which cells; the labelled PNG grid."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from PIL import Image

from batchgen.report.sheets import MAX_ROWS, ReportJob, contact_sheets, save_grid


def job(
    index: int, state: str = "completed", labels: dict[str, Any] | None = None, **params: Any
) -> ReportJob:
    params.setdefault("prompt", "a fox")
    params.setdefault("mode", "base")
    return ReportJob(
        f"{index:064x}", index, params, labels or {}, state, code=422 if state == "failed" else None
    )


def sweep() -> list[ReportJob]:
    """10 seeds x 3 guidance scales x 2 step counts, like manifests/sweep.yaml."""
    combos = itertools.product(range(1, 101, 11), [5, 7, 9], [30, 50])
    return [job(i, seed=s, text_guidance_scale=g, steps_num=n) for i, (s, g, n) in enumerate(combos)]


def test_manifest_axes_and_a_z_sheet_per_remaining_value() -> None:
    """report: {rows: seed, columns: text_guidance_scale} gives one 10 x 3 sheet per step count."""
    sheets = contact_sheets(sweep(), rows="seed", columns="text_guidance_scale")
    assert [s.title for s in sheets] == [
        "seed x text_guidance_scale, steps_num=30",
        "seed x text_guidance_scale, steps_num=50",
    ]
    for sheet in sheets:
        assert (len(sheet.row_values), len(sheet.column_values), len(sheet.cells)) == (10, 3, 30)
        assert sheet.row_values[:3] == [1, 12, 23] and sheet.column_values == [5, 7, 9]


def test_without_report_keys_the_axes_with_most_values() -> None:
    """No report keys: rows and columns are the two names with the most values."""
    sheets = contact_sheets(sweep())
    assert (sheets[0].rows, sheets[0].columns) == ("seed", "text_guidance_scale")


def test_a_prompt_made_from_the_axes_is_not_a_z_axis() -> None:
    """A prompt rendered from the labels on the axes varies with them: it splits nothing."""
    jobs = [
        job(i, labels={"subject": s, "style": t}, prompt=f"A {s}, {t}", seed=7)
        for i, (s, t) in enumerate(itertools.product(["fox", "owl", "cat"], ["ink", "oil"]))
    ]
    (sheet,) = contact_sheets(jobs)
    assert (sheet.rows, sheet.columns, sheet.fixed) == ("subject", "style", ())


def test_a_mostly_empty_pair_is_passed_over() -> None:
    """A catalog's derived seeds differ per product: seed x sku is empty; sku x shot fills."""
    jobs = []
    for n in range(12):
        sku = f"SKU-{n:02d}"
        for shot, seed in (("packshot", 1234), ("lifestyle", 5000 + n)):
            labels = {"sku": sku, "name": f"product {n}", "shot": shot}
            jobs.append(job(len(jobs), labels=labels, prompt=f"{shot} of product {n}", seed=seed))
    (sheet,) = contact_sheets(jobs)
    assert {sheet.rows, sheet.columns} == {"sku", "shot"} or {sheet.rows, sheet.columns} == {"name", "shot"}
    assert len(sheet.cells) == 24


def test_one_varying_name_makes_no_sheet() -> None:
    """Jobs that differ only by seed have no second axis: no contact sheet (the gallery shows them)."""
    assert contact_sheets([job(i, seed=i + 1) for i in range(6)]) == []


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
    assert len(sheet.row_values) == MAX_ROWS and sheet.hidden_rows == 80 - MAX_ROWS


def test_png_grid_is_labelled_with_the_failed_cell_marked(tmp_path: Path) -> None:
    """The PNG has a cell per value pair: thumbnails pasted, a failed cell drawn in red."""
    thumb = tmp_path / "thumbs" / "t.jpg"
    thumb.parent.mkdir()
    Image.new("RGB", (64, 64), (0, 90, 200)).save(thumb)
    jobs = [
        job(i, "failed" if i == 1 else "completed", seed=s, text_guidance_scale=g)
        for i, (s, g) in enumerate(itertools.product([1, 2], [5, 7]))
    ]
    jobs = [j if j.state == "failed" else _with_thumb(j, "thumbs/t.jpg") for j in jobs]
    (sheet,) = contact_sheets(jobs, rows="seed", columns="text_guidance_scale")
    rel = save_grid(sheet, tmp_path, "01-test", cell=128)
    assert rel == "grids/01-test.png"
    with Image.open(tmp_path / rel) as grid:
        grid = grid.convert("RGB")
        # Cells start at x=128 (one header column), y=title+header; sample each cell's centre.
        top = 128 // 4 + 128 // 16 + 128 // 4
        centre = [grid.getpixel((128 + c * 128 + 40, top + r * 128 + 64)) for r in range(2) for c in range(2)]
    assert centre[0] == centre[2] == centre[3] == (0, 90, 200)  # thumbnails (JPEG: near enough)
    assert centre[1] == (253, 226, 226)  # the failed cell


def _with_thumb(j: ReportJob, thumb: str) -> ReportJob:
    from dataclasses import replace

    return replace(j, thumb=thumb)
