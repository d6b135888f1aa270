"""The submit rate limiter (fake clock) and the one retry policy."""

from __future__ import annotations

import random

import anyio
import pytest

from batchgen.errors import (
    BadRequest,
    FatalApiError,
    ImageInvalid,
    InsufficientCredits,
    RateLimited,
    RequestFailed,
    RequestNotFound,
    TransientError,
)
from batchgen.limits import Action, RateLimiter, RetryPolicy


class FakeClock:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


def limiter(clock: FakeClock, rpm: float = 60, **kw: float) -> RateLimiter:
    return RateLimiter(rpm, clock=clock, sleep=clock.sleep, **kw)


@pytest.mark.anyio
async def test_submits_are_paced_evenly_from_the_start() -> None:
    """At 60 rpm submits are granted at 0, 1, 2, ... s: no burst at t=0."""
    clock = FakeClock()
    lim = limiter(clock, rpm=60)
    grants = [await lim.acquire() for _ in range(5)]
    assert grants == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.anyio
async def test_concurrent_callers_share_one_pace() -> None:
    """Many tasks acquiring at once still get one slot per interval, no two at the same time."""
    clock = FakeClock()
    lim = limiter(clock, rpm=30)
    grants: list[float] = []

    async def one() -> None:
        grants.append(await lim.acquire())

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(one)
    grants.sort()
    assert grants[0] == 0.0
    assert all(b - a >= 2.0 - 1e-9 for a, b in zip(grants, grants[1:], strict=False))


@pytest.mark.anyio
async def test_idle_time_is_not_banked_into_a_burst() -> None:
    """After a long idle spell the next submits are still spaced by the interval."""
    clock = FakeClock()
    lim = limiter(clock, rpm=60)
    await lim.acquire()
    clock.now = 100.0
    grants = [await lim.acquire() for _ in range(3)]
    assert grants == [100.0, 101.0, 102.0]


@pytest.mark.anyio
async def test_429_cools_everyone_down_and_halves_the_rate() -> None:
    """A 429 holds the next submit for max(Retry-After, backoff) and halves the rate."""
    clock = FakeClock()
    lim = limiter(clock, rpm=60)
    sent = await lim.acquire()
    wait = lim.on_rate_limited(5.0, sent_at=sent)
    assert wait == 5.0
    assert lim.rate == 30.0
    assert lim.cooldown_remaining() == 5.0
    assert await lim.acquire() == 5.0
    assert await lim.acquire() == 7.0  # now 2 s apart at 30 rpm
    assert lim.rate_limited == 1


@pytest.mark.anyio
async def test_backoff_beats_a_short_retry_after_and_grows() -> None:
    """Without Retry-After the cool-down is the backoff, doubling on consecutive 429s."""
    clock = FakeClock()
    lim = limiter(clock, rpm=60, backoff=2.0, min_rpm=1.0)
    assert lim.on_rate_limited(None) == 2.0
    assert lim.on_rate_limited(0.5) == 4.0
    assert lim.on_rate_limited(None) == 8.0
    lim.on_success()
    assert lim.on_rate_limited(None) == 2.0


@pytest.mark.anyio
async def test_one_decrease_per_congestion_event() -> None:
    """429s for submits sent before the last decrease do not cut the rate again."""
    clock = FakeClock()
    lim = limiter(clock, rpm=60)
    early = [await lim.acquire() for _ in range(3)]
    for sent in early:
        lim.on_rate_limited(None, sent_at=sent)
    assert lim.rate == 30.0
    later = await lim.acquire()
    lim.on_rate_limited(None, sent_at=later)
    assert lim.rate == 15.0


def test_rate_recovers_fast_far_from_the_limit_then_creeps_and_never_below_the_floor() -> None:
    """After a cut, successes add `recovery` x the limit guess, then `probe` x it near it; floor min_rpm."""
    clock = FakeClock()
    lim = limiter(clock, rpm=10, recovery=0.2, probe=0.05, min_rpm=2.0)
    lim.on_rate_limited(None)
    assert lim.rate == 5.0
    lim.on_success()
    assert lim.rate == 7.0
    lim.on_success()
    assert lim.rate == 9.0
    lim.on_success()  # within 10% of the rate that met the limit: creep
    assert lim.rate == 9.5
    for _ in range(5):
        lim.on_success()
    assert lim.rate == 10.0
    for _ in range(10):
        lim.on_rate_limited(None)
    assert lim.rate == 2.0


@pytest.mark.anyio
async def test_the_limit_guess_is_what_the_server_accepted_in_its_last_minute() -> None:
    """A 429 after 3 accepted submits in the last minute cuts from 3 rpm, not from the 60 rpm ceiling."""
    clock = FakeClock()
    lim = limiter(clock, rpm=60, min_rpm=0.5)
    for _ in range(3):
        await lim.acquire()
        lim.on_success()
    sent = await lim.acquire()
    lim.on_rate_limited(None, sent_at=sent)
    assert lim.rate == 1.5


def test_rpm_must_be_positive() -> None:
    """A zero or negative rpm is refused."""
    with pytest.raises(ValueError, match="rpm"):
        RateLimiter(0)


# --- the retry policy --------------------------------------------------------------


def policy(seed: int = 1, **kw: float) -> RetryPolicy:
    return RetryPolicy(rng=random.Random(seed), **kw)  # type: ignore[arg-type]


def test_transient_errors_retry_with_full_jitter_then_fail_retryably() -> None:
    """5xx/drops are retried with delays in [0, base*2^(n-1)] capped, then fail as retryable."""
    p = policy(max_attempts=4, base_delay=1.0, max_delay=3.0)
    err = TransientError("502", status_code=502)
    caps = [1.0, 2.0, 3.0]
    for attempt, cap in enumerate(caps, start=1):
        d = p.decide(err, attempt=attempt)
        assert d.action is Action.RETRY
        assert 0.0 <= d.delay <= cap
    final = p.decide(err, attempt=4)
    assert final.action is Action.FAIL
    assert final.retryable


def test_jitter_is_deterministic_with_a_seeded_rng() -> None:
    """Two policies with the same seed draw the same delays; another seed differs."""
    err = TransientError("timeout")
    a = [policy(7).decide(err, attempt=n).delay for n in range(1, 5)]
    b = [policy(7).decide(err, attempt=n).delay for n in range(1, 5)]
    c = [policy(8).decide(err, attempt=n).delay for n in range(1, 5)]
    assert a == b
    assert a != c


def test_time_factor_scales_delays() -> None:
    """Every backoff delay is multiplied by time_factor (tests run at a small time scale)."""
    err = TransientError("x")
    full = policy(3).decide(err, attempt=3).delay
    scaled = policy(3, time_factor=0.001).decide(err, attempt=3).delay
    assert scaled == pytest.approx(full * 0.001)


def test_rate_limited_waits_and_never_counts_against_the_job() -> None:
    """A 429 is a WAIT for the limiter's cool-down (or Retry-After), at any attempt count."""
    p = policy(max_attempts=2)
    d = p.decide(RateLimited("429", retry_after=9.0), attempt=50)
    assert (d.action, d.delay) == (Action.WAIT, 9.0)
    d = p.decide(RateLimited("429", retry_after=9.0), attempt=50, rate_limit_wait=12.0)
    assert (d.action, d.delay) == (Action.WAIT, 12.0)


@pytest.mark.parametrize(
    ("error", "action", "retryable"),
    [
        (BadRequest("400"), Action.FAIL, False),
        (RequestFailed("blocked", detail="blocked"), Action.FAIL, False),
        (FatalApiError("401"), Action.STOP, False),
        (InsufficientCredits("406"), Action.STOP_SUBMITTING, False),
        (RequestNotFound("404"), Action.RESUBMIT, False),
        (ImageInvalid("truncated"), Action.RETRY, False),
        (OSError("disk full"), Action.FAIL, True),
    ],
)
def test_each_outcome_has_one_decision(error: BaseException, action: Action, retryable: bool) -> None:
    """Permanent failures give up, 401/403 stop, 406 stops submits, 404 resubmits, bad images retry."""
    d = policy().decide(error, attempt=1)
    assert d.action is action
    assert d.retryable is retryable


def test_resubmits_are_bounded() -> None:
    """A request that keeps expiring is resubmitted a few times, then fails retryably."""
    p = policy(max_resubmits=2)
    assert p.decide(RequestNotFound("404"), attempt=1, resubmits=1).action is Action.RESUBMIT
    d = p.decide(RequestNotFound("404"), attempt=1, resubmits=2)
    assert (d.action, d.retryable) == (Action.FAIL, True)
