"""Dynamic prompts in a manifest: jobs, keys, templates recorded, errors located, the job cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.errors import ManifestError, UsageError
from batchgen.manifest.expand import count_jobs, expand
from batchgen.manifest.load import load_manifest
from batchgen.manifest.pipeline import manifest_jobs


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return [str(p) for p in info.value.problems]


def test_plain_prompts_keep_their_keys(tmp_path: Path) -> None:
    """A manifest without dynamic syntax expands to the keys it always had (pinned)."""
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: a {c} bag\n    grid: {c: [red]}\n    seeds: 1\n")
    (job,) = expand(load_manifest(path))
    assert job.params.prompt == "a red bag"
    assert (job.seed, job.key[:16]) == (717385, "50521982c2218ed7")  # as on main before dynamic prompts
    assert job.template == "a {c} bag"


def test_each_combination_is_a_job_in_order(tmp_path: Path) -> None:
    """Prompt combinations come after the grid, before seeds; each job records its template."""
    text = "jobs:\n  - prompt: a {red|blue} {item}\n    grid: {item: [bag, hat]}\n    seeds: 2\n"
    jobs = list(expand(load_manifest(write(tmp_path / "m.yaml", text))))
    assert [j.params.prompt for j in jobs] == ["a red bag"] * 2 + ["a blue bag"] * 2 + ["a red hat"] * 2 + [
        "a blue hat"
    ] * 2
    assert len({(j.params.prompt, j.seed) for j in jobs}) == 8
    assert {j.template for j in jobs} == {"a {red|blue} {item}"}
    assert jobs[0].to_json()["template"] == "a {red|blue} {item}"


def test_keys_are_content_derived(tmp_path: Path) -> None:
    """A job's key is its resolved content: the same prompt written plainly has the same key."""
    dynamic = load_manifest(write(tmp_path / "a.yaml", "jobs:\n  - prompt: a {red|blue} cat\n"))
    plain = load_manifest(write(tmp_path / "b.yaml", "jobs:\n  - prompt: a blue cat\n"))
    assert list(expand(dynamic))[1].key == list(expand(plain))[0].key


def test_prompts_in_csv_cells_and_grid_axes_are_dynamic(tmp_path: Path) -> None:
    """A CSV prompt cell and a prompt grid axis are templates too, counted per value."""
    write(tmp_path / "p.csv", "prompt,sku\na {red|blue} mug,M1\na plain mug,M2\n")
    text = "jobs:\n  - rows: p.csv\n  - prompt: x\n    grid:\n      prompt: ['{a|b|c}', d]\n"
    manifest = load_manifest(write(tmp_path / "m.yaml", text))
    assert count_jobs(manifest) == 3 + 4
    assert [j.params.prompt for j in expand(manifest)] == [
        "a red mug",
        "a blue mug",
        "a plain mug",
        "a",
        "b",
        "c",
        "d",
    ]


def test_errors_are_located_to_the_column(tmp_path: Path) -> None:
    """A syntax error in a prompt is FILE:LINE:COLUMN for plain, quoted and block prompts."""
    text = (
        "jobs:\n"
        "  - prompt: a {red|blue\n"
        '  - prompt: "x {~a|b}"\n'
        "  - prompt: |\n"
        "      first line\n"
        "      then {}\n"
        "  - grid:\n"
        "      prompt: [ok, 'b {c|d']\n"
    )
    path = write(tmp_path / "m.yaml", text)
    found = problems(path)
    assert found == [
        f"{path}:2:15: jobs[0].prompt: invalid template: a '{{' that is never closed",
        f"{path}:3:17: jobs[1].prompt: invalid template: the sampler prefix '~' is not supported:"
        " batchgen samples a whole job one way (every combination, or `sample:` random draws)",
        f"{path}:6:12: jobs[2].prompt: invalid template: {{}} is not a field: use {{name}} with letters,"
        " digits, _ or - (no attribute or index access)",
        f"{path}:8:23: jobs[3].grid.prompt[1]: invalid template: a '{{' that is never closed",
    ]


def test_a_csv_cell_error_names_the_character(tmp_path: Path) -> None:
    """A CSV cell has no reliable column: the error names the row's line and the character."""
    write(tmp_path / "p.csv", 'prompt\nok\n"x {a|b"\n')
    assert problems(tmp_path / "p.csv") == [
        f"{tmp_path}/p.csv:3: column prompt: invalid template: a '{{' that is never closed (character 3)"
    ]


def test_the_job_cap_counts_combinations(tmp_path: Path) -> None:
    """A prompt of 10**12 combinations is refused by arithmetic, in a moment."""
    options = "|".join(str(i) for i in range(10))
    text = "jobs:\n  - prompt: '" + " ".join("{" + options + "}" for _ in range(12)) + "'\n"
    with pytest.raises(UsageError, match="expands to 1,000,000,000,000 jobs"):
        manifest_jobs(write(tmp_path / "m.yaml", text))


def test_an_empty_choice_leaves_no_stray_spaces(tmp_path: Path) -> None:
    """Choices that leave nothing do not leave double spaces or spaces at the ends."""
    text = "jobs:\n  - prompt: '${s=winter} a {0-1$$big} dog in ${s}'\n"
    assert [j.params.prompt for j in expand(load_manifest(write(tmp_path / "m.yaml", text)))] == [
        "a dog in winter",
        "a big dog in winter",
    ]
