"""Hostile answers along a run and at its end (issue 18), over real sockets (the hostile server).

The emulator behind :mod:`tests.support.hostile` keeps the server's own counts; the rules
here rewrite what it answers: a request id that would change the path, an image URL at
the cloud metadata address, a history that answers a bomb, nested JSON or costs that are
not prices. A good run still ends with its images, a valid ``summary.json`` and a report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchgen.engine.runner import run
from batchgen.engine.settings import RunSettings
from batchgen.outcome.exits import ExitCode
from batchgen.outcome.summary import Summary
from tests.support.bomb import gzip_bomb
from tests.support.hostile import Hostile, Replace, Request, Respond, hostile_server
from tests.support.inprocess import make_jobs
from tests.support.outdir import ledger

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]  # a real socket, real time


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMIND_API_KEY", "test-key")


async def run_against(hostile: Hostile, n: int, out: Path, **kw: Any) -> Summary:
    kw.setdefault("request_timeout", 5.0)
    kw.setdefault("history_lag", 0.5)
    kw.setdefault("reconcile_patience", 10.0)
    settings = RunSettings(seed=1, **kw)
    return await run(make_jobs(n), out_dir=out, base_url=hostile.base_url, settings=settings, progress=False)


async def assert_paid_once(hostile: Hostile, n: int, out: Path) -> None:
    """The server took each of the ``n`` jobs once, and each completed from its own request."""
    stats = await hostile.stats()
    assert stats["duplicate_submits"] == 0 and stats["submits_accepted"] == n
    made = {e["key"]: e["request_id"] for e in ledger(out) if e["event"] == "completed"}
    assert len(made) == n and len(set(made.values())) == n


def strict_json(path: Path) -> Any:
    """The file's JSON, refusing NaN and Infinity as a strict parser (Node's JSON.parse) does."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"{path.name} holds {constant}, which is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def unpriced(rule: Any = None) -> Any:
    """A rule that strips the metrics from status and result answers (so the run's cost must
    come from the history at its end), then applies ``rule``."""

    def strip(status: int, body: Any) -> tuple[int, Any]:
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k != "metrics"}
        return status, body

    def combined(r: Request) -> Any:
        if rule is not None and (action := rule(r)) is not None:
            return action
        return Replace(strip) if r.kind in ("status", "result") else None

    return combined


async def test_a_request_id_that_would_change_the_path_never_takes_the_key_elsewhere(tmp_path: Path) -> None:
    """The submit is answered with request_id `../../evil/x?y#z`: no URL is built from it (the
    key never goes to /evil/x/status); the submit is in doubt, found in the history, paid once."""
    paths: list[str] = []

    def rule(r: Request) -> Any:
        paths.append(r.path)
        if r.kind == "submit":
            return Replace(lambda status, body: (status, {**body, "request_id": "../../evil/x?y#z"}))
        return None

    async with hostile_server(rule) as hostile:
        summary = await run_against(hostile, 1, tmp_path)
        await assert_paid_once(hostile, 1, tmp_path)
    assert not [p for p in paths if "evil" in p or "/.." in p]
    assert summary.completed == 1 and summary.recovered == 1
    doubt = next(e for e in ledger(tmp_path) if e["event"] == "uncertain")
    assert "is not one batchgen puts in a URL" in doubt["error"]


async def test_an_image_url_at_the_metadata_address_fails_only_that_job_retryably(tmp_path: Path) -> None:
    """One job's result points at http://169.254.169.254/...: never fetched; that job fails
    retryably at the download with the reason; the other job completes; nothing resubmitted."""
    bad: list[str] = []

    def rule(r: Request) -> Any:
        if r.kind != "result":
            return None
        request_id = r.path.rsplit("/", 1)[-1]
        bad[:] = bad or [request_id]
        if request_id != bad[0]:
            return None
        url = "http://169.254.169.254/latest/meta-data/iam/security-credentials/x.png"
        return Replace(lambda status, body: (status, {**body, "output": url}))

    async with hostile_server(rule) as hostile:
        summary = await run_against(hostile, 2, tmp_path)
        stats = await hostile.stats()
    assert summary.completed == 1 and summary.failed == 1
    assert stats["submits_accepted"] == 2 and stats["duplicate_submits"] == 0
    failed = next(e for e in ledger(tmp_path) if e["event"] == "failed")
    assert failed["request_id"] == bad[0] and failed["retryable"] is True and failed["step"] == "download"
    assert "image URL refused: 169.254.169.254 is a cloud metadata address; not fetched" in failed["error"]


BOMB = Respond(200, gzip_bomb(), headers=(("content-encoding", "gzip"),))
DEEP = Respond(200, b"[" * 200_000 + b"]" * 200_000)


@pytest.mark.parametrize(
    "answer",
    [
        BOMB,
        DEEP,
        Respond(200, b"<html>maintenance</html>", "text/html"),
        Respond(200, b'{"data": {"data": ' * 70),
    ],
    ids=["gzip-bomb", "nested-200000-deep", "html", "envelope-70-deep"],
)
async def test_the_end_of_a_good_run_is_written_whatever_the_history_answers(
    tmp_path: Path, answer: Respond
) -> None:
    """The history (read at the end to price the run) answers a 1 GiB gzip bomb, JSON nested
    200,000 deep, HTML, or an envelope 70 deep: the images are saved, summary.json (strict JSON)
    and the report are written, the cost is said to be unknown, exit 0."""
    rule = unpriced(lambda r: answer if r.kind == "history" else None)
    async with hostile_server(rule) as hostile:
        summary = await run_against(hostile, 2, tmp_path)
    assert summary.completed == 2 and summary.exit_code == ExitCode.OK
    data = strict_json(tmp_path / "summary.json")
    assert data["exit_code"] == 0 and data["cost"]["usd"] is None and data["cost"]["unpriced_requests"] == 2
    assert any("request history unavailable" in w for w in data["warnings"])
    assert (tmp_path / "report.html").is_file()


@pytest.mark.parametrize("price", ["NaN", 1e999, -1000, "Infinity", float("nan")])
async def test_costs_that_are_not_prices_never_reach_a_file(
    tmp_path: Path, price: Any, batchgen_log: pytest.LogCaptureFixture
) -> None:
    """`credits_deduction` of "NaN", 1e999 (Infinity on the wire), -1000, and `metrics.cost` NaN:
    not a price: ignored, said once; the ledger and summary.json are strict JSON, no cost negative."""

    def history(status: int, body: Any) -> tuple[int, Any]:
        for row in body["data"]:
            row["credits_deduction"] = price
        return status, body

    def poisoned(status: int, body: Any) -> tuple[int, Any]:
        body["metrics"] = {**body.get("metrics", {}), "cost": float("nan")}
        return status, body

    def rule(r: Request) -> Any:
        if r.kind == "history":
            return Replace(history)
        if r.kind == "status":
            return Replace(poisoned)
        return None

    async with hostile_server(unpriced(rule)) as hostile:
        summary = await run_against(hostile, 2, tmp_path)
    assert summary.completed == 2 and summary.exit_code == ExitCode.OK
    data = strict_json(tmp_path / "summary.json")
    assert data["cost"]["usd"] is None and data["cost"]["unpriced_requests"] == 2
    for line in (tmp_path / "ledger.jsonl").read_text().splitlines():
        event = json.loads(line, parse_constant=lambda c: pytest.fail(f"ledger holds {c}"))
        assert event.get("usd") is None or event["usd"] >= 0
    records = {id(r): r for r in batchgen_log.records}.values()  # the handler may see a record twice
    said = [r.getMessage() for r in records if "not a price" in r.getMessage()]
    assert len([m for m in said if m.startswith("the request history")]) == 1
    assert len([m for m in said if m.startswith("the API")]) == 1
