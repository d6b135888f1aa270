"""JSON Lines manifests and standard input: the jobs `plan --jsonl` prints, read back as they were."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from batchgen.errors import ManifestError
from batchgen.manifest.expand import expand
from batchgen.manifest.load import load_manifest
from batchgen.manifest.pipeline import manifest_jobs


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path | str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return [str(p) for p in info.value.problems]


def plan_lines(path: Path) -> list[str]:
    return [json.dumps(job.to_json(), ensure_ascii=False) for job in manifest_jobs(path)]


def test_plan_lines_read_back_as_the_same_jobs(tmp_path: Path) -> None:
    """Every field of `plan --jsonl` lines reads back: same keys, indexes, filenames, templates."""
    write(tmp_path / "p.csv", "sku,name\nA1,tote\nB2,mug\n")
    yaml_path = write(
        tmp_path / "m.yaml",
        "jobs:\n  - prompt: a {red|blue} {name}\n    rows: p.csv\n    seeds: 2\n"
        "output:\n  filename: '{sku}/{seed}.png'\n",
    )
    original = list(manifest_jobs(yaml_path))
    lines = write(tmp_path / "jobs.jsonl", "\n".join(plan_lines(yaml_path)) + "\n")
    again = list(expand(load_manifest(lines)))
    assert [j.to_json() for j in again] == [j.to_json() for j in original]
    assert again[0].template == "a {red|blue} {name}"


def test_openai_batch_lines(tmp_path: Path) -> None:
    """An OpenAI Batch line's body holds the parameters; custom_id becomes a label."""
    line = {"custom_id": "req-1", "method": "POST", "url": "/v1/x", "body": {"prompt": "a cat", "seed": 3}}
    (job,) = expand(load_manifest(write(tmp_path / "b.jsonl", json.dumps(line) + "\n\n")))
    assert (job.params.prompt, job.seed, dict(job.labels)) == ("a cat", 3, {"custom_id": "req-1"})
    assert job.filename == f"00000-{job.key[:12]}.png"


def test_each_line_error_names_its_line(tmp_path: Path) -> None:
    """Problems are located at their line: bad JSON, unknown keys, bad parameters, an edited key."""
    good = {"params": {"prompt": "a cat"}}
    edited = {**good, "key": "0" * 64}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({"prompt": "a dog"}),
        json.dumps({"params": {"prompt": "x", "aspect_ratio": "16x9", "stepsnum": 30}}),
        json.dumps(edited),
        json.dumps({"params": {"prompt": "y"}, "labels": {"seed": 1, "key": "k", "ok": [1]}}),
        json.dumps({"params": {"prompt": "z"}, "index": 0}),
    ]
    path = write(tmp_path / "j.jsonl", "\n".join(lines) + "\n")
    found = problems(path)
    assert found[0].startswith(f"{path}:2: is not JSON: ")
    assert found[1:] == [
        f"{path}:3: unknown key 'prompt' (parameters go under params); allowed: params, body, labels,"
        " filename, model, index, key, template, custom_id, method, url",
        f'{path}:3: has no params: {{"params": {{"prompt": "..."}}}} (or body, as in OpenAI Batch)',
        f"{path}:4: params.aspect_ratio: '16x9' is not allowed; choose one of '1:1', '2:3', '3:2', '3:4',"
        " '4:3', '4:5', '5:4', '9:16' or '16:9' (did you mean 16:9?)",
        f"{path}:4: params.stepsnum: is not a parameter of bria-text-to-image (did you mean steps_num?)",
        f"{path}:5: key: does not match the line's model, params and labels (was the line edited?);"
        " a job's key is computed from them: remove key, or restore the line",
        f"{path}:6: labels.seed: seed is a parameter; put it under params",
        f"{path}:6: labels.key: 'key' is reserved for the filename template; choose another name",
        f"{path}:6: labels.ok: must be a single value (text, number or true/false)",
        f"{path}:7: index: 0 is already the index of line 1",
    ]


def test_lines_that_write_one_file(tmp_path: Path) -> None:
    """Two lines naming one file are refused, naming both lines."""
    lines = [json.dumps({"params": {"prompt": p}, "filename": "same.png"}) for p in ("a", "b")]
    path = write(tmp_path / "j.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as info:
        list(manifest_jobs(path))
    (problem,) = info.value.problems
    assert str(problem) == (
        f"{path}:2: filename: jobs 0 (line 1) and 1 (line 2) would both write same.png;"
        " give each line its own filename"
    )


def test_an_empty_file_has_no_jobs(tmp_path: Path) -> None:
    """A JSON Lines file of blank lines is an error, not an empty run."""
    assert problems(write(tmp_path / "j.jsonl", "\n\n")) == [
        f"{tmp_path}/j.jsonl: holds no jobs: one JSON object a line"
    ]


def stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_standard_input_jsonl_or_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """- reads JSON Lines (first line a JSON object) or YAML from standard input, paths from the cwd."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wildcards").mkdir()
    write(tmp_path / "wildcards/colours.txt", "red\nblue\n")
    stdin(monkeypatch, b"jobs:\n  - prompt: a __colours__ cat\n")
    manifest = load_manifest("-")
    assert (manifest.name, manifest.display, manifest.recorded_path) == ("stdin", "<stdin>", None)
    jobs = list(expand(manifest))
    assert [j.params.prompt for j in jobs] == ["a red cat", "a blue cat"]
    stdin(monkeypatch, ("\n".join(json.dumps(j.to_json()) for j in jobs) + "\n").encode())
    again = load_manifest("-")
    assert [j.key for j in expand(again)] == [j.key for j in jobs]


def test_standard_input_problems_name_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Problems in standard input are located at <stdin>:LINE."""
    stdin(monkeypatch, b'{"params": {"prompt": "a"}}\n{"params": {}}\n')
    assert problems("-") == ["<stdin>:2: params.prompt: is required"]


class _Terminal(io.TextIOWrapper):
    def isatty(self) -> bool:
        return True


def test_a_terminal_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """- on a terminal (nothing piped in) is an error at once, not a silent wait for typing."""
    monkeypatch.setattr(sys, "stdin", _Terminal(io.BytesIO(b"")))
    (problem,) = problems("-")
    assert problem == "<stdin>: is a terminal: - reads a manifest piped in (... | batchgen run - --out DIR)"
