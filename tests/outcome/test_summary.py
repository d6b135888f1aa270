"""Tests of the end-of-run summary: derived figures, formatting, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen.outcome.summary import Summary, format_summary


def summary(**fields: object) -> Summary:
    out = Path("/tmp/run-out")
    base: dict[str, object] = {
        "total": 10,
        "out_dir": out,
        "images_dir": out / "images",
        "ledger_path": out / "ledger.jsonl",
    }
    base.update(fields)
    return Summary(**base)  # type: ignore[arg-type]


def test_derived_figures() -> None:
    """Images/min, per-image ratios and percentiles are computed from the counters."""
    s = summary(
        completed=8, skipped=2, requests=40, polls=20, wall_time=120.0, inference_times=[10.0, 12.0, 14.0]
    )
    assert s.images_per_minute == pytest.approx(4.0)
    assert s.requests_per_image == pytest.approx(5.0)
    assert s.polls_per_image == pytest.approx(2.5)
    assert s.inference_p50 == pytest.approx(12.0)
    assert s.inference_p95 == pytest.approx(13.8)
    assert (s.done, s.all_done) == (10, True)
    empty = summary(total=0)
    assert (empty.images_per_minute, empty.requests_per_image, empty.inference_p50) == (None, None, None)


def test_format_summary_contains_every_figure() -> None:
    """The printed summary names counts, wall time, rate, percentiles, ratios, 429s and paths."""
    s = summary(
        total=12,
        completed=8,
        failed=1,
        skipped=2,
        skipped_failed=1,
        resubmitted=3,
        removed=4,
        submits=11,
        requests=40,
        polls=20,
        rate_limited=5,
        wall_time=83.4,
        inference_times=[10.0, 12.0, 14.0],
        warnings=["ledger.jsonl:7: not a JSON object, line skipped"],
    )
    text = format_summary(s)
    assert "10/12 jobs done: 8 completed, 2 skipped (already done), 2 failed, 3 resubmitted" in text
    assert "1 failed in an earlier run and were not retried (use --retry-failed)" in text
    assert "wall time 1m 23s, 5.8 images/min" in text
    assert "inference time p50 12.0s, p95 13.8s" in text
    assert "requests/image 5.00, polls/image 2.50, 429s 5 (11 submits, 40 requests)" in text
    assert "no longer in the manifest" not in text  # the runner logs it once, on stderr
    assert "warning: ledger.jsonl:7: not a JSON object, line skipped" in text
    assert text.endswith("images: /tmp/run-out/images\nledger: /tmp/run-out/ledger.jsonl")


def test_format_summary_without_images_says_n_a() -> None:
    """A run that produced nothing prints n/a instead of dividing by zero."""
    text = format_summary(summary(total=3, skipped=3, wall_time=0.5))
    assert "3/3 jobs done: 0 completed, 3 skipped" in text
    assert "wall time 0.5s, 0.0 images/min" in text
    assert "inference time p50 n/a, p95 n/a" in text
    assert "requests/image n/a, polls/image n/a, 429s 0" in text


def test_format_summary_says_why_a_run_stopped() -> None:
    """Fatal stops and interrupts are spelled out with what to do next."""
    text = format_summary(summary(completed=2, not_run=8, fatal="406: insufficient credits", wall_time=3))
    assert "8 not finished (the run stopped early)" in text
    assert "stopped: 406: insufficient credits" in text
    assert "rerun the same command" in format_summary(summary(interrupted=True))


def test_format_summary_labels_an_emulated_run() -> None:
    """Emulated: the speed and the cost say so; a real run's lines carry no such label."""
    text = format_summary(summary(completed=10, wall_time=2, cost_usd=0.4, emulated=True))
    assert "images/min (emulated: the emulator's speed, not Segmind's)" in text
    assert "0.40 USD (emulated: at list price, nothing was paid)" in text
    assert "emulated" not in format_summary(summary(completed=10, wall_time=2, cost_usd=0.4))


def test_exit_code_follows_the_outcome() -> None:
    """0 all done, 1 failed jobs (now or earlier), 3 fatal API stop, 130 interrupted."""
    assert summary(completed=10).exit_code == 0
    assert summary(completed=9, failed=1).exit_code == 1
    assert summary(completed=9, skipped_failed=1).exit_code == 1
    assert summary(completed=1, failed=1, fatal="401: invalid API key").exit_code == 3
    assert summary(completed=1, fatal="x", interrupted=True).exit_code == 130
    # A write that failed says "make room" whatever else happened: 4, distinct from 1.
    assert summary(completed=1, failed=1, write_error="disk full", interrupted=True).exit_code == 4
    # The failure-rate halt is 6 also when it came after the last submit: as summary.json's flag says.
    assert summary(completed=5, failed=5, failure_rate_halted=True, not_run=0).exit_code == 6
    assert summary(completed=5, failed=5, failure_rate_halted=True, budget_reached=True).exit_code == 6


def test_counts_are_json_ready() -> None:
    """counts() is what run_finished records: plain JSON values."""
    counts = summary(completed=3, wall_time=1.23456).counts()
    assert json.loads(json.dumps(counts))["wall_time"] == 1.235
    assert counts["completed"] == 3 and counts["fatal"] is None


def test_summary_json_and_run_finished_keep_their_shapes() -> None:
    """summary.json and the ledger's run_finished are contracts: their keys, nesting and values stay
    (grown, never changed: the submits in doubt and the orphans of the money issue are added)."""
    from batchgen.outcome.summary import summary_json

    s = summary(
        completed=7, failed=1, skipped=1, skipped_failed=1, resubmitted=2, removed=1, submits=9,
        requests=31, polls=15, rate_limited=2, peak_in_flight=4, learned_rpm=48.456, polls_counted=True,
        wall_time=61.23456, inference_times=[10.0, 12.5, 14.25], recovered=1, unreconciled=0,
        from_history=1, cost_usd=0.36, cost_failed_usd=0.04, cost_unknown=1,
        estimated_cost=0.400004, budget_reached=True, uncertain=1, uncertain_why="lag",
        orphans=1, orphan_usd=0.04, remaining_credits=12.0,
        warnings=["w"], unrecorded=["r-9"],
    )  # fmt: skip
    s.error("blocked", at=1_700_000_000.5, key="k", code=422)
    data = summary_json(s, started_at=1_700_000_000.0, finished_at=1_700_000_061.25, manifest="m.yaml")
    assert data == {
        "format": 1, "manifest": "m.yaml", "out": "/tmp/run-out",
        "started_at": "2023-11-14T22:13:20.000Z", "finished_at": "2023-11-14T22:14:21.250Z",
        "exit_code": 5, "exit_name": "budget",
        "exit_meaning": "--budget reached: nothing more submitted, jobs in flight finished",
        "jobs": {"total": 10, "done": 8, "completed": 7, "skipped": 1, "failed": 1, "skipped_failed": 1,
                 "not_run": 0, "resubmitted": 2, "removed": 1, "not_known_whether_paid": 1},
        "wall_time_s": 61.235, "images_per_minute": 6.86, "requests": 31, "submits": 9, "polls": 15,
        "requests_per_image": 4.43, "rate_limited": 2, "learned_rpm": 48.46,
        "inference_p50_s": 12.5, "inference_p95_s": 14.075,
        "cost": {"usd": 0.36, "failed_usd": 0.04, "unpriced_requests": 1, "estimated_usd": 0.4,
                 "orphan_requests": 1, "orphan_usd": 0.04, "remaining_credits": 12.0},
        "submits_in_doubt": {"found_in_history": 1, "sent_again_unchecked": 0, "why_not_known": "lag"},
        "emulated": False,
        "stopped": {"refused": None, "interrupted": False, "fatal": None, "write_error": None,
                    "budget_reached": True, "failure_rate_halted": False},
        "first_error": {"at": "2023-11-14T22:13:20.500Z", "key": "k", "code": 422, "error": "blocked"},
        "last_error": {"at": "2023-11-14T22:13:20.500Z", "key": "k", "code": 422, "error": "blocked"},
        "unrecorded_requests": ["r-9"], "warnings": ["w"],
        "images": "/tmp/run-out/images", "ledger": "/tmp/run-out/ledger.jsonl", "report": None,
    }  # fmt: skip
    assert list(data) == [
        "format", "manifest", "out", "started_at", "finished_at", "exit_code", "exit_name", "exit_meaning",
        "jobs", "wall_time_s", "images_per_minute", "requests", "submits", "polls", "requests_per_image",
        "rate_limited", "learned_rpm", "inference_p50_s", "inference_p95_s", "cost", "submits_in_doubt",
        "emulated", "stopped",
        "first_error", "last_error", "unrecorded_requests", "warnings", "images", "ledger", "report",
    ]  # fmt: skip
    assert list(data["jobs"]) == [
        "total", "done", "completed", "skipped", "failed", "skipped_failed", "not_run", "resubmitted",
        "removed", "not_known_whether_paid",
    ]  # fmt: skip
    stopped = ["refused", "interrupted", "fatal", "write_error", "budget_reached", "failure_rate_halted"]
    assert list(data["stopped"]) == stopped
    assert s.counts() == {
        "total": 10, "completed": 7, "failed": 1, "skipped": 1, "skipped_failed": 1, "not_run": 0,
        "resubmitted": 2, "removed": 1, "uncertain": 1, "submits": 9, "requests": 31, "polls": 15,
        "rate_limited": 2,
        "peak_in_flight": 4, "learned_rpm": 48.46, "polls_counted": True, "wall_time": 61.235, "recovered": 1,
        "unreconciled": 0, "from_history": 1, "cost_usd": 0.36, "cost_failed_usd": 0.04, "cost_unknown": 1,
        "orphans": 1, "orphan_usd": 0.04, "remaining_credits": 12.0, "budget_reached": True,
        "failure_rate_halted": False, "interrupted": False, "fatal": None,
        "write_error": None,
    }  # fmt: skip


def test_every_counter_of_the_summary_is_a_figure() -> None:
    """A field added to Summary is written (run_finished, summary.json) unless it is listed here."""
    import dataclasses

    from batchgen.outcome.summary import FIGURES

    not_figures = {
        "out_dir", "images_dir", "ledger_path", "inference_times", "unrecorded", "warnings", "report_path",
        "first_error", "last_error",
    }  # fmt: skip
    fields = {f.name for f in dataclasses.fields(Summary)}
    names = [f.name for f in FIGURES]
    assert len(names) == len(set(names))
    assert fields - not_figures <= set(names)
    assert all(hasattr(summary(), name) for name in names)


def test_the_outcome_in_one_line_and_in_fields() -> None:
    """outcome_line: name, exit code, jobs, cost (emulated said), time, report; a refusal says why."""
    from batchgen.outcome.summary import outcome_fields, outcome_line

    s = summary(completed=8, failed=1, not_run=1, cost_usd=0.36, wall_time=401.7, emulated=True)
    s.report_path = Path("/tmp/run-out/report.html")
    assert outcome_line(s, "nightly") == (
        "nightly: exit 1 (jobs_failed): 8 of 10 jobs done, 1 failed, 1 not finished; 0.36 USD"
        " (emulated, not paid); 6m 42s; report /tmp/run-out/report.html"
    )
    fields = outcome_fields(s)
    assert fields["exit_code"] == 1 and fields["jobs"] == {"total": 10, "done": 8, "failed": 1, "not_run": 1}
    assert json.loads(json.dumps(fields)) == fields
    refused = summary(refused="the estimate is over --budget")
    assert outcome_line(refused) == "exit 2 (usage): refused, nothing was sent: the estimate is over --budget"
