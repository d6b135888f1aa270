"""The poll cadence: probe first, then poll by the learned latency and by what a poll costs."""

from __future__ import annotations

import random
import statistics

import pytest

from batchgen.control.cadence import FALLBACK_FIRST, PROBE_FIRST, Cadence
from batchgen.control.flight import Flight
from batchgen.control.gate import RateState
from batchgen.control.latency import LatencyModel, Observation
from batchgen.manifest.job import DEFAULT_MODEL, Job, job_key
from batchgen.manifest.params import validate_params

BASE = ("base", 40)


def flight(i: int = 0, *, accepted_at: float = 0.0) -> Flight:
    params = validate_params({"prompt": f"a fox {i}", "seed": i + 1})
    job = Job(index=i, key=job_key(DEFAULT_MODEL, params, {}), model=DEFAULT_MODEL, params=params)
    f = Flight(job)
    f.submitted(f"r{i}", sent_at=accepted_at, accepted_at=accepted_at)
    return f


def taught(median: float, *, n: int = 15, seed: int = 3) -> LatencyModel:
    """A model that has seen ``n`` base-mode requests of about ``median`` seconds, no queue."""
    rng = random.Random(seed)
    model = LatencyModel()
    for _ in range(n):
        s = median * rng.lognormvariate(0, 0.25)
        model.observe(
            Observation(
                service_class=BASE,
                sent_at=0,
                accepted_at=0,
                done_by=s + 0.01,
                service=s,
                pending_until=s - 0.01,
            )
        )
    return model


def follow(
    cadence: Cadence, f: Flight, done_at: float, *, start_at: float | None = None
) -> tuple[int, float]:
    """Poll ``f`` by the cadence until it is found done; (polls, detection delay in seconds)."""
    now = f.accepted_at or 0.0
    while True:
        now = cadence.next_poll(f, now)
        if now >= done_at:
            f.polled("COMPLETED", sent_at=now, received_at=now)
            return f.polls, now - done_at
        state = "QUEUED" if start_at is not None and now < start_at else "PROCESSING"
        f.polled(state, sent_at=now, received_at=now)


def test_the_first_job_probes_on_a_short_geometric_schedule() -> None:
    """Before anything is learned the probe looks after 50 ms, then each look 1.5x later."""
    cadence = Cadence(LatencyModel(), RateState())
    probe = flight(0)
    times = []
    now = 0.0
    for _ in range(6):
        now = cadence.next_poll(probe, now)
        times.append(now)
        probe.polled("PROCESSING", sent_at=now, received_at=now)
    assert times[:2] == pytest.approx([PROBE_FIRST, 2 * PROBE_FIRST])  # each gap at least the first one
    ratios = [b / a for a, b in zip(times[1:], times[2:], strict=False)]
    assert all(r == pytest.approx(1.5) for r in ratios)
    assert cadence.is_probe(probe)


def test_the_probe_sees_a_fast_and_a_slow_job_within_half_its_latency() -> None:
    """Whether the first job takes 20 ms or 2 minutes, the probe notices it within 50 % of that."""
    for latency in (0.02, 0.25, 22.0, 120.0):
        cadence = Cadence(LatencyModel(), RateState())
        _, delay = follow(cadence, flight(0), latency)
        assert delay <= max(0.5 * latency, PROBE_FIRST)


def test_the_other_jobs_wait_for_the_probe_on_a_slow_fallback() -> None:
    """A second job is not a probe: its first look is the 1 s fallback, then doubling."""
    cadence = Cadence(LatencyModel(), RateState())
    cadence.next_poll(flight(0), 0.0)
    other = flight(1)
    first = cadence.next_poll(other, 0.0)
    assert first == FALLBACK_FIRST and not cadence.is_probe(other)
    other.polled("QUEUED", sent_at=first, received_at=first)
    assert cadence.next_poll(other, first) == pytest.approx(2 * FALLBACK_FIRST)


def test_when_the_probe_leaves_another_job_takes_over() -> None:
    """release() of the probe lets the next job that asks become the probe."""
    cadence = Cadence(LatencyModel(), RateState())
    probe, other = flight(0), flight(1)
    cadence.next_poll(probe, 0.0)
    cadence.release(probe)
    cadence.next_poll(other, 0.0)
    assert cadence.is_probe(other)


@pytest.mark.parametrize("median", [0.25, 22.0])
def test_free_polls_notice_a_finished_job_within_about_ten_percent(median: float) -> None:
    """Polls that do not count: median detection delay about 10 % of the latency, a few polls each."""
    cadence = Cadence(taught(median), RateState())
    rng = random.Random(11)
    polls, delays = [], []
    for i in range(300):
        latency = median * rng.lognormvariate(0, 0.25)
        n, delay = follow(cadence, flight(i), latency)
        polls.append(n)
        delays.append(delay / latency)
    assert statistics.median(delays) <= 0.07
    assert statistics.quantiles(delays, n=20)[-1] <= 0.15  # p95
    assert statistics.mean(polls) <= 6


def test_counted_polls_aim_at_about_one_point_two_per_image() -> None:
    """Polls that count against the rate limit: about 1.2 polls per image, at most 1.5."""
    cadence = Cadence(taught(22.0), RateState(polls_count=True))
    rng = random.Random(12)
    polls = [follow(cadence, flight(i), 22.0 * rng.lognormvariate(0, 0.25))[0] for i in range(500)]
    assert statistics.mean(polls) <= 1.35


def test_a_job_seen_queued_is_not_polled_before_it_could_finish() -> None:
    """A poll that found the job QUEUED at t moves the next to no sooner than t plus a short service."""
    cadence = Cadence(taught(10.0), RateState())
    f = flight(0)
    first = cadence.next_poll(f, 0.0)
    f.polled("QUEUED", sent_at=first, received_at=first)
    assert cadence.next_poll(f, first) >= first + 0.5 * 10.0


def test_a_late_job_is_polled_every_tenth_of_its_age_and_at_least_every_30_s() -> None:
    """Past its expected time the gap grows with the job's age, capped at 30 s."""
    cadence = Cadence(taught(10.0), RateState())
    f = flight(0)
    f.polled("PROCESSING", sent_at=100.0, received_at=100.0)
    assert cadence.next_poll(f, 100.0) == pytest.approx(110.0)
    f.polled("PROCESSING", sent_at=1000.0, received_at=1000.0)
    assert cadence.next_poll(f, 1000.0) == pytest.approx(1030.0)


def test_a_batch_that_fits_a_minute_of_the_told_rate_polls_sparingly() -> None:
    """Told an rpm, not whether polls count: a batch that fits a minute of it polls at the counted cadence."""
    told = RateState(rpm=600)
    assert not told.polls_scarce  # the batch's size not known yet
    told.planned = 100  # 100 x (1 + 2.2) = 320 requests <= 594
    assert told.polls_scarce
    told.planned = 450  # 1,440 requests: polls stay free until a 429 says they count
    assert not told.polls_scarce
    unpaced = RateState()
    unpaced.planned = 10
    assert not unpaced.polls_scarce and RateState(polls_count=True).polls_scarce
    told.planned = 100
    cadence = Cadence(taught(22.0), told)
    rng = random.Random(12)
    polls = [follow(cadence, flight(i), 22.0 * rng.lognormvariate(0, 0.25))[0] for i in range(500)]
    assert statistics.mean(polls) <= 1.35
    told.planned = 450
    free = Cadence(taught(22.0), told)
    rng = random.Random(12)
    assert (
        statistics.mean(follow(free, flight(i), 22.0 * rng.lognormvariate(0, 0.25))[0] for i in range(500))
        > 3
    )
