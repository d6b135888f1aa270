"""The control loop, judged as a user meets it: default settings, a server the runner was not told about.

These runs use Segmind's real figures (22 s inferences, a 60 s rate-limit window,
Retry-After in seconds) on virtual time (:mod:`tests.support.clock`): the emulator's
clock is the loop's, the runner measures it as it would measure the real service, and
nothing in the run's settings describes it. Waiting costs nothing and CPU load cannot
change what the runner sees, so the thresholds below judge the logic, not the machine.
"""

from __future__ import annotations

import statistics
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support import inprocess
from tests.support.inprocess import Emu, emulator, run_jobs


@pytest.fixture
def anyio_backend(virtual_time: object) -> object:
    """Every test here runs on virtual time: idle waits cost nothing, CPU load changes nothing."""
    return virtual_time


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMIND_API_KEY", "test-key")


# Base mode: Segmind's 22 s inferences.
make_jobs = partial(inprocess.make_jobs, mode="base", prompt="a lighthouse, study {i}")


async def change_after(emu: Emu, submits: int, changes: dict[str, Any]) -> None:
    """Change the emulator's settings once it has accepted ``submits`` submits."""
    while True:
        if len(await emu.requests()) >= submits:
            await emu.configure(**changes)
            return
        await anyio.sleep(5)


def per_minute(records: list[dict[str, Any]], start: float, end: float) -> float:
    """Requests the emulator accepted per minute between ``start`` and ``end`` (its clock)."""
    n = sum(1 for r in records if start <= r["submitted"] < end)
    return n * 60 / (end - start)


def submits_by_minute(records: list[dict[str, Any]]) -> list[int]:
    """Accepted submits in each minute of the run (for failure messages)."""
    start = records[0]["submitted"]
    minutes = [int((r["submitted"] - start) // 60) for r in records]
    return [minutes.count(m) for m in range(max(minutes) + 1)]


def utilisation(records: list[dict[str, Any]], workers: int) -> float:
    """Share of the workers' time spent on jobs, from the first submit to the last end."""
    span = max(r["end"] for r in records) - min(r["submitted"] for r in records)
    return sum(r["inference_time"] for r in records) / (workers * span)


@pytest.mark.anyio
async def test_untold_worker_bound_run_keeps_the_workers_busy(tmp_path: Path) -> None:
    """Told nothing, 8 workers of 22 s jobs: the workers are busy >= 85 % of the run (the limit)."""
    async with emulator(workers=8, time_scale=1.0) as emu:
        summary = await run_jobs(emu, make_jobs(120), tmp_path)
        records = await emu.requests()
    assert summary.completed == 120
    assert utilisation(records, 8) >= 0.85
    assert summary.peak_in_flight <= 5 * 8  # a bounded queue, not the whole batch


@pytest.mark.anyio
async def test_untold_rate_limit_is_found_and_held_with_few_429s(tmp_path: Path) -> None:
    """The Pro plan's 50 rpm, told nothing: >= 0.9 of it after the first minute, 429s under 3 %."""
    async with emulator(rpm=50, workers=64, time_scale=1.0) as emu:
        summary = await run_jobs(emu, make_jobs(200), tmp_path)
        records = await emu.requests()
        stats = await emu.stats()
    assert summary.completed == 200 and stats["duplicate_submits"] == 0
    start, last = records[0]["submitted"], records[-1]["submitted"]
    assert per_minute(records, start + 60, last) >= 0.9 * 50
    assert summary.rate_limited <= 0.03 * summary.requests
    assert summary.learned_rpm is not None and 45 <= summary.learned_rpm <= 50


@pytest.mark.anyio
async def test_told_the_plan_limit_runs_at_it_without_a_429(tmp_path: Path) -> None:
    """Told --rpm 50 on a 50 rpm server: paced at it from the first submit, no 429 at all."""
    async with emulator(rpm=50, workers=64, time_scale=1.0) as emu:
        summary = await run_jobs(emu, make_jobs(120), tmp_path, rpm=50)
        records = await emu.requests()
    assert summary.completed == 120 and summary.rate_limited == 0
    assert per_minute(records, records[0]["submitted"], records[-1]["submitted"]) >= 0.9 * 50


@pytest.mark.anyio
async def test_poll_429s_teach_that_polls_count_and_do_not_collapse_the_rate(tmp_path: Path) -> None:
    """A server counting polls, a runner not told: the limit is learned as 50 for all requests,
    and after the first two minutes images come at >= 0.8 of 50 / 3.2 per minute, <= 1.5 polls each
    (a collapse, as before this loop, was 1.3 per minute)."""
    async with emulator(rpm=50, rpm_counts_polls=True, workers=64, time_scale=1.0) as emu:
        summary = await run_jobs(emu, make_jobs(140), tmp_path)
        records = await emu.requests()
    assert summary.completed == 140
    assert summary.polls_counted and summary.learned_rpm is not None and summary.learned_rpm >= 45
    start, last = records[0]["submitted"], records[-1]["submitted"]
    assert per_minute(records, start + 120, last) >= 0.8 * 50 / 3.2, submits_by_minute(records)
    later = [r for r in records if r["submitted"] >= start + 120]
    assert statistics.fmean(r["status_polls"] for r in later) <= 1.5
    assert summary.rate_limited <= 0.03 * summary.requests


@pytest.mark.anyio
async def test_told_polls_count_every_request_is_paced(tmp_path: Path) -> None:
    """Told --rpm 50 --rpm-counts-polls: no 429, ~1.2 polls per image, near 50 / 3.2 images per minute."""
    async with emulator(rpm=50, rpm_counts_polls=True, workers=64, time_scale=1.0) as emu:
        summary = await run_jobs(emu, make_jobs(100), tmp_path, rpm=50, rpm_counts_polls=True)
        records = await emu.requests()
    assert summary.completed == 100 and summary.rate_limited == 0
    assert summary.polls_per_image is not None and summary.polls_per_image <= 1.5
    assert per_minute(records, records[0]["submitted"], records[-1]["submitted"]) >= 0.85 * 50 / 3.2


@pytest.mark.anyio
async def test_latency_4x_down_mid_run_is_relearned_within_ten_completions(tmp_path: Path) -> None:
    """Jobs suddenly 4x faster: within ~10 completions, finished jobs are noticed within 25 % of latency."""
    jobs = make_jobs(160)
    async with emulator(workers=16, time_scale=4.0) as emu, anyio.create_task_group() as tg:
        tg.start_soon(change_after, emu, 60, {"time_scale": 1.0})
        summary = await run_jobs(emu, jobs, tmp_path)
        records = await emu.requests()
    assert summary.completed == 160
    fast = sorted((r for r in records if r["inference_time"] < 40), key=lambda r: r["end"])
    late = [(r["first_completed_at"] - r["end"]) / (r["end"] - r["submitted"]) > 0.25 for r in fast]
    settled = next(i for i in range(len(late)) if not any(late[i : i + 20]))
    assert settled <= 10


@pytest.mark.anyio
async def test_latency_4x_up_mid_run_keeps_detection_prompt(tmp_path: Path) -> None:
    """Jobs suddenly 4x slower: they are still noticed within ~10 % of their (longer) latency."""
    async with emulator(workers=16, time_scale=0.5) as emu, anyio.create_task_group() as tg:
        tg.start_soon(change_after, emu, 50, {"time_scale": 2.0})
        summary = await run_jobs(emu, make_jobs(120), tmp_path)
        records = await emu.requests()
    assert summary.completed == 120
    slow = [r for r in records if r["inference_time"] > 25]
    delays = [(r["first_completed_at"] - r["end"]) / (r["end"] - r["submitted"]) for r in slow]
    assert statistics.median(delays) <= 0.1


@pytest.mark.anyio
async def test_a_short_batch_told_only_rpm_does_not_spend_the_window_on_polls(tmp_path: Path) -> None:
    """12 jobs on a 50 rpm server counting polls, told only --rpm 50: sparse polls, no 429, no idle minute."""
    async with emulator(rpm=50, rpm_counts_polls=True, workers=64, time_scale=1.0) as emu:
        summary = await run_jobs(emu, make_jobs(12), tmp_path, rpm=50)
        records = await emu.requests()
    assert summary.completed == 12 and summary.rate_limited == 0
    assert summary.polls_per_image is not None and summary.polls_per_image <= 2.0  # free: about 5
    # 12 submits at 50 rpm take 14 s, the last job 22 s more: no wait for a full window to age out.
    assert max(r["end"] for r in records) - records[0]["submitted"] < 60
