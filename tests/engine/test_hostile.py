"""A hostile or broken server ends in a job failure, never a hang (in process, on a warped clock).

Each test turns on one of the emulator's hostile modes and runs with the defaults a
user gets. The loop's clock runs :data:`SPEED` times faster than real time
(:mod:`tests.warp`), so the real bounds (a 120 s Retry-After cap, a retention window of
minutes) are what is tested, not shortened copies of them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchgen.emulator import EmulatorConfig, create_app
from batchgen.engine.runner import run
from batchgen.engine.settings import RunSettings
from batchgen.manifest.job import DEFAULT_MODEL, Job, job_key
from batchgen.manifest.params import validate_params
from batchgen.outcome.summary import Summary
from tests.warp import current_loop, warp_backend

BASE = "http://localhost"
SPEED = 40.0
RETRY_AFTER_CAP = 120.0  # documented in docs/running.md: "Every wait has a bound"


@pytest.fixture
def anyio_backend() -> object:
    return warp_backend(SPEED)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMIND_API_KEY", "test-key")


def make_jobs(n: int) -> list[Job]:
    jobs = []
    for i in range(n):
        p = validate_params({"prompt": f"a harbour at dusk, study {i}", "seed": i + 1, "mode": "fast"})
        jobs.append(
            Job(
                index=i, key=job_key(DEFAULT_MODEL, p, {}), model=DEFAULT_MODEL, params=p, filename=f"{i}.png"
            )
        )
    return jobs


@asynccontextmanager
async def emulator(**config: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process emulator on the warped loop's clock, with small images."""
    config.setdefault("image_size", 16)
    app = create_app(EmulatorConfig(clock=current_loop().time, **config))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        yield http


async def run_jobs(http: httpx.AsyncClient, jobs: list[Job], out: Path, **kw: Any) -> Summary:
    kw.setdefault("seed", 1)
    return await run(
        jobs,
        out_dir=out,
        client=http,
        base_url=BASE,
        settings=RunSettings(**kw),
        progress=False,
        wall_clock=current_loop().wall,
    )


async def request_log(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    return (await http.get(f"{BASE}/_emulator/requests")).json()  # type: ignore[no-any-return]


async def stats(http: httpx.AsyncClient) -> dict[str, Any]:
    return (await http.get(f"{BASE}/_emulator/stats")).json()  # type: ignore[no-any-return]


def failed_lines(out: Path) -> list[dict[str, Any]]:
    lines = (out / "ledger.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == "failed"]


@pytest.mark.anyio
async def test_an_html_image_is_a_bounded_job_failure(tmp_path: Path) -> None:
    """The image host answers an HTML page: each job fails after max_attempts downloads, exit 1."""
    jobs = make_jobs(3)
    async with emulator(image_fault="html") as http:
        summary = await run_jobs(http, jobs, tmp_path)
        log = await request_log(http)
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
    async with emulator(image_fault=fault, image_fault_rate=0.5, fault_seed=3) as http:
        summary = await run_jobs(http, jobs, tmp_path)
        log = await request_log(http)
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
    async with emulator(image_fault="gone", image_fault_rate=0.3, fault_seed=5) as http:
        summary = await run_jobs(http, jobs, tmp_path)
        log = await request_log(http)
    assert (summary.completed, summary.exit_code) == (6, 0)
    assert len(log) == 6
    assert any(r["downloads"] > 1 for r in log), "the fault never fired: pick another fault_seed"


@pytest.mark.anyio
async def test_a_retry_after_of_a_billion_seconds_is_capped(tmp_path: Path) -> None:
    """Retry-After: 1000000000 on every 429 (5 rpm): the run waits at most the cap, then goes on."""
    jobs = make_jobs(12)
    async with emulator(rpm=5, retry_after="1000000000", workers=8) as http:
        summary = await run_jobs(http, jobs, tmp_path)
        log = await request_log(http)
        rejected = (await stats(http))["rejected"]
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
    async with emulator(stall_rate=0.5, fault_seed=2) as http:
        # The server keeps results an hour; this run is told a 5-minute window (a tighter plan).
        summary = await run_jobs(http, jobs, tmp_path, retention=300)
        log = await request_log(http)
    failed = failed_lines(tmp_path)
    assert summary.failed == len(failed) >= 1
    assert summary.completed == 6 - summary.failed
    assert all(e["retryable"] and "retention" in e["error"] for e in failed), failed
    assert summary.exit_code == 1
    assert len(log) == 6  # a stuck job is not paid for again within the run
