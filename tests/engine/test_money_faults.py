"""Never pay twice when the server is slow, broken or confusing (real sockets, the hostile server).

Each test plays one row of issue 17's table against :mod:`tests.support.hostile` (the
emulator behind a real socket, with the faults the emulator cannot play) and judges the
run by the server's own counts: accepted submits and duplicate payments.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchgen.engine.runner import run
from batchgen.engine.settings import RunSettings
from batchgen.manifest.job import DEFAULT_MODEL, Job, job_key
from batchgen.manifest.params import validate_params
from batchgen.outcome.exits import ExitCode
from batchgen.outcome.read import read_status
from batchgen.outcome.status_text import format_status
from batchgen.outcome.summary import Summary
from tests.support.hostile import (
    DropAfterForward,
    Hang,
    Hostile,
    Replace,
    Request,
    Respond,
    hostile_server,
)

# A real socket (the hostile server) and real time: not in the fast subset (-m "not e2e").
pytestmark = pytest.mark.e2e

HTML = b"<html><body>Down for maintenance</body></html>"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMIND_API_KEY", "test-key")


def make_jobs(n: int) -> list[Job]:
    jobs = []
    for i in range(n):
        p = validate_params({"prompt": f"a lighthouse in fog, study {i}", "seed": i + 1, "mode": "fast"})
        jobs.append(
            Job(
                index=i, key=job_key(DEFAULT_MODEL, p, {}), model=DEFAULT_MODEL, params=p, filename=f"{i}.png"
            )
        )
    return jobs


def settings(**kw: Any) -> RunSettings:
    """Short bounds (this server is local) and a history that shows requests at once."""
    kw.setdefault("seed", 1)
    kw.setdefault("request_timeout", 2.0)
    kw.setdefault("history_lag", 0.5)
    kw.setdefault("reconcile_patience", 10.0)
    return RunSettings(**kw)


async def run_against(hostile: Hostile, jobs: list[Job], out: Path, **kw: Any) -> Summary:
    return await run(jobs, out_dir=out, base_url=hostile.base_url, settings=settings(**kw), progress=False)


def ledger(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines()]


def completed_from(out: Path) -> dict[str, str]:
    """Job key -> the request id its image came from."""
    return {e["key"]: e["request_id"] for e in ledger(out) if e["event"] == "completed"}


async def assert_paid_once(hostile: Hostile, jobs: list[Job], out: Path) -> dict[str, Any]:
    """Every job has its image, each from its own request, and the server took each job once."""
    stats = await hostile.stats()
    assert stats["duplicate_submits"] == 0
    assert stats["submits_accepted"] == len(jobs)
    made = completed_from(out)
    assert set(made) == {job.key for job in jobs}
    assert len(set(made.values())) == len(jobs)  # one request, one job
    for job in jobs:
        assert (out / "images" / job.filename).stat().st_size > 0
    return stats


def first(kind: str, action: Any, *, times: int = 1) -> Callable[[Request], Any]:
    """A rule: the first ``times`` requests of ``kind`` get ``action``, the rest go through."""
    return lambda r: action if r.kind == kind and r.n <= times else None


@pytest.mark.anyio
async def test_answers_that_come_after_the_timeout_are_found_in_the_history(tmp_path: Path) -> None:
    """The server takes each submit but answers after the client's timeout: each submit is
    in doubt, found in the history and adopted; two jobs, two payments, both images."""
    jobs = make_jobs(2)
    started = time.monotonic()
    async with hostile_server(lambda r: None, answer_delay=1.5) as hostile:
        summary = await run_against(hostile, jobs, tmp_path, request_timeout=0.5)
        await assert_paid_once(hostile, jobs, tmp_path)
        assert hostile.seen["submit"] == 2
    assert summary.completed == 2 and summary.recovered == 2 and summary.uncertain == 0
    assert summary.exit_code == ExitCode.OK
    assert time.monotonic() - started < 30
    doubts = [e for e in ledger(tmp_path) if e["event"] == "uncertain"]
    assert len(doubts) == 2 and all("no answer within" in e["error"] for e in doubts)


@pytest.mark.anyio
async def test_an_answer_lost_after_the_server_took_the_submit_is_adopted_and_priced_once(
    tmp_path: Path,
) -> None:
    """The connection drops after the POST was accepted: the request is found in the
    history, adopted, and the run's cost is one request's, as charged."""
    jobs = make_jobs(1)
    async with hostile_server(first("submit", DropAfterForward())) as hostile:
        summary = await run_against(hostile, jobs, tmp_path)
        await assert_paid_once(hostile, jobs, tmp_path)
    assert summary.recovered == 1 and summary.orphans == 0
    assert summary.cost_usd == pytest.approx(0.04)


@pytest.mark.anyio
async def test_a_200_html_page_that_never_reached_the_api_is_submitted_again_after_the_lag(
    tmp_path: Path,
) -> None:
    """A proxy answers the submit 200 with HTML and never passes it on: the submit is in
    doubt, the history (read past its lag) does not hold it, so it is sent again: once."""
    jobs = make_jobs(1)
    async with hostile_server(first("submit", Respond(200, HTML, "text/html"))) as hostile:
        summary = await run_against(hostile, jobs, tmp_path)
        await assert_paid_once(hostile, jobs, tmp_path)
        assert hostile.seen["submit"] == 2
    assert summary.completed == 1 and summary.recovered == 0
    events = [e["event"] for e in ledger(tmp_path) if e["key"] == jobs[0].key]
    assert events[:3] == ["submitting", "uncertain", "submitting"]


@pytest.mark.anyio
async def test_submits_in_doubt_give_their_places_to_the_other_jobs_meanwhile(tmp_path: Path) -> None:
    """Three jobs in flight at most and the first three submits answered 502 (never passed
    on): while those wait out the history's lag, the nine other jobs are submitted and
    finished; the three then go again, once each."""
    jobs = make_jobs(12)
    async with hostile_server(first("submit", Respond(502, b'{"error": "bad gateway"}'), times=3)) as hostile:
        summary = await run_against(hostile, jobs, tmp_path, concurrency=3, history_lag=2.0)
        await assert_paid_once(hostile, jobs, tmp_path)
    assert summary.completed == 12 and summary.uncertain == 0
    events = ledger(tmp_path)
    doubted = {e["key"] for e in events if e["event"] == "uncertain"}
    assert len(doubted) == 3
    first_resend = min(
        i for i, e in enumerate(events) if e["event"] == "submitting" and e["key"] in doubted and
        any(d["event"] == "uncertain" and d["key"] == e["key"] for d in events[:i])
    )  # fmt: skip
    others_done = [i for i, e in enumerate(events) if e["event"] == "completed" and e["key"] not in doubted]
    assert len(others_done) == 9 and max(others_done) < first_resend


@pytest.mark.anyio
async def test_doubts_found_while_other_jobs_wait_for_a_place_are_polled_at_once(tmp_path: Path) -> None:
    """Three jobs in flight at most and the first six submits taken but answered with an
    HTML page (a proxy): found in the history while the feeder waits for a place, each is
    adopted and polled; every job one payment, one image."""
    jobs = make_jobs(60)
    rule = first("submit", Respond(200, HTML, "text/html", forward=True), times=6)
    async with hostile_server(rule, time_scale=0.01) as hostile:
        summary = await run_against(hostile, jobs, tmp_path, concurrency=3)
        await assert_paid_once(hostile, jobs, tmp_path)
    assert summary.completed == 60 and summary.recovered == 6 and summary.uncertain == 0


@pytest.mark.anyio
async def test_a_200_html_page_after_the_api_took_the_submit_is_adopted(tmp_path: Path) -> None:
    """The proxy passed the submit on, then answered HTML: found in the history, one POST."""
    jobs = make_jobs(1)
    rule = first("submit", Respond(200, HTML, "text/html", forward=True))
    async with hostile_server(rule) as hostile:
        summary = await run_against(hostile, jobs, tmp_path)
        await assert_paid_once(hostile, jobs, tmp_path)
        assert hostile.seen["submit"] == 1
    assert summary.recovered == 1


def status_outage(seconds: float) -> Callable[[Request], Any]:
    """Status polls answered 502 for ``seconds`` from the first one, then served."""
    began: list[float] = []

    def rule(r: Request) -> Any:
        if r.kind != "status":
            return None
        began[:] = began or [r.at]
        return Respond(502, b'{"error": "bad gateway"}') if r.at - began[0] < seconds else None

    return rule


@pytest.mark.anyio
async def test_a_status_outage_is_ridden_out_in_the_run(tmp_path: Path) -> None:
    """Polls answered 502 for 2 s: the paid requests are followed through it, no new POST."""
    jobs = make_jobs(3)
    async with hostile_server(status_outage(2.0)) as hostile:
        summary = await run_against(hostile, jobs, tmp_path)
        await assert_paid_once(hostile, jobs, tmp_path)
    assert summary.completed == 3 and summary.failed == 0


@pytest.mark.anyio
async def test_a_follow_that_gave_up_is_polled_by_the_rerun_not_paid_again(tmp_path: Path) -> None:
    """A follow that gives up in an outage fails retryably at the status step; the rerun
    polls the same requests: zero POSTs the second time."""
    jobs = make_jobs(3)
    async with hostile_server(status_outage(3.0)) as hostile:
        first_run = await run_against(hostile, jobs, tmp_path, max_attempts=2, follow_patience=0.2)
        assert first_run.failed == 3 and first_run.exit_code == ExitCode.JOBS_FAILED
        assert {e["step"] for e in ledger(tmp_path) if e["event"] == "failed"} == {"status"}
        posts = hostile.seen["submit"]
        await anyio.sleep(3.0)  # the outage is over
        rerun = await run_against(hostile, jobs, tmp_path)
        assert hostile.seen["submit"] == posts == 3
        await assert_paid_once(hostile, jobs, tmp_path)
    assert rerun.completed == 3 and rerun.resubmitted == 0


@pytest.mark.anyio
async def test_a_result_that_404s_after_completed_is_asked_again_then_taken_from_the_history(
    tmp_path: Path,
) -> None:
    """COMPLETED, then the result answers 404: asked again, then the image comes from the
    history's generation_url. Never treated as expired: one POST."""
    jobs = make_jobs(1)
    rule = first("result", Respond(404, b'{"error": "not found"}'), times=100)
    async with hostile_server(rule) as hostile:
        summary = await run_against(hostile, jobs, tmp_path, max_attempts=3)
        await assert_paid_once(hostile, jobs, tmp_path)
        assert hostile.seen["submit"] == 1 and hostile.seen["result"] == 3
    assert summary.from_history == 1 and summary.resubmitted == 0


@pytest.mark.anyio
async def test_a_server_that_never_answers_submits_is_given_up_on_in_bounded_time(tmp_path: Path) -> None:
    """Connections accepted, submits never answered: after three silent submits the run
    pauses, probes (pauses of a tenth to a quarter of the limit), and gives up within the
    silence limit: a dozen POSTs at most, not six per job one job at a time; every job not
    sent is left for the rerun; exit 3."""
    jobs = make_jobs(30)
    started = time.monotonic()
    rule: Callable[[Request], Any] = lambda r: Hang() if r.kind == "submit" else None  # noqa: E731
    async with hostile_server(rule) as hostile:
        summary = await run_against(
            hostile,
            jobs,
            tmp_path,
            request_timeout=0.3,
            silence_limit=2.0,
            reconcile_patience=1.0,
            history_lag=RunSettings().history_lag,  # the default: no absence is proof within the run
        )
        assert 3 <= hostile.seen["submit"] <= 12  # three in a row, then a probe per pause
        stats = await hostile.stats()
    elapsed = time.monotonic() - started
    assert stats["submits_accepted"] == 0
    assert elapsed < 20
    assert summary.exit_code == ExitCode.FATAL_API
    assert "answered no submit" in (summary.fatal or "")
    # The silent submits may have been taken: not known whether paid, never sent again.
    assert summary.uncertain == hostile.seen["submit"]
    assert summary.not_run == len(jobs) - summary.uncertain


@pytest.mark.anyio
async def test_one_request_id_answered_for_two_jobs_is_a_doubt_not_a_second_image(tmp_path: Path) -> None:
    """The second submit is answered with the first one's request id: that answer is not
    believed; the job's own request is found in the history. One request, one job."""
    jobs = make_jobs(2)
    ids: list[str] = []

    def rule(r: Request) -> Any:
        if r.kind != "submit":
            return None

        def rewrite(status: int, body: Any) -> tuple[int, Any]:
            ids.append(body["request_id"])
            return status, {**body, "request_id": ids[0]}

        return Replace(rewrite)

    async with hostile_server(rule) as hostile:
        summary = await run_against(hostile, jobs, tmp_path, concurrency=1)
        await assert_paid_once(hostile, jobs, tmp_path)
    assert summary.recovered == 1
    assert sorted(completed_from(tmp_path).values()) == sorted(ids)


@pytest.mark.anyio
async def test_without_a_history_a_submit_in_doubt_is_not_sent_again_unless_the_user_accepts(
    tmp_path: Path,
) -> None:
    """No history to read: the job is "not known whether paid", exit 1, not resubmitted; the
    rerun with --resubmit-uncertain sends it again and says so (the server took it twice)."""
    jobs = make_jobs(2)
    async with hostile_server(first("submit", DropAfterForward()), history=False) as hostile:
        summary = await run_against(hostile, jobs, tmp_path)
        assert summary.uncertain == 1 and summary.completed == 1
        assert summary.exit_code == ExitCode.JOBS_FAILED
        status = read_status(tmp_path)
        assert len(status.in_doubt) == 1 and status.to_json()["jobs"]["not_known_whether_paid"] == 1
        assert "not known whether paid  1" in format_status(status)
        assert (await hostile.stats())["submits_accepted"] == 2
        again = await run_against(hostile, jobs, tmp_path, resubmit_uncertain=True)
        stats = await hostile.stats()
    assert again.unreconciled == 1 and again.completed == 1 and again.uncertain == 0
    assert stats["duplicate_submits"] == 1


@pytest.mark.anyio
async def test_resubmit_uncertain_sends_a_job_again_once_per_run(tmp_path: Path) -> None:
    """--resubmit-uncertain against a proxy that answers every submit with an HTML page after
    passing it on, and a history that lags: each job is sent again once (paid twice at most,
    as the user accepted), the resend's doubt is left not known, and the cost says what it
    cannot price."""
    jobs = make_jobs(2)
    rule = first("submit", Respond(200, HTML, "text/html", forward=True), times=100)
    async with hostile_server(rule, history_lag=1000.0) as hostile:
        summary = await run_against(hostile, jobs, tmp_path, resubmit_uncertain=True, history_lag=60.0)
        stats = await hostile.stats()
    assert stats["submits_accepted"] == 4 and hostile.seen["submit"] == 4
    assert (summary.unreconciled, summary.uncertain, summary.completed) == (2, 2, 0)
    assert summary.cost_unknown == 4 and summary.exit_code == ExitCode.JOBS_FAILED
    assert summary.uncertain_why == (
        "sent again once unchecked (--resubmit-uncertain), and that submit is in doubt too"
    )


@pytest.mark.anyio
async def test_a_request_paid_twice_is_counted_in_the_cost_as_an_orphan(tmp_path: Path) -> None:
    """The history shows requests late; a submit in doubt is sent again under
    --resubmit-uncertain: at the end both requests are in the history, and the summary's
    cost counts the one no job holds, named as an orphan."""
    jobs = make_jobs(1)
    rule = first("submit", Respond(200, HTML, "text/html", forward=True))
    async with hostile_server(rule, history_lag=1.5, time_scale=0.5) as hostile:  # fast jobs take 3 s
        summary = await run_against(hostile, jobs, tmp_path, resubmit_uncertain=True, history_lag=60.0)
        stats = await hostile.stats()
    assert stats["submits_accepted"] == 2 and stats["duplicate_submits"] == 1
    assert summary.completed == 1 and summary.unreconciled == 1
    assert summary.orphans == 1
    assert summary.cost_usd == pytest.approx(0.08)
    orphans = [e for e in ledger(tmp_path) if e["event"] == "cost" and e.get("orphan")]
    assert len(orphans) == 1


@pytest.mark.anyio
async def test_submits_answered_502_that_never_reached_the_api_fail_retryably_after_max_attempts(
    tmp_path: Path,
) -> None:
    """A gateway answers every submit 502 without passing it on: each is in doubt, proven
    absent by the history past its lag, sent again; after max_attempts the job fails
    retryably at the submit step (nothing was paid), and the rerun submits it once."""
    jobs = make_jobs(2)
    gateway_down = [True]

    def rule(r: Request) -> Any:
        if r.kind == "submit" and gateway_down[0]:
            return Respond(502, b'{"error": "bad gateway"}')
        return None

    async with hostile_server(rule) as hostile:
        summary = await run_against(hostile, jobs, tmp_path, max_attempts=2)
        failed = [e for e in ledger(tmp_path) if e["event"] == "failed"]
        assert (summary.failed, summary.uncertain, summary.exit_code) == (2, 0, ExitCode.JOBS_FAILED)
        assert all(e["retryable"] and e["step"] == "submit" and e["code"] == 502 for e in failed)
        assert hostile.seen["submit"] == 4
        gateway_down[0] = False
        rerun = await run_against(hostile, jobs, tmp_path)
        await assert_paid_once(hostile, jobs, tmp_path)
    assert rerun.completed == 2


@pytest.mark.anyio
async def test_a_doubt_whose_history_never_answers_says_so(tmp_path: Path) -> None:
    """The history times out on every read: the job is not known whether paid, and the
    reason says the history did not answer (not that the request is missing from it)."""
    jobs = make_jobs(1)

    def rule(r: Request) -> Any:
        if r.kind == "submit":
            return DropAfterForward()
        return Respond(503, b'{"error": "unavailable"}') if r.kind == "history" else None

    async with hostile_server(rule) as hostile:
        summary = await run_against(hostile, jobs, tmp_path, reconcile_patience=1.0)
    assert summary.uncertain == 1
    assert "did not answer" in (summary.uncertain_why or "")
