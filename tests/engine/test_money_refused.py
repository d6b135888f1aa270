"""A refused submit is not a submit in doubt: the ledger says so, and a rerun after a kill pays at once."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from batchgen.output.replay import replay
from batchgen.output.resume import Submit, decide
from tests.support import inprocess
from tests.support.inprocess import make_jobs, run_jobs
from tests.support.outdir import events

emulator = partial(inprocess.emulator, time_scale=0.001, image_size=32, workers=16)


@pytest.fixture
def anyio_backend(virtual_time: object) -> object:
    """Every test here runs on virtual time (tests/support/clock.py)."""
    return virtual_time


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMIND_API_KEY", "test-key")


@pytest.mark.anyio
async def test_a_submit_refused_for_credits_is_recorded_and_the_rerun_submits_it_without_doubt(
    tmp_path: Path,
) -> None:
    """Credits run out: the refused submits get a `refused` line after their intent, so the
    rerun submits them at once (with the two-hour default lag a doubt would wait)."""
    jobs = make_jobs(6)
    async with emulator(credits=3) as emu:
        first = await run_jobs(emu, jobs, tmp_path, concurrency=1)
        assert first.completed == 3 and first.exit_code == 3
        refused = events(tmp_path, "refused")
        assert refused and all(e["code"] == 406 for e in refused)
        state = replay(tmp_path / "ledger.jsonl")
        for e in refused:
            assert decide(state.get(e["key"]), out_dir=tmp_path, now=0.0) == Submit("new")
        await emu.configure(credits=10)
        again = await run_jobs(emu, jobs, tmp_path)
        stats = await emu.stats()
    assert again.completed == 3 and again.uncertain == 0 and again.exit_code == 0
    assert stats["submits_accepted"] == 6 and stats["duplicate_submits"] == 0
