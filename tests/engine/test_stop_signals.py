"""A run stopped by a signal (Ctrl-C, SIGTERM): the grace it gives, and what its end says.

In process on virtual time: the signal is raised in this very process, once the run's
own handler is installed (never before: the default action would end the test run).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchgen.engine.runner import run
from batchgen.manifest.job import Job
from batchgen.outcome.summary import Summary, format_summary
from batchgen.output.ledger import LedgerWriter
from tests.support import inprocess
from tests.support.clock import current_loop
from tests.support.inprocess import BASE, Emu, make_jobs, settings
from tests.support.outdir import events, ledger

emulator = partial(inprocess.emulator, image_size=16)


@pytest.fixture
def anyio_backend(virtual_time: object) -> object:
    """Every test here runs on virtual time (tests/support/clock.py)."""
    return virtual_time


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMIND_API_KEY", "test-key")


async def sigterm_when(ready: Callable[[], bool], sent_at: list[float]) -> None:
    """Raise SIGTERM in this process once ``ready()`` and the run's handler is installed."""
    while True:
        if ready() and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            sent_at.append(anyio.current_time())
            signal.raise_signal(signal.SIGTERM)
            return
        await anyio.sleep(0.05)


async def run_interrupted(
    emu: Emu, jobs: list[Job], out: Path, ready: Callable[[], bool], **kw: Any
) -> tuple[Summary, float]:
    """Run ``jobs`` with the command line's signal handling, SIGTERM once ``ready()``; the
    summary and the virtual seconds from the signal to the run's end."""
    sent_at: list[float] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(sigterm_when, ready, sent_at)
        summary = await run(
            jobs,
            out_dir=out,
            client=emu.http,
            base_url=BASE,
            settings=settings(**kw),
            progress=False,
            handle_signals=True,
            wall_clock=current_loop().wall,
        )
        tg.cancel_scope.cancel()
    assert sent_at, "the run ended before the signal"
    return summary, anyio.current_time() - sent_at[0]


@pytest.mark.anyio
async def test_an_interrupted_run_says_what_the_answers_priced(tmp_path: Path) -> None:
    """SIGTERM with jobs done and in flight (no grace): exit 130, and the cost is what the
    answers priced, the requests not priced yet counted, not null (the history is not read)."""
    jobs = make_jobs(12, mode="base")  # 22 s each on 2 workers: a queue builds up
    async with emulator(workers=2) as emu:

        def ready() -> bool:
            return len(events(tmp_path, "completed")) >= 2 and len(events(tmp_path, "submitted")) >= 4

        summary, _ = await run_interrupted(emu, jobs, tmp_path, ready, grace=0.0)
        stats = await emu.stats()
    assert summary.interrupted and summary.exit_code == 130
    accepted = len(events(tmp_path, "submitted"))
    assert accepted == stats["submits_accepted"]
    priced = accepted - summary.cost_unknown
    assert summary.cost_unknown >= 1, "jobs were in flight, unpriced"
    assert priced >= len(events(tmp_path, "completed")) >= 2
    assert summary.cost_usd == pytest.approx(0.04 * priced)
    assert not events(tmp_path, "cost"), "no history read, no cost line"
    printed = format_summary(summary)
    assert f"cost of the batch so far at least {summary.cost_usd:.2f} USD" in printed
    assert f"{summary.cost_unknown} requests not priced yet" in printed


@pytest.mark.anyio
async def test_the_grace_ends_when_nothing_is_in_flight(tmp_path: Path) -> None:
    """SIGTERM while the only job waits for the history to settle its submit in doubt: the run
    stops at once, not after --grace; the submit is not sent again and its intent stays."""
    jobs = make_jobs(1)
    async with await LedgerWriter.open(tmp_path / "ledger.jsonl", clock=current_loop().wall) as writer:
        # A killed run's submit, never answered: in doubt until the history says.
        await writer.write("submitting", jobs[0].key, index=0, body=jobs[0].params.to_api())
    async with emulator() as emu:

        def ready() -> bool:
            return len(ledger(tmp_path)) >= 2  # run_started written: the run is going

        summary, took = await run_interrupted(emu, jobs, tmp_path, ready, grace=600.0)
        stats = await emu.stats()
    assert summary.interrupted and summary.exit_code == 130
    assert took < 1.0, f"waited {took:.1f} s of a 600 s grace with nothing in flight"
    assert summary.uncertain == 1 and stats["submits_accepted"] == 0
    assert summary.uncertain_why == "the run stopped before the request history settled it"
    job_lines = [e for e in ledger(tmp_path) if e["key"] == jobs[0].key]
    assert [e["event"] for e in job_lines] == ["submitting"]
