"""The latency model: service time per class from the server's figures, queue wait from brackets."""

from __future__ import annotations

import random

import pytest

from batchgen.control.latency import LatencyModel, Observation

BASE = ("base", 40)


def finished(
    service: float, *, at: float = 0.0, queue: float = 0.0, cls: tuple[str, int] = BASE
) -> Observation:
    """A request polled densely: seen QUEUED until its start, found done right at its end."""
    start = at + queue
    end = start + service
    return Observation(
        service_class=cls,
        sent_at=at,
        accepted_at=at,
        done_by=end + 0.01,
        service=service,
        pending_until=end - 0.01,
        queued_until=start - 0.01 if queue > 0 else None,
        processing_by=start + 0.01 if queue > 0 else None,
    )


def test_nothing_known_before_the_first_lesson() -> None:
    """A fresh model predicts nothing and has not signalled `learned`."""
    model = LatencyModel()
    assert not model.known and model.service_time(BASE) is None
    assert not model.learned.is_set()
    model.observe(finished(2.0))
    assert model.known and model.learned.is_set()
    assert model.service_time(BASE) == 2.0


@pytest.mark.parametrize("factor", [4.0, 0.25], ids=["4x-up", "4x-down"])
def test_a_4x_change_is_learned_within_ten_completions(factor: float) -> None:
    """After latency moves 4x up or down, the estimate is within 15 % of the new value by 10 completions."""
    rng = random.Random(5)
    model = LatencyModel()
    for _ in range(30):
        model.observe(finished(22.0 * rng.lognormvariate(0, 0.25)))
    new = 22.0 * factor
    for _ in range(10):
        model.observe(finished(new * rng.lognormvariate(0, 0.25)))
    estimate = model.service_time(BASE)
    assert estimate is not None and abs(estimate / new - 1) < 0.15


def test_the_queue_wait_comes_from_the_queued_to_processing_bracket() -> None:
    """Seen QUEUED until 4.99 s and PROCESSING by 5.01 s: the wait is about 5 s."""
    model = LatencyModel()
    wait = model.observe(finished(3.0, queue=5.0))
    assert wait == pytest.approx(5.0, abs=0.05)
    assert model.queue_wait() == pytest.approx(5.0, abs=0.05)


def test_a_job_found_done_at_its_first_look_only_lowers_the_queue_estimate() -> None:
    """Found done at the first poll: the wait is at most what that allows; it never raises the estimate."""
    model = LatencyModel()
    model.observe(finished(3.0, queue=5.0))
    late = Observation(service_class=BASE, sent_at=0.0, accepted_at=0.0, done_by=60.0, service=3.0)
    model.observe(late)  # done by 60 s: the wait was at most 57 s, which says nothing new
    assert model.queue_wait() == pytest.approx(5.0, abs=0.05)
    early = Observation(service_class=BASE, sent_at=0.0, accepted_at=0.0, done_by=4.0, service=3.0)
    for _ in range(10):
        model.observe(early)  # done by 4 s: the wait was at most 1 s
    assert model.queue_wait() <= 1.0


def test_an_unseen_class_borrows_from_a_seen_one() -> None:
    """fast at 20 steps, never seen, is guessed from base at 40 by the relative cost prior."""
    model = LatencyModel()
    model.observe(finished(20.0))
    guess = model.service_time(("fast", 20))
    assert guess is not None and 2.0 < guess < 5.0
    model.observe(finished(7.0, cls=("fast", 20)))
    assert model.service_time(("fast", 20)) == 7.0


def test_the_spread_is_read_from_the_windows() -> None:
    """Quantiles of service over its class median: below 1 at q=0.1, above 1 at q=0.9."""
    rng = random.Random(1)
    model = LatencyModel()
    for _ in range(15):
        model.observe(finished(10.0 * rng.lognormvariate(0, 0.25)))
    assert 0.6 < model.ratio(0.1) < 0.95 < 1.05 < model.ratio(0.9) < 1.6


def test_without_a_server_figure_the_bracketed_latency_stands_in() -> None:
    """No inference_time in the answer: the bracketed submit-to-done time is learned instead."""
    model = LatencyModel()
    obs = Observation(service_class=BASE, sent_at=0.0, accepted_at=0.1, done_by=10.1, pending_until=9.0)
    assert model.observe(obs) is None
    assert model.service_time(BASE) == pytest.approx(9.55)


def test_a_drop_is_learned_while_older_slow_requests_still_finish() -> None:
    """Latency drops 4x: the new fast requests finish interleaved with slow ones submitted
    before the drop. Ordered by submit time, five fast ones move the estimate, and the slow
    stragglers, submitted earlier, do not pull it back."""
    model = LatencyModel()
    for i in range(15):
        model.observe(finished(8.0, at=float(i)))
    # Submitted at 15..: slow ones (old regime, submitted 15-24) and fast ones (from 25).
    slow = [finished(8.0, at=15.0 + i) for i in range(10)]
    fast = [finished(2.0, at=25.0 + i) for i in range(10)]
    for s, f in zip(slow, fast, strict=True):
        model.observe(f)
        model.observe(s)
    estimate = model.service_time(BASE)
    assert estimate is not None and abs(estimate / 2.0 - 1) < 0.15


def test_many_in_flight_at_one_latency_neither_bias_the_estimate_nor_fake_a_shift() -> None:
    """10 submits a second, 4.4 s each with +-25 % spread, told in the order they finish.
        Of the latest submits, the short ones finish first: a window kept in submit order was
        biased short and read them as a drop (the benchmark saw it at the 23rd completion of
        a new latency). Past the start (where the first to finish are the short ones), the
    estimate stays within 25 % of the true median (the benchmark's bar), and never moves."""
    rng = random.Random(11)
    runs = [(i / 10, 4.4 * rng.lognormvariate(0, 0.25)) for i in range(600)]
    model = LatencyModel()
    moves = 0
    estimates = []
    for submitted, service in sorted(runs, key=lambda run: run[0] + run[1]):
        before = model._moved
        model.observe(finished(service, at=submitted))
        moves += model._moved is not before
        estimates.append(model.service_time(BASE))
    assert moves == 0
    assert all(e is not None and abs(e / 4.4 - 1) < 0.25 for e in estimates[50:])
