"""The estimate before a run: it counts only the requests known to count against the rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.engine.estimate import BASE_SECONDS, COUNTED_PER_IMAGE, estimate
from batchgen.engine.plan import polls_known
from batchgen.engine.settings import RunSettings
from batchgen.manifest.job import DEFAULT_MODEL, Job, job_key
from batchgen.manifest.params import validate_params
from batchgen.output.ledger import format_ts
from batchgen.output.replay import replay


def make_jobs(n: int) -> list[Job]:
    jobs = []
    for i in range(n):
        p = validate_params({"prompt": f"a lighthouse number {i}", "seed": i + 1, "mode": "base"})
        key = job_key(DEFAULT_MODEL, p, {})
        jobs.append(Job(index=i, key=key, model=DEFAULT_MODEL, params=p, filename=f"{i}.png"))
    return jobs


def test_only_submits_count_when_polls_are_not_known_to() -> None:
    """100 jobs at 600 rpm: 10 s of submits (polls not counted) plus a job's latency; the text says so."""
    guess = estimate(make_jobs(100), rpm=600, price_per_image=None)
    assert guess.counted == 100
    assert guess.seconds == pytest.approx(10.0 + BASE_SECONDS)
    text = guess.describe()
    assert "10.0s for 100 submits (the only requests known to count)" in text
    assert f"then {BASE_SECONDS:.1f}s for the last job" in text


def test_polls_count_when_told_or_learned() -> None:
    """Told (or learned) that polls count, each job is a submit, a poll and a result at the rate."""
    for polls, why in (("told", "as told"), ("learned", "as an earlier run learned")):
        guess = estimate(make_jobs(100), rpm=600, price_per_image=None, polls=polls)  # type: ignore[arg-type]
        assert guess.counted == 100 * COUNTED_PER_IMAGE
        assert guess.seconds == pytest.approx(100 * COUNTED_PER_IMAGE * 60 / 600 + BASE_SECONDS)
        assert f"300 requests (polls count, {why}" in guess.describe()


def test_polls_known_from_the_flag_or_an_earlier_run(tmp_path: Path) -> None:
    """--rpm-counts-polls is "told"; a run_finished with polls_counted true in the folder is "learned"."""
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(
        f'{{"event":"run_started","key":"","ts":"{format_ts(1.0e9)}","settings":{{}}}}\n'
        f'{{"event":"run_finished","key":"","ts":"{format_ts(1.0e9 + 5)}","polls_counted":false}}\n'
    )
    assert polls_known(RunSettings(), replay(ledger)) == "unknown"
    assert polls_known(RunSettings(rpm_counts_polls=True), replay(ledger)) == "told"
    with ledger.open("a") as f:
        f.write(f'{{"event":"run_started","key":"","ts":"{format_ts(1.0e9 + 9)}","settings":{{}}}}\n')
        f.write(f'{{"event":"run_finished","key":"","ts":"{format_ts(1.0e9 + 20)}","polls_counted":true}}\n')
    assert polls_known(RunSettings(), replay(ledger)) == "learned"
