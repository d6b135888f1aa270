"""When the request history is read for a submit in doubt: the look schedule."""

from __future__ import annotations

import pytest

from batchgen.engine.reconcile import look_times


def test_a_fresh_doubt_is_looked_up_on_the_schedule_and_after_the_lag() -> None:
    """A submit in doubt at once (intent = now): looks 1, 3, 7, 15 ... s after it, and one
    just past the lag window."""
    looks = look_times(start=100.0, wall=5000.0, intent_at=5000.0, lag=60.0)
    assert looks[:4] == [101.0, 103.0, 107.0, 115.0]
    assert 160.5 in looks


def test_looks_already_due_collapse_into_one_now() -> None:
    """A submit that timed out after 30 s (or a killed run's intent, hours old): every look
    already due is one look, now; none is skipped to the next one of the schedule."""
    looks = look_times(start=100.0, wall=5030.0, intent_at=5000.0, lag=7200.0)
    assert looks[0] == 100.0 and looks[1] == pytest.approx(130.0)
    old = look_times(start=100.0, wall=90000.0, intent_at=5000.0, lag=7200.0)
    assert old == [100.0]  # every look and the lag are past: one read, now
