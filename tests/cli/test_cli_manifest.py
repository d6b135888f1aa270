"""The manifest commands: ``batchgen validate``, ``plan`` and ``schema``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from batchgen.cli.main import main
from batchgen.manifest.entry import JOB_KEYS
from batchgen.manifest.load import TOP_KEYS
from batchgen.manifest.params import PARAMETER_NAMES
from batchgen.manifest.schema import manifest_schema

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
EXAMPLES = sorted(p.name for p in MANIFESTS.glob("*.yaml"))


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_manifest_validates(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each manifest in manifests/ validates with no warnings."""
    assert main(["validate", str(MANIFESTS / name)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{MANIFESTS / name}: ok, ")
    assert out.rstrip().endswith("0 duplicates dropped, 0 warnings")
    assert err == ""


def test_examples_cover_the_three_uses() -> None:
    """manifests/ has the demo, a catalog with a CSV of a few dozen products, a sweep and a nightly run."""
    assert {"demo.yaml", "catalog.yaml", "sweep.yaml", "nightly.yaml"} <= set(EXAMPLES)
    products = (MANIFESTS / "products.csv").read_text().splitlines()
    assert len(products) - 1 >= 24


def test_validate_summary_counts_jobs_duplicates_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate prints one summary line and the warnings, and exits 0."""
    path = tmp_path / "m.yaml"
    path.write_text("jobs:\n  - prompt: a café {c}\n    grid:\n      c: [red, red, blue]\n", encoding="utf-8")
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: ok, 2 jobs, 1 duplicate dropped, 1 warning\n"
    assert err == (
        f"warning: {path}:2: jobs[0].prompt: "
        "contains non-ASCII characters; the API accepts English prompts only\n"
    )


def test_validate_errors_exit_2_with_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad manifest exits 2 and prints each problem then the count, no traceback."""
    path = tmp_path / "m.yaml"
    path.write_text("jobs:\n  - prompt: a\n    steps_num: 60\n    modee: fast\n")
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}:3: jobs[0].steps_num: 60 is above the maximum 50",
        f"{path}:4: jobs[0]: unknown key 'modee' (did you mean mode?); allowed: "
        + ", ".join(
            [
                "prompt",
                "aspect_ratio",
                "mode",
                "seed",
                "negative_prompt",
                "steps_num",
                "text_guidance_scale",
                "medium",
                "prompt_enhancement",
                "enhance_image",
                "prompt_content_moderation",
                "content_moderation",
                "ip_signal",
                "grid",
                "zip",
                "rows",
                "seeds",
                "sample",
                "labels",
            ]
        ),
        "error: 2 problems; nothing was submitted",
    ]


def test_validate_refuses_too_many_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """validate refuses a grid above --max-jobs with the count, exit 2."""
    path = tmp_path / "m.yaml"
    path.write_text('jobs:\n  - prompt: a\n    grid:\n      seed: "1-999999"\n      steps_num: "20-50"\n')
    assert main(["validate", str(path), "--max-jobs", "1000"]) == 2
    assert "expands to 30,999,969 jobs, more than the limit of 1,000" in capsys.readouterr().err


def test_plan_table_shows_first_jobs_and_total(capsys: pytest.CaptureFixture[str]) -> None:
    """plan prints a header, --limit rows and a total line."""
    assert main(["plan", str(MANIFESTS / "demo.yaml"), "--limit", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["#", "key", "seed", "ratio", "mode", "labels", "filename", "prompt"]
    assert [line.split()[0] for line in lines[1:4]] == ["0", "1", "2"]
    assert "watercolor/lighthouse_on_a_cliff-101.png" in lines[1]
    assert lines[4].startswith("showing 3 of 12 jobs (0 duplicates dropped)")


def test_plan_jsonl_prints_every_job(capsys: pytest.CaptureFixture[str]) -> None:
    """plan --jsonl prints one JSON object per job with index, key, model, params, labels, filename."""
    assert main(["plan", str(MANIFESTS / "sweep.yaml"), "--jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 60
    assert [r["index"] for r in rows] == list(range(60))
    assert set(rows[0]) == {"index", "key", "model", "params", "labels", "filename"}
    assert len(rows[0]["params"]) == 13 and rows[0]["params"]["prompt_enhancement"] is False
    assert rows[0]["filename"] == "gs5-steps30/seed000001.png"


def test_schema_is_json_schema_and_checked_in(capsys: pytest.CaptureFixture[str]) -> None:
    """schema prints the JSON Schema (same keys as the loader), and the checked-in copy is current."""
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == manifest_schema()
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert printed["required"] == ["jobs"]
    steps = printed["properties"]["defaults"]["properties"]["steps_num"]["anyOf"][0]
    assert (steps["type"], steps["minimum"], steps["maximum"]) == ("integer", 20, 50)
    assert json.loads((MANIFESTS / "manifest.schema.json").read_text()) == printed
    props = printed["properties"]
    assert set(props) == set(TOP_KEYS)
    assert set(props["jobs"]["items"]["properties"]) == set(JOB_KEYS)
    assert set(props["defaults"]["properties"]) == {*PARAMETER_NAMES, "seeds", "sample"}


@pytest.mark.e2e
def test_validate_as_a_real_process(tmp_path: Path) -> None:
    """`python -m batchgen validate` exits 0 on an example and 2 with located errors on a bad file."""
    ok = subprocess.run(
        [sys.executable, "-m", "batchgen", "validate", str(MANIFESTS / "catalog.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (ok.returncode, ok.stdout) == (
        0,
        f"{MANIFESTS / 'catalog.yaml'}: ok, 72 jobs, 0 duplicates dropped, 0 warnings\n",
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs:\n  - prompt: a {colour}\n    grid:\n      color: [red]\n")
    result = subprocess.run(
        [sys.executable, "-m", "batchgen", "validate", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{bad}:2: jobs[0].prompt: {{colour}} is not defined (did you mean {{color}}?)",
        "error: 1 problem; nothing was submitted",
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.e2e
def test_plan_into_a_closed_pipe_exits_quietly() -> None:
    """`batchgen plan --jsonl | head -1` prints one job and no traceback when the pipe closes."""
    with subprocess.Popen(
        [sys.executable, "-m", "batchgen", "plan", "--jsonl", str(MANIFESTS / "sweep.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = json.loads(proc.stdout.readline())
        proc.stdout.close()  # what `head -1` does after its line
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 0
    assert first["index"] == 0
    assert err == ""
