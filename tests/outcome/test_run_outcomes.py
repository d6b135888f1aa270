"""How a run ends, for schedulers: OUT/summary.json and --halt-on-failure-rate (exit 6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchgen.cli.main import main
from batchgen.emulator import EmulatorConfig
from batchgen.engine.runner import run
from batchgen.engine.settings import RunSettings
from batchgen.outcome.exits import EXIT_MEANINGS, ExitCode
from tests.support.clock import current_loop

REPO = Path(__file__).resolve().parents[2]


def _summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_summary_json_of_a_clean_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 0 and its meaning, counts, rates and cost; no temporary file is left beside it."""
    out = tmp_path / "out"
    assert main(["run", str(REPO / "manifests" / "demo.yaml"), "--emulate", "--out", str(out)]) == 0
    summary = _summary(out)
    assert summary["exit_code"] == 0 and summary["exit_name"] == "ok"
    assert summary["exit_meaning"] == EXIT_MEANINGS[0]
    assert summary["jobs"]["completed"] == summary["jobs"]["total"] == 12
    assert summary["images_per_minute"] > 0 and summary["requests_per_image"] >= 3
    assert summary["rate_limited"] == 0
    assert summary["cost"]["usd"] == pytest.approx(0.48) and summary["cost"]["estimated_usd"] == 0.48
    assert summary["first_error"] is None and summary["last_error"] is None
    assert summary["out"] == str(out.resolve())
    assert summary["started_at"] <= summary["finished_at"]
    assert sorted(p.name for p in out.iterdir() if "summary" in p.name) == ["summary.json"]
    # A rerun (nothing to do) writes its own: a skip, not a completion.
    assert main(["run", str(REPO / "manifests" / "demo.yaml"), "--emulate", "--out", str(out)]) == 0
    assert _summary(out)["jobs"]["skipped"] == 12


def test_an_emulated_run_labels_its_cost_and_times(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--emulate: the estimate, the speed and the cost say emulated (nothing paid); summary.json too."""
    out = tmp_path / "out"
    assert (
        main(["run", str(REPO / "manifests" / "demo.yaml"), "--emulate", "--out", str(out), "--no-report"])
        == 0
    )
    printed = capsys.readouterr()
    assert (
        "about 0.48 USD; at 50 rpm" in printed.err and "on Segmind (emulated: nothing is paid" in printed.err
    )
    assert "images/min (emulated: the emulator's speed, not Segmind's)" in printed.out
    assert "cost of the batch so far 0.48 USD (emulated: at list price, nothing was paid)" in printed.out
    assert _summary(out)["emulated"] is True


def test_a_run_refused_before_it_takes_the_folder_touches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest over --max-jobs (exit 2) is refused before OUT is made: no folder, no file."""
    out = tmp_path / "out"
    assert (
        main(
            ["run", str(REPO / "manifests" / "demo.yaml"), "--emulate", "--out", str(out), "--max-jobs", "6"]
        )
        == 2
    )
    assert not out.exists()


def test_an_over_budget_refusal_writes_no_run_lines_and_says_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over --budget (exit 2, nothing sent): the ledger is byte for byte as it was, and summary.json
    (an earlier run's said exit 0) now says exit 2, refused, and why."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("jobs:\n  - prompt: a fox\n    seed: [1, 2]\n")
    out = tmp_path / "out"
    argv = ["run", str(manifest), "--emulate", "--out", str(out), "--no-report"]
    assert main(argv) == 0 and _summary(out)["exit_code"] == 0
    ledger = (out / "ledger.jsonl").read_bytes()
    manifest.write_text("jobs:\n  - prompt: a fox\n    seed: '1-12'\n")  # 10 more jobs: 0.40 USD
    assert main([*argv, "--budget", "0.1"]) == 2
    assert "is over --budget 0.10 USD: nothing was submitted" in capsys.readouterr().err
    assert (out / "ledger.jsonl").read_bytes() == ledger
    summary = _summary(out)
    assert (summary["exit_code"], summary["exit_name"]) == (2, "usage")
    assert "over --budget" in summary["stopped"]["refused"]
    assert summary["jobs"]["total"] == 12 and summary["jobs"]["skipped"] == 2
    assert summary["jobs"]["not_run"] == 10 and summary["cost"]["estimated_usd"] == pytest.approx(0.4)
    assert summary["requests"] == 0 and summary["submits"] == 0
    # The refused run left no trace in the ledger: status still tells the earlier run's story.
    assert main(["status", str(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["runs"] == 1 and status["jobs"]["completed"] == 2 and status["jobs"]["not_started"] == 10


def test_an_over_budget_refusal_of_a_new_folder_leaves_no_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused in a folder that had no ledger: none is left behind (an empty one would be a run)."""
    out = tmp_path / "out"
    demo = str(REPO / "manifests" / "demo.yaml")
    assert main(["run", demo, "--emulate", "--out", str(out), "--budget", "0.01"]) == 2
    assert not (out / "ledger.jsonl").exists()
    assert _summary(out)["exit_code"] == 2


def _half_blocked(tmp_path: Path, seeds: int) -> Path:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "jobs:\n  - prompt: 'a {word} cat'\n"
        f"    grid:\n      seed: '1-{seeds}'\n      word: [forbidden, nice]\n"
    )
    return manifest


@pytest.fixture
def anyio_backend(virtual_time: object) -> object:
    """The runs here are on virtual time (tests/support/clock.py)."""
    return virtual_time


async def _run_half_blocked(tmp_path: Path, concurrency: int = 4, **settings: Any) -> dict[str, Any]:
    out = tmp_path / "out"
    loop = current_loop()
    config = EmulatorConfig(blocked_terms=("forbidden",), time_scale=0.002, workers=4, clock=loop.time)
    summary = await run(
        _half_blocked(tmp_path, 40),
        out_dir=out,
        emulate=config,
        settings=RunSettings(concurrency=concurrency, report=False, **settings),
        progress=False,
        wall_clock=loop.wall,
    )
    written = _summary(out)
    assert written["exit_code"] == summary.exit_code
    return written


@pytest.mark.anyio
async def test_halt_on_failure_rate_stops_submitting_and_exits_6(tmp_path: Path) -> None:
    """Half the jobs fail: past 20 finished, over 10% failed, nothing more is submitted; exit 6."""
    summary = await _run_half_blocked(tmp_path, halt_failure_rate=10.0)
    assert summary["exit_code"] == ExitCode.FAILURE_RATE == 6
    assert summary["stopped"]["failure_rate_halted"] is True
    jobs = summary["jobs"]
    finished = jobs["completed"] + jobs["failed"]
    assert 20 <= finished <= 20 + 4  # the jobs in flight when it halted still finished
    assert jobs["not_run"] == 80 - finished
    assert summary["submits"] == finished
    assert "forbidden" in summary["first_error"]["error"]


@pytest.mark.anyio
async def test_a_halt_after_the_last_submit_still_exits_6(tmp_path: Path) -> None:
    """The rate is judged only once all 80 jobs finished: nothing is left to stop, yet the halt
    happened, so summary.json's flag and the exit code agree: 6."""
    summary = await _run_half_blocked(tmp_path, halt_failure_rate=10.0, halt_min_jobs=80)
    assert summary["jobs"]["not_run"] == 0 and summary["jobs"]["failed"] == 40
    assert summary["stopped"]["failure_rate_halted"] is True
    assert summary["exit_code"] == ExitCode.FAILURE_RATE and summary["exit_name"] == "failure_rate"


@pytest.mark.anyio
async def test_halt_waits_for_the_minimum_of_finished_jobs(tmp_path: Path) -> None:
    """With --halt-min-jobs above the batch, the rate never halts it: every job runs, exit 1."""
    summary = await _run_half_blocked(tmp_path, halt_failure_rate=10.0, halt_min_jobs=1000)
    assert summary["exit_code"] == 1 and summary["jobs"]["not_run"] == 0
    assert summary["jobs"]["failed"] == 40 and summary["stopped"]["failure_rate_halted"] is False


@pytest.mark.anyio
async def test_halt_rate_below_the_failures_does_not_halt(tmp_path: Path) -> None:
    """50% failing (one job at a time, every other one blocked) is not over 60%: all run, exit 1."""
    summary = await _run_half_blocked(tmp_path, concurrency=1, halt_failure_rate=60.0)
    assert summary["exit_code"] == 1 and summary["jobs"]["not_run"] == 0


@pytest.mark.parametrize("value", ["-1", "100", "abc"])
def test_bad_halt_rates_are_usage_errors(tmp_path: Path, value: str) -> None:
    """A rate outside 0 <= P < 100 exits 2 before anything is written."""
    out = tmp_path / "out"
    argv = ["run", str(REPO / "manifests" / "demo.yaml"), "--emulate", "--out", str(out)]
    try:
        code = main([*argv, "--halt-on-failure-rate", value])
    except SystemExit as exc:
        code = int(exc.code or 0)
    assert code == 2 and not out.exists()
