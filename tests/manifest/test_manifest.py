"""Loading and validating manifests: every problem located as FILE:LINE: where: what."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from batchgen.errors import ManifestError
from batchgen.manifest.load import load_manifest
from batchgen.manifest.model import Manifest
from batchgen.manifest.runname import MAX_RUN_NAME_BYTES
from batchgen.manifest.shard import MAX_SHARDS, Shard
from batchgen.manifest.values import parse_range


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path | str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return [str(p) for p in info.value.problems]


def load(directory: Path, text: str, name: str = "m.yaml") -> Manifest:
    return load_manifest(write(directory, name, text))


def test_loads_name_model_hash_and_defaults(tmp_path: Path) -> None:
    """A minimal manifest gets the file stem as name, the default model and the file's sha256."""
    path = write(tmp_path, "spring.yaml", "jobs:\n  - prompt: a red tote bag\n")
    manifest = load_manifest(path)
    assert manifest.name == "spring"
    assert manifest.model == "bria-text-to-image"
    assert manifest.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest.warnings == []
    assert manifest.path == path


def test_out_of_range_grid_value_is_located_like_the_issue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grid value above the maximum names file, line, the exact list item and the limit."""
    monkeypatch.chdir(tmp_path)
    lines = ["name: catalog", "defaults:", "  mode: base", "jobs:", "  - prompt: a mug", "  - prompt: a bag"]
    lines += ["    grid:", "      color: [red, blue]", "      steps_num:"]
    lines += ["        - 30", "        - 40"]
    lines += ["        # the next one is too many steps", ""]
    lines += ["        - 60"]
    write(tmp_path, "catalog.yaml", "\n".join(lines) + "\n")
    assert problems("catalog.yaml") == [
        "catalog.yaml:14: jobs[1].grid.steps_num[2]: 60 is above the maximum 50"
    ]


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    """A YAML syntax error is one located problem, not a traceback."""
    path = write(tmp_path, "m.yaml", "jobs:\n  - prompt: [unclosed\n  - prompt: b\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:")
    assert "YAML syntax error" in problem


def test_unknown_keys_get_did_you_mean(tmp_path: Path) -> None:
    """Unknown keys at the top, in a job and in defaults are errors with a suggestion."""
    text = "defualts:\n  mode: base\njobs:\n  - prompt: a\n    step_num: 30\noutput:\n  filenme: x.png\n"
    found = problems(write(tmp_path, "m.yaml", text))
    assert found[0].endswith(
        ":1: unknown key 'defualts' (did you mean defaults?); allowed: "
        "name, model, defaults, jobs, output, report, wildcards"
    )
    assert ":5: jobs[0]: unknown key 'step_num' (did you mean steps_num?)" in found[1]
    assert ":7: output: unknown key 'filenme' (did you mean filename?)" in found[2]


def test_wrong_types_are_reported(tmp_path: Path) -> None:
    """Wrong types name the field: a text for an integer, a list for a mapping, a mapping for a list."""
    text = "jobs:\n  - prompt: a\n    steps_num: many\n    grid: [1, 2]\n  - prompt: b\n    seed: {x: 1}\n"
    found = problems(write(tmp_path, "m.yaml", text))
    assert found == [
        f"{tmp_path}/m.yaml:3: jobs[0].steps_num: 'many' is not an integer",
        f"{tmp_path}/m.yaml:4: jobs[0].grid: must be a mapping, not a list",
        f"{tmp_path}/m.yaml:6: jobs[1].seed: must be a value or a list, not a mapping",
    ]
    assert problems(write(tmp_path, "n.yaml", "jobs:\n  prompt: a\n")) == [
        f"{tmp_path}/n.yaml:1: jobs: must be a list of jobs, not a mapping"
    ]


def test_values_not_allowed_and_booleans(tmp_path: Path) -> None:
    """A value outside the allowed set lists the choices; a non-boolean says so."""
    text = 'defaults:\n  aspect_ratio: "4:7"\n  ip_signal: maybe\njobs:\n  - prompt: a\n    mode: turbo\n'
    found = problems(write(tmp_path, "m.yaml", text))
    assert ":2: defaults.aspect_ratio: '4:7' is not allowed; choose one of" in found[0]
    assert ":3: defaults.ip_signal: 'maybe' is not a boolean" in found[1]
    assert ":6: jobs[0].mode: 'turbo' is not allowed; choose one of 'base', 'fast' or 'hd'" in found[2]


def test_unequal_zip_lengths(tmp_path: Path) -> None:
    """Zip lists of different lengths are an error that gives each length."""
    text = "jobs:\n  - prompt: '{a} {b}'\n    zip:\n      a: [1, 2, 3]\n      b: [x, y]\n"
    assert problems(write(tmp_path, "m.yaml", text)) == [
        f"{tmp_path}/m.yaml:3: jobs[0].zip: lists must have equal lengths: a has 3, b has 2"
    ]


def test_missing_csv_file_and_missing_column(tmp_path: Path) -> None:
    """A missing CSV is located at its rows: line; a template naming no column is undefined."""
    write(tmp_path, "p.csv", "sku,name\nA1,tote\n")
    text = (
        "jobs:\n  - prompt: '{name}'\n    rows: nope.csv\n"
        "  - prompt: '{name} in {material}'\n    rows: p.csv\n"
    )
    found = problems(write(tmp_path, "m.yaml", text))
    assert found == [
        f"{tmp_path}/m.yaml:3: jobs[0].rows: CSV file not found: {tmp_path}/nope.csv"
        " (the CSV files there: p.csv)",
        f"{tmp_path}/m.yaml:4: jobs[1].prompt: {{material}} is not defined:"
        f" {tmp_path}/p.csv has no column 'material' (its columns: sku, name)",
    ]


def test_bad_csv_cell_names_csv_line_and_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad cell is reported at the CSV's own line (header is line 1), with no echo in output.filename."""
    monkeypatch.chdir(tmp_path)
    rows = ["sku,seed"] + [f"A{i},{i}" for i in range(1, 6)] + ["A6,abc", "A7,1000000"]
    write(tmp_path, "products.csv", "\n".join(rows) + "\n")
    text = "jobs:\n  - prompt: photo of {sku}\n    rows: products.csv\noutput:\n  filename: '{sku}.png'\n"
    write(tmp_path, "m.yaml", text)
    assert problems("m.yaml") == [
        "products.csv:7: column seed: 'abc' is not an integer",
        "products.csv:8: column seed: '1000000' is above the maximum 999999",
    ]


def test_undefined_template_names_in_prompt_and_filename(tmp_path: Path) -> None:
    """Undefined names in prompts and in output.filename name the job / key and the name."""
    text = (
        "jobs:\n  - prompt: a {colour} bag\n    grid:\n      color: [red]\n"
        "output:\n  filename: '{sku}/{index:05d}.png'\n"
    )
    assert problems(write(tmp_path, "m.yaml", text)) == [
        f"{tmp_path}/m.yaml:2: jobs[0].prompt: {{colour}} is not defined (did you mean {{color}}?)",
        f"{tmp_path}/m.yaml:6: output.filename: {{sku}} is not defined",
    ]


def test_templates_refuse_attribute_index_and_format_access(tmp_path: Path) -> None:
    """Templates allow only {name} and {name:05d}: no attribute, index or other format spec."""
    for bad in ("{color.__class__}", "{color[0]}", "{color!r}", "{color:>10}", "{0}", "{color"):
        found = problems(
            write(tmp_path, "m.yaml", f"jobs:\n  - prompt: '{bad}'\n    grid:\n      color: [r]\n")
        )
        assert len(found) == 1 and "jobs[0].prompt: invalid template" in found[0], found


def test_empty_manifests(tmp_path: Path) -> None:
    """An empty file, a comments-only file, a missing jobs key and an empty jobs list are clear errors."""
    assert problems(write(tmp_path, "a.yaml", "")) == [
        f"{tmp_path}/a.yaml: the manifest is empty; it needs at least a jobs list"
    ]
    assert "empty" in problems(write(tmp_path, "b.yaml", "# nothing yet\n"))[0]
    assert problems(write(tmp_path, "c.yaml", "name: x\n")) == [
        f"{tmp_path}/c.yaml:1: missing key 'jobs': the list of jobs to run"
    ]
    assert problems(write(tmp_path, "d.yaml", "jobs: []\n")) == [
        f"{tmp_path}/d.yaml:1: jobs: is empty; a manifest needs at least one job"
    ]
    assert problems(tmp_path / "missing.yaml") == [f"{tmp_path}/missing.yaml: no such file"]


def test_every_problem_is_collected(tmp_path: Path) -> None:
    """All problems of a manifest are reported together, in file order."""
    text = "nam: x\njobs:\n  - prompt: a\n    seed: 0\n  - prompt: b\n    steps_num: 10\n    medium: paint\n"
    found = problems(write(tmp_path, "m.yaml", text))
    assert [p.split(":")[1] for p in found] == ["1", "4", "6", "7"]


def test_undefined_name_is_reported_beside_a_bad_value_of_the_same_job(tmp_path: Path) -> None:
    """A bad grid value does not hide an undefined template name, nor invent one."""
    text = (
        "jobs:\n"
        '  - prompt: "A {colr} {item}"\n'
        "    grid:\n"
        "      color: [red]\n"
        "      item: [bag, {a: 1}]\n"
        "      steps_num: [30, 60]\n"
    )
    path = write(tmp_path, "m.yaml", text)
    found = [p.removeprefix(f"{path}:") for p in problems(path)]
    assert found[0] == "2: jobs[0].prompt: {colr} is not defined (did you mean {color}?)"
    assert not any("{item}" in p for p in found)
    assert any(p.startswith("6: jobs[0].grid.steps_num[1]: 60 is above") for p in found)


def test_job_without_prompt_and_duplicate_keys(tmp_path: Path) -> None:
    """A job with no prompt anywhere, and a key written twice, are errors."""
    text = "jobs:\n  - mode: fast\n  - prompt: a\n    prompt: b\n"
    assert problems(write(tmp_path, "m.yaml", text)) == [
        f"{tmp_path}/m.yaml:2: jobs[0]: has no prompt: set prompt on the job, in defaults, or in a grid/zip",
        f"{tmp_path}/m.yaml:4: jobs[1].prompt: duplicate key (the later one would silently win)",
    ]


def test_seed_and_seeds_conflict_and_reserved_labels(tmp_path: Path) -> None:
    """seed with seeds on one job, a bad seeds count and a label named index are errors."""
    text = (
        "jobs:\n  - prompt: a\n    seed: 3\n    seeds: 2\n  - prompt: b\n    seeds: 0\n"
        "  - prompt: c\n    grid:\n      index: [1]\n"
    )
    found = problems(write(tmp_path, "m.yaml", text))
    assert found == [
        f"{tmp_path}/m.yaml:4: jobs[0].seeds: set seed or seeds on a job, not both",
        f"{tmp_path}/m.yaml:6: jobs[1].seeds: must be a whole number of seeds from 1 to 10000, not '0'",
        (
            f"{tmp_path}/m.yaml:9: jobs[2].grid.index: "
            "'index' is reserved for the filename template; choose another name"
        ),
    ]


def test_csv_manifest_with_bom_crlf_and_empty_cells(tmp_path: Path) -> None:
    """A CSV manifest: BOM and CRLF are fine, params columns are validated, empty cells are not set."""
    data = "\ufeffprompt,seed,sku\r\na red mug,5,M1\r\na blue mug,,M2\r\n"
    path = tmp_path / "mugs.csv"
    path.write_bytes(data.encode("utf-8"))
    manifest = load_manifest(path)
    assert manifest.name == "mugs"
    (spec,) = manifest.jobs
    assert spec.rows is not None
    assert spec.rows.columns == ("prompt", "seed", "sku")
    assert [dict(r.cells) for r in spec.rows.rows] == [
        {"prompt": "a red mug", "seed": "5", "sku": "M1"},
        {"prompt": "a blue mug", "sku": "M2"},
    ]
    assert [r.line for r in spec.rows.rows] == [2, 3]


def test_csv_bad_cell_does_not_hide_an_empty_prompt_in_another_row(tmp_path: Path) -> None:
    """Every row of a CSV manifest is checked: a bad cell and an empty prompt both show."""
    path = write(tmp_path, "p.csv", "prompt,seed,sku\nA mug,abc,M1\n,5,M2\n")
    assert [p.removeprefix(f"{path}:") for p in problems(path)] == [
        "2: column seed: 'abc' is not an integer",
        "3: column prompt: is empty and the job has no prompt",
    ]


def test_csv_manifest_requires_prompt(tmp_path: Path) -> None:
    """A CSV manifest without a prompt column, or with an empty prompt cell, is an error."""
    write(tmp_path, "a.csv", "sku,seed\nA1,3\n")
    assert problems(tmp_path / "a.csv") == [f"{tmp_path}/a.csv:1: there is no prompt column; it is required"]
    write(tmp_path, "b.csv", "prompt,sku\nhello,A1\n,A2\nbye,A3,extra\n")
    assert problems(tmp_path / "b.csv") == [
        f"{tmp_path}/b.csv:3: column prompt: is empty and the job has no prompt",
        f"{tmp_path}/b.csv:4: has 3 cells; the header has 2",
    ]
    write(tmp_path, "c.csv", "prompt,sku\nhello,A1\n,A2\n")
    assert problems(tmp_path / "c.csv") == [
        f"{tmp_path}/c.csv:3: column prompt: is empty and the job has no prompt"
    ]


def test_empty_label_cell_used_by_the_prompt_is_an_error(tmp_path: Path) -> None:
    """An empty cell is not set: a prompt that uses that column fails on that row only."""
    write(tmp_path, "p.csv", "sku,color\nA1,red\nA2,\n")
    path = write(tmp_path, "m.yaml", "jobs:\n  - prompt: a {color} mug\n    rows: p.csv\n")
    assert problems(path) == [f"{tmp_path}/p.csv:3: column color: is empty but the prompt uses {{color}}"]


def test_prompt_warnings_are_not_errors(tmp_path: Path) -> None:
    """Non-English or special characters give located warnings; the manifest still loads."""
    manifest = load(tmp_path, "jobs:\n  - prompt: a café at dawn\n  - prompt: 'mug <b>'\n")
    assert [str(w) for w in manifest.warnings] == [
        (
            f"{tmp_path}/m.yaml:2: jobs[0].prompt: "
            "contains non-ASCII characters; the API accepts English prompts only"
        ),
        f"{tmp_path}/m.yaml:3: jobs[1].prompt: contains special characters '<>'; the API may reject them",
    ]


def test_yaml_1_1_traps_keep_the_written_text(tmp_path: Path) -> None:
    """Unquoted 4:5 stays an aspect ratio, 0123 keeps its zero, no stays text (no YAML 1.1 surprises)."""
    text = "defaults:\n  aspect_ratio: 4:5\njobs:\n  - prompt: a\n    labels:\n      sku: 0123\n"
    text += "      country: no\n"
    (spec,) = load(tmp_path, text).jobs
    assert spec.fields["aspect_ratio"].value == "4:5"
    assert spec.labels["sku"].value == "0123"
    assert spec.labels["country"].value == "no"
    found = problems(write(tmp_path, "b.yaml", "jobs:\n  - prompt: a\n    ip_signal: yes\n"))
    assert found == [f"{tmp_path}/b.yaml:3: jobs[0].ip_signal: 'yes' is not a boolean (use true or false)"]


def test_parse_range() -> None:
    """Ranges are inclusive and take an optional step: "1-8", "1-100 (+10)"; other text is not a range."""
    assert parse_range("1-8") == range(1, 9)
    assert list(parse_range("1-100 (+10)") or []) == list(range(1, 101, 10))
    assert parse_range(" 5 - 5 ") == range(5, 6)
    assert parse_range("tote-bag") is None
    assert parse_range("1-8 (+0)") == range(0)


def test_range_errors(tmp_path: Path) -> None:
    """A reversed range, a range over its limits and a range for a text parameter are errors."""
    text = (
        'jobs:\n  - prompt: a\n    grid:\n      seed: "9-1"\n'
        '      steps_num: "20-60 (+10)"\n      mode: "1-2"\n'
    )
    assert problems(write(tmp_path, "m.yaml", text)) == [
        f"{tmp_path}/m.yaml:4: jobs[0].grid.seed: range '9-1' is empty (the start is above the end)",
        f"{tmp_path}/m.yaml:5: jobs[0].grid.steps_num: 60 is above the maximum 50",
        f"{tmp_path}/m.yaml:6: jobs[0].grid.mode: must be a list, not '1-2'",
    ]


def test_label_that_looks_like_a_parameter_warns_when_a_template_uses_it(tmp_path: Path) -> None:
    """A CSV column or grid name close to a parameter name, used by a template, is a label with a warning."""
    write(tmp_path, "p.csv", "sku,step_num\nA1,30\n")
    manifest = load(tmp_path, "jobs:\n  - prompt: a {sku} in {step_num} steps\n    rows: p.csv\n")
    assert [str(w) for w in manifest.warnings] == [
        (
            f"{tmp_path}/p.csv:1: column step_num: "
            "'step_num' is not a parameter, so it is a label (did you mean steps_num?)"
        )
    ]


def test_unused_axis_close_to_a_parameter_is_an_error(tmp_path: Path) -> None:
    """The issue's typo: grid {step_num, guidance} used to make 4 identical paid jobs; now step_num is an
    error (did you mean), guidance a warning once it is fixed."""
    text = "jobs:\n  - prompt: a cat\n    grid: {step_num: [20, 60], guidance: [3, 9]}\n"
    assert problems(write(tmp_path, "m.yaml", text)) == [
        f"{tmp_path}/m.yaml:3: jobs[0].grid.step_num: 'step_num' is not a parameter (did you mean"
        " steps_num?) and no template uses {step_num}: its 2 values make jobs that send identical requests"
    ]
    fixed = load(tmp_path, text.replace("step_num", "steps_num").replace("60", "50"))
    assert [str(w) for w in fixed.warnings] == [
        f"{tmp_path}/m.yaml:3: jobs[0].grid.guidance: 'guidance' sets no parameter and no template uses"
        " {guidance}: its 2 values make jobs that send identical requests"
    ]


def test_unused_zip_axis_and_csv_column_close_to_a_parameter_are_errors(tmp_path: Path) -> None:
    """A zip axis or a CSV column nobody uses and named like a parameter is an error, located."""
    write(tmp_path, "p.csv", "sku,seeds,prompt_id\nA1,3,1\nA2,4,2\n")
    text = "jobs:\n  - prompt: a {sku}\n    rows: p.csv\n    zip: {subject: [a, b], mood: [x, y]}\n"
    assert problems(write(tmp_path, "m.yaml", text)) == [
        f"{tmp_path}/m.yaml:4: jobs[0].zip.mood: 'mood' is not a parameter (did you mean mode?) and no"
        " template uses {mood}: its 2 values make jobs that send identical requests",
        f"{tmp_path}/p.csv:1: column seeds: 'seeds' is not a parameter (did you mean seed?) and no template"
        " uses {seeds}: the column is unused, kept only as a label",
    ]


def test_a_column_or_axis_used_by_the_filename_another_job_or_the_report_is_not_unused(
    tmp_path: Path,
) -> None:
    """Used by output.filename, report, or another job reading the same CSV: no warning at all."""
    write(tmp_path, "p.csv", "sku,setting,note\nA1,a cafe,x\n")
    text = (
        "jobs:\n  - prompt: a mug\n    rows: p.csv\n    grid: {variant: [a, b]}\n"
        "  - prompt: a mug {setting}\n    rows: p.csv\n"
        "output:\n  filename: '{sku}-{variant}-{index}.png'\nreport:\n  rows: note\n"
    )
    assert load(tmp_path, text).warnings == []


def test_unused_csv_column_is_a_warning_once(tmp_path: Path) -> None:
    """A column no job uses, not close to a parameter name: one warning, even when two jobs read the file."""
    write(tmp_path, "p.csv", "sku,prompt_id\nA1,1\n")
    text = "jobs:\n  - prompt: a {sku}\n    rows: p.csv\n  - prompt: b {sku}\n    rows: p.csv\n"
    assert [str(w) for w in load(tmp_path, text).warnings] == [
        f"{tmp_path}/p.csv:1: column prompt_id: 'prompt_id' sets no parameter and no template uses"
        " {prompt_id}: the column is unused, kept only as a label"
    ]


def test_report_axes_take_a_name_or_a_list_of_names(tmp_path: Path) -> None:
    """report: rows one name, columns a list (the header's levels): both kept as tuples, in order."""
    text = (
        "jobs:\n  - prompt: a {style} mug\n    grid: {style: [a, b], seed: [1, 2], steps_num: [20, 30]}\n"
        "report:\n  rows: seed\n  columns: [style, steps_num]\n"
    )
    assert load(tmp_path, text).report == {"rows": ("seed",), "columns": ("style", "steps_num")}


def test_report_axes_name_only_what_the_jobs_have(tmp_path: Path) -> None:
    """A name the jobs lack, a mapping, or a name listed twice: located errors under report."""
    path = write(
        tmp_path,
        "m.yaml",
        "jobs:\n  - prompt: a mug\n    seed: [1, 2]\n"
        "report:\n  rows: [seed, sede]\n  columns: [seed, seed]\n",
    )
    assert problems(path) == [
        f"{path}:5: report.rows: must name a parameter or a label of the jobs, or a list of them ('sede')",
        f"{path}:6: report.columns: must name a parameter or a label of the jobs, or a list of them"
        " (a name listed twice)",
    ]


def test_a_run_name_is_any_folder_name_every_os_can_hold(tmp_path: Path) -> None:
    """Letters and digits of any script make a run name; the longest allowed still makes a shard's folder."""
    for name in ("ünï-名前", "नमस्ते_2", "Ærø.v2", "_x"):
        path = tmp_path / "m.yaml"
        path.write_text(f"name: {name}\njobs:\n  - prompt: hi\n", encoding="utf-8")
        assert load_manifest(path).name == name
    longest = "名" * 77 + "a"  # 232 bytes of UTF-8
    assert len(longest.encode()) == MAX_RUN_NAME_BYTES
    path.write_text(f"name: {longest}\njobs:\n  - prompt: hi\n", encoding="utf-8")
    folder = tmp_path / (load_manifest(path).name + Shard(MAX_SHARDS, MAX_SHARDS).suffix)
    folder.mkdir()  # 255 bytes: what the filesystem holds
    path.write_text(f"name: {longest}a\njobs:\n  - prompt: hi\n", encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:1: name: is 233 bytes long in UTF-8, over the 232 a run name may have: a folder name holds"
        " 255, and a shard's folder adds -shard-K-of-N (the run name is the output folder's name)"
    ]
