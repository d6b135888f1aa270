"""The submit breaker: a server that stops answering pauses submits, is probed, and is given up on."""

from __future__ import annotations

from batchgen.control.breaker import Go, SubmitBreaker, Wait


def test_submits_go_until_three_in_a_row_get_no_answer() -> None:
    """Two silent submits change nothing; the third pauses submitting until the first probe."""
    breaker = SubmitBreaker(trip_after=3, first_pause=15.0)
    for t in (0.0, 30.0):
        assert breaker.claim(t) == Go()
        breaker.no_answer(t)
    assert breaker.claim(60.0) == Go()
    breaker.no_answer(60.0)
    assert breaker.paused
    assert breaker.claim(61.0) == Wait(14.0)


def test_an_answer_of_any_kind_resets_the_count() -> None:
    """Silent, silent, answered (a 502 is an answer), silent, silent: never paused."""
    breaker = SubmitBreaker(trip_after=3)
    for t, answered in ((0.0, False), (1.0, False), (2.0, True), (3.0, False), (4.0, False)):
        assert breaker.claim(t) == Go()
        (breaker.answered if answered else breaker.no_answer)(t)
    assert not breaker.paused


def test_a_paused_breaker_lets_one_probe_through_and_an_answer_closes_it() -> None:
    """After the pause one probe goes, others wait for it; its answer lets everyone go again."""
    breaker = SubmitBreaker(trip_after=1, first_pause=10.0)
    breaker.no_answer(0.0)
    assert breaker.claim(10.0) == Go(probe=True)
    assert isinstance(breaker.claim(10.5), Wait)  # the probe is out
    breaker.answered(12.0)
    assert breaker.claim(12.0) == Go() and not breaker.paused


def test_probes_without_an_answer_back_off_then_the_breaker_gives_up() -> None:
    """Each silent probe doubles the pause (capped); no answer for give_up_after: dead, for good."""
    breaker = SubmitBreaker(trip_after=1, first_pause=10.0, max_pause=40.0, give_up_after=100.0)
    breaker.no_answer(0.0)
    probes = []
    t = 0.0
    while True:
        decision = breaker.claim(t)
        if decision is None:
            break
        if isinstance(decision, Wait):
            t += decision.seconds
            continue
        probes.append(t)
        t += 5.0  # the probe's own timeout
        breaker.no_answer(t)
    assert probes == [10.0, 35.0, 80.0]  # pauses of 10, 20, 40 s after each silent probe
    assert breaker.dead and breaker.claim(t + 1000) is None
