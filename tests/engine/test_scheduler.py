"""Whole runs in process: the scheduler + ledger + storage against the emulator (ASGITransport)."""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import anyio
import httpx
import pytest

from batchgen.engine.runner import run
from batchgen.manifest.job import Job
from batchgen.manifest.params import validate_params
from tests.support import inprocess
from tests.support.clock import current_loop
from tests.support.inprocess import BASE, Emu, make_jobs, run_jobs, settings
from tests.support.outdir import assert_images_valid, events, ledger

SCALE = 0.001


@pytest.fixture
def anyio_backend(virtual_time: object) -> object:
    """Every test here runs on virtual time (tests/support/clock.py)."""
    return virtual_time


# 22 s of base inference scaled to 22 ms, on 16 workers, 32 px images (unless a test says).
emulator = partial(inprocess.emulator, time_scale=SCALE, image_size=32, workers=16)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMIND_API_KEY", "test-key")


@pytest.mark.anyio
async def test_200_jobs_complete_with_valid_images_and_one_completed_line_each(tmp_path: Path) -> None:
    """A 200-job batch completes: every image decodes, one `completed` line per job, exit 0."""
    jobs = make_jobs(200)
    async with emulator() as emu:
        summary = await run_jobs(emu, jobs, tmp_path)
        stats = await emu.stats()
    assert summary.completed == 200
    assert summary.exit_code == 0
    completed = events(tmp_path, "completed")
    assert Counter(e["key"] for e in completed) == Counter(j.key for j in jobs)
    assert all(e["sha256"] and e["bytes"] > 0 and e["file"].startswith("images/") for e in completed)
    assert_images_valid(tmp_path, jobs)
    assert stats["submits_accepted"] == 200
    assert stats["duplicate_submits"] == 0
    assert ledger(tmp_path)[0]["event"] == "run_started"
    assert ledger(tmp_path)[-1]["event"] == "run_finished"
    assert "test-key" not in (tmp_path / "ledger.jsonl").read_text()


@pytest.mark.anyio
async def test_rerunning_a_finished_batch_submits_nothing(tmp_path: Path) -> None:
    """A second run of a finished batch skips every job and makes zero submits."""
    jobs = make_jobs(20)
    async with emulator() as emu:
        await run_jobs(emu, jobs, tmp_path)
        before = await emu.stats()
        summary = await run_jobs(emu, jobs, tmp_path)
        after = await emu.stats()
    assert after["submits_accepted"] == before["submits_accepted"] == 20
    assert (summary.skipped, summary.completed, summary.submits) == (20, 0, 0)
    assert summary.exit_code == 0


@pytest.mark.anyio
async def test_a_deleted_image_is_fetched_again_without_paying(tmp_path: Path) -> None:
    """A completed job whose file is gone: the rerun fetches its result again, no new submit."""
    jobs = make_jobs(5)
    async with emulator() as emu:
        await run_jobs(emu, jobs, tmp_path)
        (tmp_path / "images" / jobs[2].filename).unlink()
        summary = await run_jobs(emu, jobs, tmp_path)
        stats = await emu.stats()
    assert (summary.skipped, summary.completed, summary.resubmitted) == (4, 1, 0)
    assert stats["submits_accepted"] == 5
    assert_images_valid(tmp_path, jobs)


@pytest.mark.anyio
async def test_a_deleted_image_past_retention_comes_from_the_history(tmp_path: Path) -> None:
    """Past the result's retention the image still comes from the history's generation_url."""
    jobs = make_jobs(3)
    async with emulator() as emu:
        await run_jobs(emu, jobs, tmp_path)
        (tmp_path / "images" / jobs[1].filename).unlink()
        emu.offset[0] += 2 * 3600.0
        loop = current_loop()  # the wall clock is read from worker threads too
        summary = await run_jobs(emu, jobs, tmp_path, wall_clock=lambda: loop.wall() + 2 * 3600.0)
        stats = await emu.stats()
    assert (summary.completed, summary.from_history, summary.resubmitted) == (1, 1, 0)
    assert stats["submits_accepted"] == 3
    assert_images_valid(tmp_path, jobs)


async def _cancel_midway(emu: Emu, jobs: list[Job], out: Path, *, after_submits: int) -> set[str]:
    """Run until the emulator accepted ``after_submits`` submits, cancel; the keys in flight."""
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while True:
                if (await emu.stats())["submits_accepted"] >= after_submits:
                    tg.cancel_scope.cancel()
                    return
                await anyio.sleep(0.002)

        tg.start_soon(watch)
        await run_jobs(emu, jobs, out)
    submitted = {e["key"] for e in events(out, "submitted")}
    finished = {e["key"] for e in events(out, "completed")}
    return submitted - finished


@pytest.mark.anyio
async def test_cancelled_run_rerun_within_ttl_resubmits_nothing_in_flight(tmp_path: Path) -> None:
    """Cancelled mid-way and rerun within the TTL: in-flight jobs are polled, never submitted again."""
    jobs = make_jobs(60, mode="base")  # 22 s scaled to 22 ms on 4 workers: a queue builds up
    async with emulator(workers=4) as emu:
        in_flight = await _cancel_midway(emu, jobs, tmp_path, after_submits=30)
        assert in_flight, "the cancel should leave jobs in flight"
        accepted = (await emu.stats())["submits_accepted"]
        submitted_keys = {e["key"] for e in events(tmp_path, "submitted")}
        assert accepted == len(submitted_keys)  # every accepted submit reached the ledger
        summary = await run_jobs(emu, jobs, tmp_path)
        stats = await emu.stats()
    assert stats["duplicate_submits"] == 0
    assert stats["submits_accepted"] == 60
    assert summary.completed == 60 - len(submitted_keys - in_flight)
    assert summary.resubmitted == 0
    assert_images_valid(tmp_path, jobs)


@pytest.mark.parametrize("history", [True, False], ids=["history", "no-history"])
@pytest.mark.parametrize("our_clock_jumps", [True, False], ids=["ledger-says-expired", "poll-answers-404"])
@pytest.mark.anyio
async def test_cancelled_run_rerun_after_ttl(tmp_path: Path, our_clock_jumps: bool, history: bool) -> None:
    """Rerun after the TTL: the jobs that were in flight get their images from the request
    history, paying nothing again; without a history exactly those are submitted again."""
    jobs = make_jobs(60, mode="base")
    async with emulator(workers=4, history=history) as emu:
        in_flight = await _cancel_midway(emu, jobs, tmp_path, after_submits=30)
        assert in_flight
        accepted = (await emu.stats())["submits_accepted"]
        emu.offset[0] += 4000.0  # past the emulator's 1-hour retention
        jump = 4000.0 if our_clock_jumps else 0.0
        loop = current_loop()  # the wall clock is read from worker threads too
        summary = await run_jobs(emu, jobs, tmp_path, wall_clock=lambda: loop.wall() + jump)
        stats = await emu.stats()
    never_submitted = 60 - accepted
    paid_again = 0 if history else len(in_flight)
    assert stats["duplicate_submits"] == paid_again
    assert stats["submits_accepted"] == 60 + paid_again
    assert summary.resubmitted == paid_again
    assert summary.from_history == len(in_flight) - paid_again
    assert summary.completed == never_submitted + len(in_flight)
    # ``expired`` says "submitted again": only when the history could not give the image.
    assert {e["key"] for e in events(tmp_path, "expired")} == (set() if history else in_flight)
    if not history:
        assert any("request history unavailable" in w for w in summary.warnings)
    assert_images_valid(tmp_path, jobs)


@pytest.mark.anyio
async def test_poll_404_is_recorded_expired_and_resubmitted(tmp_path: Path) -> None:
    """A request that vanishes (404 on poll) is written `expired` and submitted again, then completes."""
    jobs = make_jobs(3, mode="base")
    # Retention shorter than the job: the first poll always finds the request gone (and no
    # request history to find its image in: see test_cancelled_run_rerun_after_ttl).
    async with emulator(ttl=0.001, workers=4, history=False) as emu, anyio.create_task_group() as tg:

        async def restore_ttl() -> None:
            while True:
                if len(events(tmp_path, "expired")) >= 3:
                    await emu.configure(ttl=3600.0)
                    return
                await anyio.sleep(0.002)

        tg.start_soon(restore_ttl)
        summary = await run_jobs(emu, jobs, tmp_path)
    assert summary.completed == 3
    assert summary.resubmitted == 3
    assert len(events(tmp_path, "submitted")) >= 6


@pytest.mark.anyio
async def test_faults_and_drops_are_retried_until_all_complete(tmp_path: Path) -> None:
    """With fault_rate 0.1 and drop_rate 0.02 on every request, all jobs still complete."""
    jobs = make_jobs(100)
    async with emulator(fault_rate=0.1, drop_rate=0.02, fault_seed=3) as emu:
        # A submit answered 5xx or dropped is in doubt: the emulator's history shows a request
        # at once, so told a lag of 0 the run proves each absent and submits it again.
        summary = await run_jobs(emu, jobs, tmp_path, history_lag=0.0)
        stats = await emu.stats()
    assert summary.completed == 100
    assert summary.exit_code == 0
    assert sum(stats["rejected"].values()) > 0  # faults really happened
    assert_images_valid(tmp_path, jobs)


@pytest.mark.anyio
async def test_invalid_key_stops_at_once_with_exit_3(tmp_path: Path) -> None:
    """A 401 stops the run after one request (the probe), nothing recorded failed, exit 3."""
    jobs = make_jobs(50)
    async with emulator(api_key="the-right-key") as emu:
        summary = await run_jobs(emu, jobs, tmp_path)
        stats = await emu.stats()
    assert summary.exit_code == 3
    assert summary.fatal and "401" in summary.fatal
    assert stats["rejected"]["401"] == 1
    assert summary.completed == 0
    assert events(tmp_path, "failed") == []


@pytest.mark.anyio
async def test_out_of_credits_stops_submits_finishes_in_flight_exit_3(tmp_path: Path) -> None:
    """406: nothing more is submitted, jobs already accepted still complete, exit 3."""
    jobs = make_jobs(30)
    async with emulator(credits=10) as emu:
        summary = await run_jobs(emu, jobs, tmp_path, concurrency=4)
        stats = await emu.stats()
    assert summary.exit_code == 3
    assert summary.fatal and "406" in summary.fatal
    assert stats["submits_accepted"] == 10
    assert summary.completed == 10
    assert summary.not_run == 20
    assert stats["rejected"]["406"] <= 4  # one per slot that tried, then no more


@pytest.mark.anyio
async def test_blocked_prompt_is_a_failed_line_with_detail_exit_1(tmp_path: Path) -> None:
    """A prompt moderation blocks is a permanent `failed` line with the server's detail; exit 1."""
    jobs = make_jobs(4) + make_jobs(1, prompt="a forbidden castle")
    async with emulator(blocked_terms=("forbidden",)) as emu:
        summary = await run_jobs(emu, jobs, tmp_path)
        again = await run_jobs(emu, jobs, tmp_path)
        retried = await run_jobs(emu, jobs, tmp_path, retry_failed=True)
    assert (summary.completed, summary.failed, summary.exit_code) == (4, 1, 1)
    failed = events(tmp_path, "failed")
    assert failed[0]["retryable"] is False
    assert "forbidden" in failed[0]["error"]
    assert failed[0]["code"] == 422
    assert failed[0]["request_id"]
    # Rerun: skipped (still exit 1); with --retry-failed it is tried again.
    assert (again.skipped_failed, again.submits, again.exit_code) == (1, 0, 1)
    assert (retried.submits, retried.failed) == (1, 1)


@pytest.mark.anyio
async def test_bad_image_is_downloaded_again(tmp_path: Path) -> None:
    """A truncated download fails its image check, is retried, and the saved file is whole."""
    truncated: list[str] = []

    class Truncating(httpx.AsyncBaseTransport):
        def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
            self.inner = inner

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            if request.url.path.startswith("/images/") and not truncated:
                body = await response.aread()
                truncated.append(request.url.path)
                return httpx.Response(200, content=body[: len(body) // 2], headers=response.headers)
            return response

    jobs = make_jobs(3)
    async with inprocess.emulator(Truncating, time_scale=SCALE, image_size=32) as emu:
        summary = await run(
            jobs, out_dir=tmp_path, client=emu.http, base_url=BASE, settings=settings(), progress=False
        )
    assert truncated
    assert summary.completed == 3
    assert_images_valid(tmp_path, jobs)


@pytest.mark.anyio
async def test_jobs_removed_from_the_manifest_are_reported(tmp_path: Path) -> None:
    """Jobs in the ledger but no longer in the job list are left alone and counted as removed."""
    jobs = make_jobs(6)
    async with emulator() as emu:
        await run_jobs(emu, jobs, tmp_path)
        summary = await run_jobs(emu, jobs[:4], tmp_path)
    assert (summary.removed, summary.skipped, summary.submits) == (2, 4, 0)
    assert (tmp_path / "images" / jobs[5].filename).exists()


@pytest.mark.anyio
async def test_polls_per_image_stay_low_with_a_learned_cadence(tmp_path: Path) -> None:
    """The adaptive cadence keeps status polls per image small even with a queue (no tight loop)."""
    jobs = make_jobs(40, mode="base")
    async with emulator(workers=4) as emu:
        summary = await run_jobs(emu, jobs, tmp_path)
    assert summary.completed == 40
    assert summary.polls_per_image is not None and summary.polls_per_image < 8


@pytest.mark.anyio
async def test_unknown_model_stops_at_once_with_exit_3(tmp_path: Path) -> None:
    """404 on submit (a model slug the API does not know) is fatal: one request, exit 3."""
    p = validate_params({"prompt": "a fox"})
    jobs = [
        Job(index=i, key=f"{i:064x}", model="no-such-model", params=p, filename=f"{i}.png") for i in range(10)
    ]
    async with emulator() as emu:
        summary = await run_jobs(emu, jobs, tmp_path)
        stats = await emu.stats()
    assert summary.exit_code == 3
    assert summary.fatal and "404" in summary.fatal
    assert stats["rejected"] == {"404": 1}


@pytest.mark.anyio
async def test_server_errors_everywhere_leave_submits_in_doubt_and_the_rerun_settles_them(
    tmp_path: Path,
) -> None:
    """Server errors on every request, the history too: each submit is in doubt and stays so
    (not known whether paid, exit 1, never sent again blindly); the rerun, the server well,
    finds none of them in the history and submits each once."""
    jobs = make_jobs(3)
    async with emulator(fault_rate=1.0) as emu:
        summary = await run_jobs(emu, jobs, tmp_path, max_attempts=3, reconcile_patience=1.0)
        doubts = events(tmp_path, "uncertain")
        assert (summary.uncertain, summary.failed, summary.exit_code) == (3, 0, 1)
        assert len(doubts) == 3 and all(e["code"] in (500, 502, 504) for e in doubts)
        assert (await emu.stats())["submits_accepted"] == 0
        await emu.configure(fault_rate=0.0)
        rerun = await run_jobs(emu, jobs, tmp_path, history_lag=0.0)
        stats = await emu.stats()
    assert (rerun.completed, rerun.resubmitted, rerun.exit_code) == (3, 0, 0)
    assert stats["submits_accepted"] == 3 and stats["duplicate_submits"] == 0
    assert_images_valid(tmp_path, jobs)
