"""Dynamic prompts and JSON Lines from the command line: plan, validate, run -, what a run records."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from batchgen.cli.main import main

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"


def write_dynamic(tmp_path: Path) -> Path:
    (tmp_path / "wildcards").mkdir()
    (tmp_path / "wildcards/colours.txt").write_text("red\nblue\n", encoding="utf-8")
    path = tmp_path / "m.yaml"
    path.write_text(
        "name: dyn\ndefaults:\n  prompt_enhancement: false\n"
        "jobs:\n  - prompt: a {small|large} __colours__ {item}\n    labels: {item: mug}\n",
        encoding="utf-8",
    )
    return path


def test_plan_jsonl_limit_prints_n_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """plan --jsonl prints every job, --limit N only the first N; the table takes --limit too."""
    path = write_dynamic(tmp_path)
    assert main(["plan", str(path), "--jsonl"]) == 0
    every = capsys.readouterr().out.splitlines()
    assert len(every) == 4
    assert json.loads(every[0])["template"] == "a {small|large} __colours__ {item}"
    assert main(["plan", str(path), "--jsonl", "--limit", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == every[:2]
    assert main(["plan", str(path), "--limit", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].endswith("a small red mug") and table[2].startswith("showing 1 of 4 jobs")


def test_validate_counts_combinations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """validate counts a dynamic prompt's combinations as jobs."""
    path = write_dynamic(tmp_path)
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok, 4 jobs, 0 duplicates dropped, 0 warnings\n"


def test_validate_reads_standard_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate - reads the manifest from standard input."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"jobs:\n  - prompt: a {red|blue} cat\n")))
    assert main(["validate", "-"]) == 0
    assert capsys.readouterr().out == "<stdin>: ok, 2 jobs, 0 duplicates dropped, 0 warnings\n"


def test_run_from_standard_input_needs_out(capsys: pytest.CaptureFixture[str]) -> None:
    """run - without --out is a usage error (exit 2) that says to pass --out; nothing is read or sent."""
    assert main(["run", "-", "--emulate"]) == 2
    assert "standard input (-) has no folder of its own: pass --out DIR" in capsys.readouterr().err


def test_run_records_the_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The ledger's submitted lines and each image's parameters record the template and the prompt."""
    path = write_dynamic(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--emulate", "--no-report", "-q"]) == 0
    capsys.readouterr()
    submitted = [
        json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines() if '"submitted"' in line
    ]
    assert sorted(e["params"]["prompt"] for e in submitted) == [
        "a large blue mug",
        "a large red mug",
        "a small blue mug",
        "a small red mug",
    ]
    assert {e["template"] for e in submitted} == {"a {small|large} __colours__ {item}"}
    image = next((out / "images").iterdir())
    with Image.open(image) as im:
        info = json.loads(str(im.info["batchgen"]))
        parameters = str(im.info["parameters"])
    assert info["template"] == "a {small|large} __colours__ {item}"
    assert "Template: a {small|large} __colours__ {item}, " in parameters


@pytest.mark.e2e
def test_plan_piped_into_run_runs_the_same_jobs(tmp_path: Path, emulator_process: object) -> None:
    """`plan x.yaml --jsonl | run - --out o` (real processes, real emulator) runs the jobs of `run x.yaml`."""
    assert callable(emulator_process)
    base_url = emulator_process("--time-scale", "0.005")
    path = write_dynamic(tmp_path)
    environ = {k: v for k, v in os.environ.items() if k not in ("SEGMIND_API_KEY", "BATCHGEN_BASE_URL")}
    environ["SEGMIND_API_KEY"] = "e2e-key"
    batchgen = [sys.executable, "-m", "batchgen"]
    plan = subprocess.Popen([*batchgen, "plan", str(path), "--jsonl"], stdout=subprocess.PIPE, cwd=tmp_path)
    piped = subprocess.run(
        [*batchgen, "run", "-", "--out", "piped", "--base-url", base_url, "--no-report", "-q"],
        stdin=plan.stdout,
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plan.stdout is not None
    plan.stdout.close()
    assert plan.wait(timeout=60) == 0
    assert piped.returncode == 0, piped.stderr
    direct = subprocess.run(
        [*batchgen, "run", str(path), "--out", "direct", "--base-url", base_url, "--no-report", "-q"],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert direct.returncode == 0, direct.stderr

    def completed(out: str) -> dict[str, str]:
        lines = [json.loads(line) for line in (tmp_path / out / "ledger.jsonl").read_text().splitlines()]
        return {e["key"]: e["file"] for e in lines if e["event"] == "completed"}

    assert completed("piped") == completed("direct")
    assert len(completed("piped")) == 4
    started = [json.loads(line) for line in (tmp_path / "piped/ledger.jsonl").read_text().splitlines()][0]
    assert started["event"] == "run_started" and started["manifest"] is None
