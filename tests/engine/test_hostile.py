"""A hostile or broken server ends in a job failure, never a hang (in process, on virtual time).

Each test turns on one of the emulator's hostile modes and runs with the defaults a
user gets. The loop's clock is virtual (:mod:`tests.support.clock`), so the real bounds (a 120 s
Retry-After cap, a retention window of minutes) are what is tested, not shortened
copies of them.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.support import inprocess
from tests.support.inprocess import emulator, run_jobs

RETRY_AFTER_CAP = 120.0  # documented in docs/running.md: "Every wait has a bound"


@pytest.fixture
def anyio_backend(virtual_time: object) -> object:
    """Every test here runs on virtual time (tests/support/clock.py)."""
    return virtual_time


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMIND_API_KEY", "test-key")


make_jobs = partial(inprocess.make_jobs, prompt="a harbour at dusk, study {i}")


def failed_lines(out: Path) -> list[dict[str, Any]]:
    lines = (out / "ledger.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == "failed"]


@pytest.mark.anyio
async def test_an_html_image_is_a_bounded_job_failure(tmp_path: Path) -> None:
    """The image host answers an HTML page: each job fails after max_attempts downloads, exit 1."""
    jobs = make_jobs(3)
    async with emulator(image_fault="html") as emu:
        summary = await run_jobs(emu, jobs, tmp_path)
        log = await emu.requests()
    assert (summary.completed, summary.failed, summary.exit_code) == (0, 3, 1)
    assert all(r["downloads"] <= 6 for r in log), [r["downloads"] for r in log]
    assert len(log) == 3  # nothing resubmitted: the request itself is fine
    assert all(e["retryable"] for e in failed_lines(tmp_path))
    assert not list((tmp_path / "images").glob("*"))


@pytest.mark.parametrize("fault", ["forbidden", "gone"])
@pytest.mark.anyio
async def test_a_cdn_refusal_fails_the_job_not_the_run(tmp_path: Path, fault: str) -> None:
    """403/410 from the image URL: the result is fetched again for a fresh URL, the job fails alone.

    The run goes on (exit 1, "jobs failed", not 3, "the run was stopped") and the
    request, still within retention, is never paid for again.
    """
    jobs = make_jobs(4)
    async with emulator(image_fault=fault, image_fault_rate=0.5, fault_seed=3) as emu:
        summary = await run_jobs(emu, jobs, tmp_path)
        log = await emu.requests()
    assert summary.fatal is None
    assert summary.completed + summary.failed == 4
    assert len(log) == 4, "a request within retention was submitted again"
    # Each refusal fetched the result again for a fresh URL.
    refused = [r for r in log if r["downloads"] > 1]
    assert refused and all(r["result_fetches"] >= r["downloads"] for r in refused)
    assert summary.exit_code == (1 if summary.failed else 0)


@pytest.mark.anyio
async def test_an_image_url_refused_once_is_fetched_again_and_saved(tmp_path: Path) -> None:
    """A signed URL that expired before the download: one refetch, the image is saved, nothing repaid."""
    jobs = make_jobs(6)
    async with emulator(image_fault="gone", image_fault_rate=0.3, fault_seed=5) as emu:
        summary = await run_jobs(emu, jobs, tmp_path)
        log = await emu.requests()
    assert (summary.completed, summary.exit_code) == (6, 0)
    assert len(log) == 6
    assert any(r["downloads"] > 1 for r in log), "the fault never fired: pick another fault_seed"


@pytest.mark.anyio
async def test_a_retry_after_of_a_billion_seconds_is_capped(tmp_path: Path) -> None:
    """Retry-After: 1000000000 on every 429 (5 rpm): the run waits at most the cap, then goes on."""
    jobs = make_jobs(12)
    async with emulator(rpm=5, retry_after="1000000000", workers=8) as emu:
        summary = await run_jobs(emu, jobs, tmp_path)
        log = await emu.requests()
        rejected = (await emu.stats())["rejected"]
    assert (summary.completed, summary.exit_code) == (12, 0)
    assert rejected.get("429", 0) >= 1, "the limit was never hit: the test proves nothing"
    submitted = sorted(r["submitted"] for r in log)
    gaps = [b - a for a, b in zip(submitted, submitted[1:], strict=False)]
    # The longest pause is one capped Retry-After (plus a little scheduling), not a billion seconds.
    assert max(gaps) <= RETRY_AFTER_CAP + 30, gaps


@pytest.mark.anyio
async def test_a_job_stuck_processing_fails_retryably_at_the_retention_window(tmp_path: Path) -> None:
    """A job that stays PROCESSING forever fails (retryable) once retention has passed; the rest complete."""
    jobs = make_jobs(6)
    async with emulator(stall_rate=0.5, fault_seed=2) as emu:
        # The server keeps results an hour; this run is told a 5-minute window (a tighter plan).
        summary = await run_jobs(emu, jobs, tmp_path, retention=300)
        log = await emu.requests()
    failed = failed_lines(tmp_path)
    assert summary.failed == len(failed) >= 1
    assert summary.completed == 6 - summary.failed
    assert all(e["retryable"] and "retention" in e["error"] for e in failed), failed
    assert summary.exit_code == 1
    assert len(log) == 6  # a stuck job is not paid for again within the run
