"""Tests of the end-of-run summary: derived figures, formatting, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen.outcome.summary import Summary, format_duration, format_summary, percentile


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


def test_percentile_interpolates_linearly() -> None:
    """p50/p95 use linear interpolation between ranks; empty input has no percentile."""
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([7.0], 95) == 7.0
    assert percentile([1.0, 2.0], 0) == 1.0 and percentile([1.0, 2.0], 100) == 2.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="outside 0-100"):
        percentile([1.0], 150)


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


def test_exit_code_follows_the_outcome() -> None:
    """0 all done, 1 failed jobs (now or earlier), 3 fatal API stop, 130 interrupted."""
    assert summary(completed=10).exit_code == 0
    assert summary(completed=9, failed=1).exit_code == 1
    assert summary(completed=9, skipped_failed=1).exit_code == 1
    assert summary(completed=1, failed=1, fatal="401: invalid API key").exit_code == 3
    assert summary(completed=1, fatal="x", interrupted=True).exit_code == 130
    # A write that failed says "make room" whatever else happened: 4, distinct from 1.
    assert summary(completed=1, failed=1, write_error="disk full", interrupted=True).exit_code == 4


def test_counts_are_json_ready() -> None:
    """counts() is what run_finished records: plain JSON values."""
    counts = summary(completed=3, wall_time=1.23456).counts()
    assert json.loads(json.dumps(counts))["wall_time"] == 1.235
    assert counts["completed"] == 3 and counts["fatal"] is None


def test_format_duration() -> None:
    """Durations read as seconds, minutes or hours."""
    assert format_duration(4.24) == "4.2s"
    assert format_duration(83.4) == "1m 23s"
    assert format_duration(3725) == "1h 02m 05s"
