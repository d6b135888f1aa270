"""The rate gate: pacing, 429 events, the limit estimate, polls learned to count, bounds."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import anyio
import anyio.lowlevel
import pytest

from batchgen.control.gate import Grant, Kind, RateGate, RateState
from batchgen.emulator.ratelimit import SlidingWindow
from batchgen.errors import RateLimitStalled


@pytest.fixture
def anyio_backend(virtual_time: object) -> object:
    """These tests run on virtual time (their waits are seconds long)."""
    return virtual_time


@dataclass
class SimResult:
    accepted: list[float]
    refused: list[float]
    state: RateState

    def accepted_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.accepted if start <= t < end)

    def refused_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.refused if start <= t < end)


def simulate(
    state: RateState,
    *,
    limit: int,
    seconds: float,
    kinds: tuple[Kind, ...] = ("submit",),
    counts_all: bool = False,
    rtt: float = 0.05,
    retry_after: bool = True,
    outstanding: int = 16,
) -> SimResult:
    """A greedy client (always something to send) against the emulator's sliding window.

    Requests cycle through ``kinds``; the server counts every request when
    ``counts_all``, else submits only. Each request reaches the server ``rtt / 2``
    after its grant and its answer comes back ``rtt`` after it.
    """
    server = SlidingWindow()
    now = 0.0
    accepted: list[float] = []
    refused: list[float] = []
    answers: list[tuple[float, int, Grant, bool, float | None]] = []
    seq = 0
    turn = 0
    while now < seconds:
        kind = kinds[turn % len(kinds)]
        ready = state.ready_at(kind, now)
        next_answer = answers[0][0] if answers else math.inf
        if ready is not None and ready <= next_answer and len(answers) < outstanding:
            pressed = ready > now
            now = max(now, ready)
            grant = state.grant(kind, now, pressed=pressed)
            counted = counts_all or kind == "submit"
            wait = server.acquire("k", limit=limit, now=now + rtt / 2) if counted else None
            seq += 1
            heapq.heappush(answers, (now + rtt, seq, grant, wait is None, float(wait) if wait else None))
            turn += 1
            continue
        if not answers:
            raise AssertionError("the gate blocked with nothing in flight")
        now, _, grant, ok, wait = heapq.heappop(answers)
        if ok:
            state.accepted(grant, now)
            accepted.append(now)
        else:
            state.rate_limited(grant, now, wait if retry_after else None)
            refused.append(now)
    return SimResult(accepted, refused, state)


def test_untold_gate_finds_a_sliding_window_limit_and_keeps_429s_rare() -> None:
    """Told nothing, against 50 rpm: ~0.9 of the limit after the first minute, under 3 % 429s."""
    result = simulate(RateState(), limit=50, seconds=600)
    accepted = result.accepted_between(60, 600)
    refused = result.refused_between(60, 600)
    assert accepted >= 0.9 * 50 * 9
    assert refused <= 0.03 * (accepted + refused)
    assert result.state.limit is not None and 45 <= result.state.limit <= 50


def test_untold_gate_without_retry_after_still_finds_the_limit() -> None:
    """A server that sends no Retry-After: backoff and one probe at a time, then the same pace."""
    result = simulate(RateState(), limit=50, seconds=600, retry_after=False)
    accepted = result.accepted_between(60, 600)
    refused = result.refused_between(60, 600)
    assert accepted >= 0.88 * 50 * 9
    assert refused <= 0.03 * (accepted + refused)


def test_told_the_plan_limit_there_are_no_429s() -> None:
    """Told --rpm equal to the server's limit: paced evenly from the first request, never refused."""
    result = simulate(RateState(rpm=50), limit=50, seconds=300)
    assert result.refused == []
    assert result.accepted_between(0, 300) >= 0.98 * 50 * 5


def test_free_plan_five_rpm() -> None:
    """The free plan's 5 rpm, told nothing: found, and held with few 429s."""
    result = simulate(RateState(), limit=5, seconds=1200)
    accepted = result.accepted_between(120, 1200)
    refused = result.refused_between(120, 1200)
    assert accepted >= 0.85 * 5 * 18
    assert refused <= 0.05 * (accepted + refused) + 1


def test_polls_that_count_are_learned_from_a_poll_429() -> None:
    """Polls refused 429 teach the gate they count; then everything is paced under the limit."""
    state = RateState()
    result = simulate(
        state, limit=60, seconds=600, kinds=("submit", "status", "status", "result"), counts_all=True
    )
    assert state.polls_count and state.polls_count_learned
    accepted = result.accepted_between(60, 600)
    refused = result.refused_between(60, 600)
    assert accepted >= 0.9 * 60 * 9
    assert refused <= 0.03 * (accepted + refused)


def test_eight_poll_429s_at_once_are_one_congestion_event() -> None:
    """429s for slots granted before the last cut do not cut again: the estimate does not ratchet."""
    state = RateState()
    grants = [state.grant("status", 0.0) for _ in range(8)]
    for i in range(50):  # 50 accepted in the minute: the server's limit
        state.accepted(state.grant("submit", 0.1 + i * 0.01), 0.2 + i * 0.01)
    for grant in grants:
        state.rate_limited(grant, 1.0, 2.0)
    assert state.events == 1
    assert state.refused == 8
    assert state.polls_count
    assert state.limit is not None and state.limit >= 50  # 50 submits + the polls answered so far


def test_the_estimate_is_what_the_server_let_through_not_the_cut_pace() -> None:
    """A second event a minute later re-reads the window: same server, same estimate (no ratchet)."""
    state = RateState()
    t = 0.0
    for _ in range(60):
        state.accepted(state.grant("submit", t), t + 0.01)
        t += 1.0
    state.rate_limited(state.grant("submit", t), t + 0.01, 1.0)
    first = state.limit
    for _ in range(120):
        t += 1.0
        state.accepted(state.grant("submit", t), t + 0.01)
    state.rate_limited(state.grant("submit", t + 0.5), t + 0.6, 1.0)
    assert first == state.limit == 60


def test_retry_after_is_capped() -> None:
    """A Retry-After of 10^9 seconds waits the cap (120 s by default), then one probe goes."""
    state = RateState()
    wait = state.rate_limited(state.grant("submit", 0.0), 0.1, 1e9)
    assert wait == 120.0
    assert state.ready_at("submit", 0.2) == pytest.approx(120.1)
    probe = state.grant("submit", 120.1)
    assert probe.probe
    assert state.ready_at("submit", 120.2) is None  # the probe's answer is awaited
    state.accepted(probe, 120.3)
    assert state.ready_at("submit", 120.3) is not None


def test_a_probe_that_gets_no_answer_lets_another_go() -> None:
    """A probe whose request failed without an answer frees the way for the next one."""
    state = RateState()
    state.rate_limited(state.grant("submit", 0.0), 0.0, 1.0)
    probe = state.grant("submit", 1.0)
    assert state.ready_at("submit", 1.0) is None
    state.released(probe, 1.5)
    assert state.ready_at("submit", 1.5) == 1.5


def test_submits_leave_room_for_their_polls_when_polls_count() -> None:
    """Told polls count: submits are spaced at most twice their share ((1 + followups) / 2 slots)."""
    state = RateState(rpm=60 / 0.99, polls_count=True)  # a pace of exactly 60 per minute
    state.grant("submit", 0.0)
    assert state.ready_at("status", 0.0) == pytest.approx(1.0)
    assert state.ready_at("submit", 0.0) == pytest.approx((1.0 + state.followups) / 2)
    assert state.submit_rate() == pytest.approx(1.0 / (1.0 + state.followups))


def test_a_submit_delayed_by_polls_does_not_push_the_next_ones_back() -> None:
    """Submit slots keep to their schedule when one of them was taken a little late."""
    state = RateState(rpm=60 / 0.99, polls_count=True)
    spacing = (1.0 + state.followups) / 2
    state.grant("submit", 0.0)
    state.grant("submit", spacing + 0.5)  # half a second late
    assert state.ready_at("submit", spacing + 0.5) == pytest.approx(2 * spacing)


def test_stall_is_reported_after_the_patience() -> None:
    """Nothing but 429s for longer than the stall limit: the gate says so."""
    state = RateState(stall_limit=600)
    state.rate_limited(state.grant("submit", 0.0), 0.0, 1.0)
    assert not state.stalled(599.0)
    assert state.stalled(601.0)


@pytest.mark.anyio
async def test_results_go_before_polls_before_submits() -> None:
    """Waiting requests are served by priority: the result fetch first, then the poll, then the submit."""
    gate = RateGate(RateState(rpm=60, polls_count=True))
    async with gate.slot("submit") as first:
        first.accepted()
    order: list[str] = []

    async def take(kind: Kind) -> None:
        async with gate.slot(kind) as slot:
            order.append(kind)
            slot.accepted()

    async with anyio.create_task_group() as tg:
        for kind in ("submit", "status", "result"):
            tg.start_soon(take, kind)
            await anyio.lowlevel.checkpoint()
    assert order == ["result", "status", "submit"]


@pytest.mark.anyio
async def test_submits_keep_their_share_while_polls_always_wait() -> None:
    """Polls count and a crowd of polls always waits: submits still get about one slot in
    (1 + followups), not none until the polls run out (which let the jobs in flight drain
    and cost the benchmark a tenth of the limit)."""
    gate = RateGate(RateState(rpm=600 / 0.99, polls_count=True))  # 10 slots a second
    granted: list[str] = []

    async def keep_taking(kind: Kind) -> None:
        while len(granted) < 200:
            async with gate.slot(kind) as slot:
                granted.append(kind)
                slot.accepted()

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(keep_taking, "status")
        tg.start_soon(keep_taking, "submit")
    share = granted.count("submit") / len(granted)
    expected = 1 / (1 + gate.state.followups)
    assert 0.8 * expected <= share <= 1.2 * expected


@pytest.mark.anyio
async def test_a_stalled_gate_raises_instead_of_waiting_forever() -> None:
    """When every request has been refused past the patience, a waiting slot raises RateLimitStalled."""
    clock = [0.0]
    state = RateState(stall_limit=10.0)
    gate = RateGate(state, clock=lambda: clock[0])
    state.rate_limited(state.grant("submit", 0.0), 0.0, 5.0)
    clock[0] = 11.0
    with pytest.raises(RateLimitStalled):
        async with gate.slot("submit"):
            pass


def test_a_request_that_leaves_late_moves_the_pace_with_it() -> None:
    """A slot granted at 0 whose request leaves at 0.3 (its ledger line came first): the next
    slot is not before 0.3 + the interval, so two requests never arrive closer than the pace."""
    state = RateState(rpm=60 / 0.99)  # a slot a second
    grant = state.grant("submit", 0.0)
    assert state.ready_at("submit", 0.0) == pytest.approx(1.0)
    state.sending(grant, 0.3)
    assert state.ready_at("submit", 0.3) == pytest.approx(1.3)
    on_time = state.grant("submit", 1.3)
    state.sending(on_time, 1.3)  # left when granted: nothing moves
    assert state.ready_at("submit", 1.3) == pytest.approx(2.3)
