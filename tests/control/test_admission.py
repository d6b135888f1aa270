"""The in-flight target: Little's law on the measured rate and hold time, within its bounds."""

from __future__ import annotations

import math

import pytest

from batchgen.control.admission import AUTO_CAP, GROWTH, HEADROOM, INITIAL, Admission


def finish(admission: Admission, n: int, *, start: float, every: float, hold: float, **kw: float) -> float:
    """``n`` jobs finishing ``every`` seconds from ``start``, each having held its place ``hold`` s."""
    t = start
    for _ in range(n):
        admission.finished(t, hold=hold, **kw)
        t += every
    return t - every


def test_told_the_rate_the_target_is_rate_times_hold_with_headroom() -> None:
    """50 submits/min and 22 s per job: about 1.25 x 0.83 x 22 + 2 = 25 in flight (the Pro plan)."""
    admission = Admission()
    rate = 50 / 60
    now = finish(admission, 60, start=22.0, every=1.2, hold=22.0)
    target = admission.update(now, submit_rate=rate)
    assert target == math.ceil(HEADROOM * rate * 22.0) + 2


def test_before_anything_finished_a_told_rate_admits_two_minutes_of_it() -> None:
    """Told 600 rpm, nothing measured yet: the pace bounds submits, 2 minutes' worth are admitted."""
    admission = Admission()
    assert admission.update(0.0, submit_rate=10.0) == 1200 if AUTO_CAP >= 1200 else AUTO_CAP


def test_untold_it_starts_small_and_doubles_each_round() -> None:
    """No rate known: INITIAL in flight, then one more per job finished until throughput is measurable."""
    admission = Admission()
    assert admission.update(0.0, submit_rate=None) == INITIAL
    finish(admission, INITIAL, start=1.0, every=0.01, hold=1.0)
    assert admission.update(1.2, submit_rate=None) == 2 * INITIAL


def test_when_workers_bind_growth_stops_near_what_they_finish() -> None:
    """Untold, 64 jobs/s of 0.25 s finishing: the target settles near 1.9 x 64 x 0.25 + 2, not the cap."""
    admission = Admission()
    now = finish(admission, 400, start=0.3, every=1 / 64, hold=0.25)
    target = admission.update(now, submit_rate=None)
    assert target == pytest.approx(HEADROOM * GROWTH * 64 * 0.25 + 2, abs=3)


def test_queue_beyond_one_service_time_does_not_justify_more() -> None:
    """A job queued 100 s for a 20 s inference counts as holding its place ~40 s, not 120."""
    admission = Admission()
    finish(admission, 5, start=120.0, every=1.0, hold=120.0, service=20.0, queue=100.0)
    assert admission.hold_time() == pytest.approx(40.0)


def test_the_target_never_exceeds_what_finishes_in_a_quarter_of_the_retention() -> None:
    """A server finishing one job a minute: about 15 in flight at most (a quarter hour of its output)."""
    admission = Admission()
    now = finish(admission, 30, start=60.0, every=60.0, hold=3000.0)
    assert admission.update(now, submit_rate=10.0) <= 17


def test_a_fixed_cap_is_a_cap() -> None:
    """--concurrency 4: the target is never above 4, whatever the rate."""
    admission = Admission(cap=4)
    assert admission.update(0.0, submit_rate=100.0) == 4
    now = finish(admission, 50, start=1.0, every=0.01, hold=1.0)
    assert admission.update(now, submit_rate=100.0) == 4
    assert admission.limiter.total_tokens == 4


def test_resumed_requests_get_room_at_once() -> None:
    """40 requests already on the server are polled at once, above the initial target."""
    admission = Admission()
    admission.make_room(40)
    assert admission.limiter.total_tokens == 40
