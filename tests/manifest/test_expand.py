"""Expanding manifests into jobs: counts, order, precedence, seeds, keys, filenames."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from batchgen.errors import ManifestError, TemplateError, UsageError
from batchgen.manifest.expand import count_jobs, derive_seeds, expand
from batchgen.manifest.job import Job
from batchgen.manifest.load import load_manifest
from batchgen.manifest.params import DEFAULT_SEED, SEED_MAX, SEED_MIN
from batchgen.manifest.pipeline import check_job_cap, manifest_jobs
from batchgen.manifest.template import parse_template

ISSUE_EXAMPLE = """\
name: spring-catalog
model: bria-text-to-image
defaults:
  mode: base
  aspect_ratio: "4:5"
  prompt_enhancement: false
  negative_prompt: "text, watermark, blurry"
jobs:
  - prompt: "Studio photo of a {color} {item} on a white seamless background"
    grid:
      color: [red, navy, olive]
      item: [tote bag, backpack]
      seed: "1-3"
  - prompt: "{subject}, {style}"
    zip:
      subject: [a lighthouse, a barn]
      style: [oil painting, watercolor]
    medium: art
  - prompt: "Lifestyle photo of {name}, {material}, soft daylight"
    rows: products.csv
    seeds: 2
  - prompt: "A ceramic mug, minimal"
    seed: 42
output:
  filename: "{sku}/{seed}-{key}.png"
"""

PRODUCTS = "sku,name,material\nA1,Canvas tote,cotton canvas\nA2,Daypack,recycled nylon\nA3,Clutch,satin\n"


def jobs_of(directory: Path, text: str, name: str = "m.yaml") -> list[Job]:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return list(expand(load_manifest(path)))


def test_issue_example_counts_and_order(tmp_path: Path) -> None:
    """The issue's example: 18 grid jobs (last axis fastest), 2 zipped, 2 seeds x 3 rows, 1 fixed."""
    (tmp_path / "products.csv").write_text(PRODUCTS)
    (tmp_path / "m.yaml").write_text(ISSUE_EXAMPLE)
    manifest = load_manifest(tmp_path / "m.yaml")
    assert count_jobs(manifest) == 18 + 2 + 6 + 1
    jobs = list(expand(manifest))
    assert [j.index for j in jobs] == list(range(27))
    grid = [(j.labels["color"], j.labels["item"], j.seed) for j in jobs[:18]]
    assert grid == list(itertools.product(["red", "navy", "olive"], ["tote bag", "backpack"], [1, 2, 3]))
    assert jobs[0].params.prompt == "Studio photo of a red tote bag on a white seamless background"
    assert [(j.labels, j.params.medium) for j in jobs[18:20]] == [
        ({"subject": "a lighthouse", "style": "oil painting"}, "art"),
        ({"subject": "a barn", "style": "watercolor"}, "art"),
    ]
    assert [j.labels["sku"] for j in jobs[20:26]] == ["A1", "A1", "A2", "A2", "A3", "A3"]
    assert jobs[26].seed == 42 and jobs[26].labels == {}
    assert all(j.params.aspect_ratio == "4:5" and j.params.prompt_enhancement is False for j in jobs)
    assert jobs[20].filename == f"A1/{jobs[20].seed}-{jobs[20].short_key}.png"
    assert jobs[26].filename == f"42-{jobs[26].short_key}.png"


def test_same_manifest_same_jobs(tmp_path: Path) -> None:
    """Expanding twice (or loading twice) gives the same jobs, keys, seeds and order."""
    (tmp_path / "products.csv").write_text(PRODUCTS)
    first = jobs_of(tmp_path, ISSUE_EXAMPLE)
    second = jobs_of(tmp_path, ISSUE_EXAMPLE)
    assert [j.to_json() for j in first] == [j.to_json() for j in second]
    assert len({j.key for j in first}) == len(first)


def test_precedence(tmp_path: Path) -> None:
    """API defaults < defaults < job fields < grid/zip/row values."""
    (tmp_path / "rows.csv").write_text("steps_num,sku\n22,A\n,B\n")
    text = (
        "defaults:\n  steps_num: 30\n  mode: fast\n"
        "jobs:\n"
        "  - prompt: a\n"
        "  - prompt: b\n    steps_num: 35\n"
        "  - prompt: c\n    steps_num: 35\n    grid:\n      steps_num: [45]\n"
        "  - prompt: d\n    steps_num: 35\n    zip:\n      steps_num: [46]\n"
        "  - prompt: e {sku}\n    steps_num: 35\n    rows: rows.csv\n"
    )
    jobs = jobs_of(tmp_path, text)
    assert [j.params.steps_num for j in jobs] == [30, 35, 45, 46, 22, 35]
    assert all(j.params.mode == "fast" for j in jobs)  # from defaults
    assert all(j.params.text_guidance_scale == 7.0 and j.params.medium == "photography" for j in jobs)


def test_default_seed_is_written_out(tmp_path: Path) -> None:
    """A job with no seed at all carries the API default 654321 explicitly."""
    (job,) = jobs_of(tmp_path, "jobs:\n  - prompt: a mug\n")
    assert job.seed == DEFAULT_SEED
    assert job.to_json()["params"]["seed"] == 654321


def test_derived_seeds_survive_an_inserted_row(tmp_path: Path) -> None:
    """Inserting a CSV row leaves every other row's seeds and keys unchanged."""
    text = "jobs:\n  - prompt: photo of {name}\n    rows: p.csv\n    seeds: 3\n"
    (tmp_path / "p.csv").write_text("sku,name\nA1,tote\nA2,backpack\nA3,clutch\n")
    before = jobs_of(tmp_path, text)
    (tmp_path / "p.csv").write_text("sku,name\nA1,tote\nA9,wallet\nA2,backpack\nA3,clutch\n")
    after = jobs_of(tmp_path, text)
    assert len(before) == 9 and len(after) == 12

    def by_sku(jobs: list[Job]) -> dict[str, list[tuple[int, str]]]:
        out: dict[str, list[tuple[int, str]]] = {}
        for j in jobs:
            out.setdefault(str(j.labels["sku"]), []).append((j.seed, j.key))
        return out

    old, new = by_sku(before), by_sku(after)
    assert {sku: new[sku] for sku in old} == old
    assert len({j.seed for j in before}) == 9  # three distinct seeds per row, and rows differ


def test_derive_seeds_is_pure_distinct_and_in_range() -> None:
    """Derived seeds depend only on the content, are distinct and lie in 1..999999."""
    seeds = derive_seeds("content", 500)
    assert seeds == derive_seeds("content", 500)
    assert derive_seeds("content", 3) == seeds[:3]
    assert len(set(seeds)) == 500
    assert all(SEED_MIN <= s <= SEED_MAX for s in seeds)
    assert derive_seeds("other", 3) != seeds[:3]


def test_row_seed_overrides_seeds(tmp_path: Path) -> None:
    """A row with its own seed cell is one job; rows with an empty seed cell get N derived seeds."""
    (tmp_path / "p.csv").write_text("sku,seed\nA1,7\nA2,\n")
    manifest_path = tmp_path / "m.yaml"
    manifest_path.write_text("jobs:\n  - prompt: a {sku}\n    rows: p.csv\n    seeds: 4\n")
    manifest = load_manifest(manifest_path)
    jobs = list(expand(manifest))
    assert count_jobs(manifest) == len(jobs) == 5
    assert [j.seed for j in jobs][0] == 7


def test_seed_lists_and_stepped_ranges(tmp_path: Path) -> None:
    """seed may be a list or a stepped range anywhere a parameter goes, becoming an axis."""
    jobs = jobs_of(
        tmp_path, 'defaults:\n  seed: "1-100 (+10)"\njobs:\n  - prompt: a\n  - prompt: b\n    seed: [5, 6]\n'
    )
    assert [j.seed for j in jobs] == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 5, 6]


def test_grid_and_zip_combine(tmp_path: Path) -> None:
    """grid and zip combine as the product of the zipped tuples with the grid (zip outer)."""
    text = (
        "jobs:\n  - prompt: '{a}{b}{c}'\n"
        "    zip:\n      a: [x, y]\n      b: [1, 2]\n"
        "    grid:\n      c: [p, q, r]\n"
    )
    jobs = jobs_of(tmp_path, text)
    assert [j.params.prompt for j in jobs] == ["x1p", "x1q", "x1r", "y2p", "y2q", "y2r"]


def test_duplicates_are_dropped_and_counted(tmp_path: Path) -> None:
    """Two jobs with the same key are one job; the expansion counts what it dropped."""
    path = tmp_path / "m.yaml"
    path.write_text(
        "jobs:\n  - prompt: a {c}\n    grid:\n      c: [red, red, blue]\n"
        "  - prompt: a blue\n    labels:\n      c: blue\n"
    )
    manifest = load_manifest(path)
    expansion = expand(manifest)
    jobs = list(expansion)
    assert count_jobs(manifest) == 4
    assert [j.index for j in jobs] == [0, 1]
    assert expansion.duplicates == 2
    assert manifest_jobs(manifest).count().duplicates == 2


def test_huge_grid_is_counted_and_refused_without_expansion(tmp_path: Path) -> None:
    """A 10**12-job grid is counted arithmetically and refused by the cap; iteration stays lazy."""
    axes = "".join(f'      l{i}: "1-1000"\n' for i in range(3))
    path = tmp_path / "big.yaml"
    path.write_text(f'jobs:\n  - prompt: "{{l0}} {{l1}} {{l2}}"\n    grid:\n{axes}      seed: "1-1000"\n')
    manifest = load_manifest(path)
    assert count_jobs(manifest) == 10**12
    with pytest.raises(UsageError, match="1,000,000,000,000 jobs, more than the limit of 100,000"):
        check_job_cap(manifest)
    with pytest.raises(UsageError):
        manifest_jobs(manifest)
    assert check_job_cap(manifest, 10**12) == 10**12
    first = next(iter(expand(manifest)))
    assert (first.params.prompt, first.seed) == ("1 1 1", 1)


def test_default_filename_and_template_fields(tmp_path: Path) -> None:
    """Default filename is {index:05d}-{key}.png; templates see labels, params, index, key and name."""
    jobs = jobs_of(tmp_path, "jobs:\n  - prompt: a\n    seed: [3, 4]\n")
    assert [j.filename for j in jobs] == [f"00000-{jobs[0].short_key}.png", f"00001-{jobs[1].short_key}.png"]
    text = (
        "name: run1\njobs:\n  - prompt: a\n    labels:\n      sku: A/1\n"
        "output:\n  filename: '{name}-{sku}-{mode}-{seed:07d}'\n"
    )
    (job,) = jobs_of(tmp_path, text)
    assert job.filename == "run1-A_1-base-0654321.png"  # a label's / makes no folder


def test_label_called_name_wins_over_run_name(tmp_path: Path) -> None:
    """In filenames a label called name (e.g. a CSV column) takes precedence over the run name."""
    (tmp_path / "p.csv").write_text("name\ntote\n")
    (job,) = jobs_of(
        tmp_path,
        "name: run\njobs:\n  - prompt: '{name}'\n    rows: p.csv\noutput:\n  filename: '{name}.png'\n",
    )
    assert job.filename == "tote.png"


def test_filename_collision_is_an_error(tmp_path: Path) -> None:
    """Two different jobs rendering the same filename are refused, naming output.filename."""
    path = tmp_path / "m.yaml"
    path.write_text("jobs:\n  - prompt: a\n    seed: [1, 2]\noutput:\n  filename: same.png\n")
    with pytest.raises(ManifestError) as info:
        manifest_jobs(load_manifest(path)).count()
    assert str(info.value) == (
        f"{path}:5: output.filename: jobs 0 and 1 would both write same.png;"
        " add {key} or {index} to the template"
    )


def test_template_parser() -> None:
    """Templates support {name}, {name:05d} and {{ }} escapes, and nothing that reaches objects."""
    template = parse_template("{{x}} {a}-{n:04d}-{n:3d}")
    assert template.names == ("a", "n")
    assert template.render({"a": True, "n": 7}) == "{x} true-0007-  7"
    assert parse_template("{gs}").render({"gs": 7.0}) == "7"
    for bad in ("{a.b}", "{a[0]}", "{a!r}", "{a:>5}", "{}", "{a", "a}", "{0}"):
        with pytest.raises(TemplateError):
            parse_template(bad)
