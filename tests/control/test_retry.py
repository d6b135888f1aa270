"""The one retry policy: every error classified once, attempt counts that no call site resets."""

from __future__ import annotations

import random

import pytest

from batchgen.control.retry import Action, Attempts, RetryPolicy, StepName
from batchgen.errors import (
    BadRequest,
    FatalApiError,
    ImageInvalid,
    ImageUnavailable,
    InsufficientCredits,
    JobTimedOut,
    LocalWriteError,
    RateLimited,
    RateLimitStalled,
    RequestFailed,
    RequestNotFound,
    SubmitUncertain,
    TransientError,
)


def policy(seed: int = 1, **kw: float) -> RetryPolicy:
    return RetryPolicy(rng=random.Random(seed), **kw)  # type: ignore[arg-type]


def test_transient_errors_retry_with_full_jitter_then_fail_retryably() -> None:
    """5xx/drops on a submit are retried with delays in [0, base*2^(n-1)] capped, then fail retryably."""
    p = policy(max_attempts=4, base_delay=1.0, max_delay=3.0)
    attempts = Attempts()
    err = TransientError("502", status_code=502)
    for cap in (1.0, 2.0, 3.0):
        d = p.decide(err, step="submit", attempts=attempts)
        assert d.action is Action.RETRY
        assert 0.0 <= d.delay <= cap
    final = p.decide(err, step="submit", attempts=attempts)
    assert (final.action, final.retryable) == (Action.FAIL, True)


def test_jitter_is_deterministic_with_a_seeded_rng() -> None:
    """Two policies with the same seed draw the same delays; another seed differs."""

    def delays(seed: int) -> list[float]:
        p, attempts = policy(seed), Attempts()
        return [p.decide(TransientError("x"), step="result", attempts=attempts).delay for _ in range(4)]

    assert delays(7) == delays(7)
    assert delays(7) != delays(8)


def test_a_download_that_keeps_failing_gives_up_although_every_result_fetch_succeeds() -> None:
    """result ok -> download bad, over and over: the download count is never reset, so it ends."""
    p = policy(max_attempts=3)
    attempts = Attempts()
    decisions = []
    for _ in range(10):
        p.succeeded("result", attempts)  # the result fetch before each download works
        d = p.decide(ImageInvalid("an HTML page, not an image"), step="download", attempts=attempts)
        decisions.append(d.action)
        if d.action is Action.FAIL:
            break
    assert decisions == [Action.REFETCH, Action.REFETCH, Action.FAIL]


def test_poll_failures_fail_the_job_only_in_a_row_and_only_after_the_patience() -> None:
    """A poll that answers clears the streak: a long job with scattered poll faults is not
    failed; a streak fails the follow only once it is both max_attempts long and
    follow_patience old, so a short outage of the status endpoint is ridden out."""
    now = [0.0]
    p = RetryPolicy(rng=random.Random(1), max_attempts=3, follow_patience=60.0, clock=lambda: now[0])
    attempts = Attempts()
    for _ in range(20):
        assert p.decide(TransientError("504"), step="status", attempts=attempts).action is Action.RETRY
        p.succeeded("status", attempts)
    assert attempts.failures["status"] == 20
    actions = []
    for _ in range(5):
        actions.append(p.decide(TransientError("502"), step="status", attempts=attempts).action)
        now[0] += 10.0
    assert actions == [Action.RETRY] * 5  # 5 in a row, but only 40 s of outage
    now[0] = 61.0
    final = p.decide(TransientError("502"), step="status", attempts=attempts)
    assert (final.action, final.retryable) == (Action.FAIL, True)
    assert "no answer about the request" in final.reason


def test_a_result_404_after_completed_is_asked_again_then_recovered_never_resubmitted() -> None:
    """The request said COMPLETED, then its result 404'd: ask again, then RECOVER (the
    history's image, else a retryable failure the rerun polls); never RESUBMIT."""
    p = policy(max_attempts=3)
    attempts = Attempts()
    actions = [p.decide(RequestNotFound("404"), step="result", attempts=attempts).action for _ in range(3)]
    assert actions == [Action.RETRY, Action.RETRY, Action.RECOVER]
    assert attempts.resubmits == 0


def test_the_image_host_refusing_refetches_the_result_never_resubmits() -> None:
    """403/404/410 from the image host: fetch the result again (a fresh URL), counted; then fail."""
    p = policy(max_attempts=2)
    attempts = Attempts()
    first = p.decide(ImageUnavailable("403", status_code=403), step="download", attempts=attempts)
    second = p.decide(ImageUnavailable("410", status_code=410), step="download", attempts=attempts)
    assert first.action is Action.REFETCH
    assert (second.action, second.retryable) == (Action.FAIL, True)
    assert attempts.resubmits == 0


def test_rate_limited_waits_on_the_budget_and_is_bounded() -> None:
    """A 429 is a WAIT (the budget holds the cool-down); past max_rate_limited the job gives up."""
    p = policy(max_rate_limited=3)
    attempts = Attempts()
    actions = [p.decide(RateLimited("429"), step="status", attempts=attempts).action for _ in range(4)]
    assert actions == [Action.WAIT, Action.WAIT, Action.WAIT, Action.FAIL]
    assert attempts.total == 0  # never counted as a transient failure


@pytest.mark.parametrize(
    ("error", "step", "action", "retryable"),
    [
        (BadRequest("400"), "submit", Action.FAIL, False),
        (RequestFailed("blocked", detail="blocked"), "status", Action.FAIL, False),
        (FatalApiError("401"), "submit", Action.STOP, False),
        (InsufficientCredits("406"), "submit", Action.STOP_SUBMITTING, False),
        (RequestNotFound("404"), "status", Action.RESUBMIT, False),
        (RequestNotFound("404"), "result", Action.RETRY, False),
        (SubmitUncertain("no answer", answered=False), "submit", Action.RECONCILE, False),
        (SubmitUncertain("502", answered=True, status_code=502), "submit", Action.RECONCILE, False),
        (ImageInvalid("truncated"), "download", Action.REFETCH, False),
        (JobTimedOut("not done in an hour"), "status", Action.FAIL, True),
        (RateLimitStalled("nothing accepted for 10 min"), "submit", Action.FAIL, True),
        (OSError("disk full"), "download", Action.FAIL, True),
    ],
)
def test_each_outcome_has_one_decision(
    error: BaseException, step: StepName, action: Action, retryable: bool
) -> None:
    """Permanent failures give up, 401/403 stop, 406 stops submits, 404 on a poll resubmits,
    an uncertain submit is reconciled, bad images refetch."""
    d = policy().decide(error, step=step, attempts=Attempts())
    assert d.action is action
    assert d.retryable is retryable


def test_resubmits_are_bounded() -> None:
    """A request that keeps expiring is resubmitted a few times, then fails retryably."""
    p = policy(max_resubmits=2)
    attempts = Attempts()
    actions = [p.decide(RequestNotFound("404"), step="status", attempts=attempts).action for _ in range(3)]
    assert actions == [Action.RESUBMIT, Action.RESUBMIT, Action.FAIL]


def test_a_local_write_error_halts_the_run_and_fails_no_job() -> None:
    """Disk full at any step: HALT (the whole run stops), not a failed job, not a retry."""
    p = policy()
    for step in ("submit", "status", "result", "download"):
        d = p.decide(
            LocalWriteError("cannot write x: No space left on device"), step=step, attempts=Attempts()
        )
        assert d.action is Action.HALT
