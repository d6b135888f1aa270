"""Never paying twice, and knowing the cost: in process, against the emulator's request history."""

from __future__ import annotations

import hashlib
import io
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batchgen.errors import UsageError
from batchgen.manifest.job import DEFAULT_MODEL, Job, job_key
from batchgen.manifest.params import validate_params
from batchgen.output.ledger import LedgerWriter
from tests.support import inprocess
from tests.support.clock import current_loop
from tests.support.inprocess import BASE, Emu, make_jobs, run_jobs
from tests.support.outdir import events

emulator = partial(inprocess.emulator, time_scale=0.001, image_size=32, workers=16)


@pytest.fixture
def anyio_backend(virtual_time: object) -> object:
    """Every test here runs on virtual time (tests/support/clock.py)."""
    return virtual_time


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMIND_API_KEY", "test-key")


async def history(emu: Emu) -> list[dict[str, Any]]:
    r = await emu.http.get(
        f"{BASE}/inference-request/request-history",
        params={"per_page": 100},
        headers={"x-api-key": "test-key"},
    )
    return r.json()["data"]  # type: ignore[no-any-return]


async def lost_answers(emu: Emu, jobs: list[Job], out: Path) -> list[str]:
    """What a run killed between its POSTs and their answers leaves: ``submitting`` lines,
    and requests the server accepted (and charged) whose ids nobody recorded."""
    ids = []
    async with await LedgerWriter.open(out / "ledger.jsonl", clock=current_loop().wall) as ledger:
        for job in jobs:
            body = job.params.to_api()
            await ledger.write("submitting", job.key, index=job.index, body=body)
            r = await emu.http.post(
                f"{BASE}/v2/{DEFAULT_MODEL}", json=body, headers={"x-api-key": "test-key"}
            )
            ids.append(r.json()["request_id"])
    return ids


@pytest.mark.anyio
async def test_submits_whose_answer_was_lost_are_found_in_the_history(tmp_path: Path) -> None:
    """The rerun adopts the requests the server accepted; it pays only for what never arrived
    (the emulator's history shows a request at once: told a lag of 0, absence is proof)."""
    jobs = make_jobs(8)
    async with emulator() as emu:
        sent = await lost_answers(emu, jobs[:5], tmp_path)
        async with await LedgerWriter.open(tmp_path / "ledger.jsonl", clock=current_loop().wall) as ledger:
            # A sixth POST that never left the machine: its intent is all there is.
            await ledger.write("submitting", jobs[5].key, index=5, body=jobs[5].params.to_api())
        summary = await run_jobs(emu, jobs, tmp_path, history_lag=0.0)
        stats = await emu.stats()
    assert (summary.completed, summary.recovered, summary.unreconciled) == (8, 5, 0)
    assert stats["duplicate_submits"] == 0 and stats["submits_accepted"] == 8
    recovered = {e["key"]: e["request_id"] for e in events(tmp_path, "submitted") if e.get("recovered")}
    assert recovered == {job.key: rid for job, rid in zip(jobs[:5], sent, strict=True)}


@pytest.mark.anyio
async def test_an_intent_missing_from_the_history_is_not_sent_again_within_its_lag(tmp_path: Path) -> None:
    """A lost submit not (yet) in the history, within the lag window: not known whether paid,
    not submitted; the summary says so, exit 1. The others go on."""
    jobs = make_jobs(3)
    async with emulator() as emu:
        async with await LedgerWriter.open(tmp_path / "ledger.jsonl") as ledger:
            await ledger.write("submitting", jobs[0].key, index=0, body=jobs[0].params.to_api())
        summary = await run_jobs(emu, jobs, tmp_path, reconcile_patience=1.5)
        stats = await emu.stats()
    assert (summary.completed, summary.uncertain, summary.not_run) == (2, 1, 0)
    assert summary.exit_code == 1
    assert "a rerun after" in (summary.uncertain_why or "")
    assert stats["submits_accepted"] == 2


@pytest.mark.anyio
async def test_identical_bodies_are_matched_by_count_and_time(tmp_path: Path) -> None:
    """Two jobs with the same body (different labels) and one lost answer: one adopted, one sent."""
    params = validate_params({"prompt": "a twin", "seed": 5, "mode": "fast"})
    twins = [
        Job(index=i, key=job_key(DEFAULT_MODEL, params, {"n": i}), model=DEFAULT_MODEL, params=params,
            labels={"n": i}, filename=f"twin-{i}.png")
        for i in range(2)
    ]  # fmt: skip
    async with emulator() as emu:
        (sent,) = await lost_answers(emu, twins[:1], tmp_path)
        async with await LedgerWriter.open(tmp_path / "ledger.jsonl", clock=current_loop().wall) as ledger:
            await ledger.write("submitting", twins[1].key, index=1, body=params.to_api())
        summary = await run_jobs(emu, twins, tmp_path, history_lag=0.0)
        stats = await emu.stats()
    assert (summary.completed, summary.recovered) == (2, 1)
    assert stats["submits_accepted"] == 2
    adopted = [e for e in events(tmp_path, "submitted") if e.get("recovered")]
    assert [e["request_id"] for e in adopted] == [sent]


@pytest.mark.anyio
async def test_without_a_history_lost_answers_stay_in_doubt_unless_the_user_accepts(tmp_path: Path) -> None:
    """No history: the lost submits are not known whether paid and not sent again (exit 1);
    with --resubmit-uncertain they are sent again, counted, and paid twice."""
    jobs = make_jobs(4)
    async with emulator(history=False) as emu:
        await lost_answers(emu, jobs[:3], tmp_path)
        summary = await run_jobs(emu, jobs, tmp_path)
        assert (summary.completed, summary.uncertain, summary.unreconciled) == (1, 3, 0)
        assert summary.exit_code == 1 and (await emu.stats())["duplicate_submits"] == 0
        assert "cannot be read" in (summary.uncertain_why or "")
        assert summary.cost_unknown == 3  # each may have been paid: the cost is a floor
        summary = await run_jobs(emu, jobs, tmp_path, resubmit_uncertain=True)
        stats = await emu.stats()
    assert (summary.completed, summary.recovered, summary.unreconciled) == (3, 0, 3)
    assert stats["duplicate_submits"] == 3
    assert sum("request history unavailable" in w for w in summary.warnings) == 1
    # The answers priced the requests batchgen holds; the three it paid twice cannot be found
    # without a history: unpriced, so the cost is said to be a floor (it once said 0 unpriced).
    assert summary.cost_unknown == 3 and summary.orphans == 0


@pytest.mark.anyio
async def test_the_cost_is_what_the_history_charged(tmp_path: Path) -> None:
    """cost lines per request; the summary's cost is the sum of the emulator's credits_deduction."""
    jobs = make_jobs(5, prompt="a {i} castle")
    jobs[3] = make_jobs(1, prompt="a forbidden castle")[0]  # moderation: FAILED, still charged
    async with emulator(price=0.05, blocked_terms=("forbidden",)) as emu:
        summary = await run_jobs(emu, jobs, tmp_path)
        rows = await history(emu)
    charged = sum(r["credits_deduction"] for r in rows)
    assert summary.cost_usd == pytest.approx(charged) == pytest.approx(0.25)
    assert summary.cost_failed_usd == pytest.approx(0.05)
    priced = {e["request_id"] for e in events(tmp_path, "cost")} | {
        e["request_id"] for e in events(tmp_path, "completed") + events(tmp_path, "failed") if "usd" in e
    }
    assert priced == {r["request_id"] for r in rows}  # each by its answer's metrics or the history
    assert summary.estimated_cost == pytest.approx(0.20)  # the price table: 0.04 per image


@pytest.mark.anyio
async def test_a_batch_the_answers_do_not_price_reads_the_history_once(tmp_path: Path) -> None:
    """Answers without metrics.cost: one newest-first page prices all 30 requests; a no-op rerun
    reads no history at all and still knows the cost."""
    jobs = make_jobs(30)
    async with emulator(answer_cost=False, price=0.05) as emu:
        summary = await run_jobs(emu, jobs, tmp_path)
        first = (await emu.stats())["history_requests"]
        again = await run_jobs(emu, jobs, tmp_path)
        second = (await emu.stats())["history_requests"]
    assert summary.cost_usd == pytest.approx(1.50) and summary.cost_unknown == 0
    assert len(events(tmp_path, "cost")) == 30
    assert first == 1 and second == 1  # the rerun made none
    assert (again.skipped, again.cost_usd, again.cost_unknown) == (30, pytest.approx(1.50), 0)


@pytest.mark.anyio
async def test_a_request_the_history_does_not_have_is_looked_for_once(tmp_path: Path) -> None:
    """A request the history never shows: the run that looks for it records how far it read
    (history_read), and the rerun does not read the history again for it."""
    jobs = make_jobs(3)
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, format="PNG")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / jobs[2].filename).write_bytes(png.getvalue())
    past = time.time() - 1000  # accepted well over the clock skew before the reads
    async with await LedgerWriter.open(tmp_path / "ledger.jsonl", clock=lambda: past) as ledger:
        await ledger.write("submitted", jobs[2].key, request_id="ghost-1", index=2, seed=3)
        await ledger.write(
            "completed",
            jobs[2].key,
            request_id="ghost-1",
            file=f"images/{jobs[2].filename}",
            sha256=hashlib.sha256(png.getvalue()).hexdigest(),
            bytes=len(png.getvalue()),
        )
    async with emulator() as emu:
        summary = await run_jobs(emu, jobs, tmp_path, history_lag=0.0)
        first = (await emu.stats())["history_requests"]
        again = await run_jobs(emu, jobs, tmp_path, history_lag=0.0)
        second = (await emu.stats())["history_requests"]
    (read,) = events(tmp_path, "history_read")
    assert read["model"] == DEFAULT_MODEL and read["rows"] == 2  # this run's two, priced by their answers
    assert summary.cost_unknown == 1 and again.cost_unknown == 1
    assert first == 1 and second == 1


@pytest.mark.anyio
async def test_a_budget_below_the_estimate_refuses_the_run(tmp_path: Path) -> None:
    async with emulator() as emu:
        with pytest.raises(UsageError, match="over --budget 0.10 USD: nothing was submitted"):
            await run_jobs(emu, make_jobs(5), tmp_path, budget=0.10)
        assert (await emu.stats())["submits_accepted"] == 0


@pytest.mark.anyio
async def test_a_budget_stops_submitting_before_it_is_passed(tmp_path: Path) -> None:
    """Jobs resubmitted after expiry cost more than estimated: submits stop at the budget, exit 5."""
    jobs = make_jobs(5)
    async with emulator(ttl=0.001, history=False) as emu:  # every first poll finds its request gone
        summary = await run_jobs(emu, jobs, tmp_path, budget=0.30, price_per_image=0.05, max_attempts=2)
        stats = await emu.stats()
    assert stats["submits_accepted"] == 6  # 6 x 0.05 = 0.30: a seventh would pass the budget
    assert summary.budget_reached and summary.exit_code == 5
    assert json.loads((tmp_path / "ledger.jsonl").read_text().splitlines()[-1])["budget_reached"] is True
