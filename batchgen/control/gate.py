"""The rate gate: every API request goes through one door, one account-wide rate.

Segmind limits each account to so many requests per minute (5 on the free plan, 50 on
Pro). Whether status polls and result fetches count is not documented, so the gate
starts from what it is told (``rpm``, ``polls_count``) and learns the rest:

- **Counted kinds.** Submits always count. Status polls and result fetches count once
  told so (``polls_count``) or once one of them is answered 429; from then on every
  request takes a slot from the same pace, results before polls before submits, and
  submits are spaced so they leave room for the polls and the result fetch each of
  them will cause (``followups``): a submit is owed one slot in ``1 + followups`` (on
  a schedule) and takes it even while polls and results wait, so a burst of polls
  does not stop submits and drain the jobs in flight; beyond that share it takes a
  slot only when no poll or result waits for it, never more than twice its share.
- **Pace.** Slots of the counted kinds are spaced ``60 / rate`` seconds apart, from the
  first one; an idle spell saves up at most half the gap between the pace and the limit
  (two slots at most), so no minute holds more than the limit. Told an ``rpm``, the pace starts
  at 99 % of it (arrival jitter must not tip a request over) and never exceeds that;
  told none, nothing is paced until the first 429.
- **A 429 is one congestion event.** Every slot records when it was granted; a 429 for
  a slot granted before the last cut belongs to the event already handled (eight polls
  answered 429 at once are one event, not eight). A new event sets the estimate of the
  server's limit to the requests of the counted kinds it accepted in its last minute
  (exactly the limit of a sliding 60 s window, and this process's share of it when
  other processes use the same key), whatever pace was in force: the estimate does not
  ratchet down with each cut. The pace restarts at 90 % of it, is back at 97 % within
  a few accepted requests, then probes above it, slowly at first and faster the longer
  no 429 comes (so a raised limit is found again), but only while requests are waiting
  for the pace (one that is not used says nothing about the limit): a run at the limit
  sees about one 429 per hundred requests.
- **Cool-down.** After a 429 every counted request waits ``Retry-After`` (capped at
  :data:`RETRY_AFTER_CAP` seconds) or, without one, a backoff doubling from 1 s to 60 s;
  then a single probe goes first, and pacing resumes only once it is accepted.
- **Patience.** When counted requests have been refused for :data:`STALL_LIMIT`
  seconds without a single one accepted, waiting for a slot raises
  :class:`~batchgen.errors.RateLimitStalled` (the job fails retryably) instead of
  waiting forever on a server that refuses everything.

:class:`RateState` holds all of this as plain data driven by explicit times (tests use a
fake clock); :class:`RateGate` is the async door around it.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import anyio

from batchgen.errors import RateLimitStalled

__all__ = [
    "RETRY_AFTER_CAP",
    "STALL_LIMIT",
    "WINDOW",
    "Grant",
    "Kind",
    "RateState",
    "RateGate",
    "Slot",
]

Kind = Literal["submit", "status", "result"]

WINDOW = 60.0  # seconds: the API's limits are requests per minute
RETRY_AFTER_CAP = 120.0  # seconds: a longer Retry-After is taken as this
STALL_LIMIT = 600.0  # seconds of nothing but 429s before waiting jobs give up

# Lower first: a result fetch finishes a paid job, a poll finds one finished, a submit
# starts a new one.
_PRIORITY: dict[Kind, int] = {"result": 0, "status": 1, "submit": 2}

_TOLD_MARGIN = 0.99  # the pace stays this much under a told limit
_CREDIT = 2.0  # slots of the pace an idle spell may save up
_SUBMIT_SHARE_SLACK = 2.0  # submits may take up to this many times their share of idle slots
_START_FRACTION = 0.9  # the pace after a cut, as a fraction of the estimated limit
_CRUISE_FRACTION = 0.97  # recovered quickly to this much of the estimate ...
_RECOVER_STEP = 0.02  # ... by this fraction of it per accepted request
# Then the pace probes above: cruise x exp(_PROBE_GAIN x p^2), where the progress p is the
# lesser of (accepted requests since cruising) / 60 and (minutes since cruising): the
# estimate is passed after about 60 requests at low rates, a minute at high ones, and a
# limit twice as high is reached within five such units.
_PROBE_GAIN = 0.03


@dataclass(frozen=True, slots=True)
class Grant:
    """One request's permission: its kind, when it was granted, and how it was counted."""

    kind: Kind
    at: float
    counted: bool
    probe: bool = False
    pressed: bool = False  # it had to wait for its slot: the pace is what holds requests back
    next_at: float = -math.inf  # the schedule point this grant set for the next counted slot


class RateState:
    """The gate's arithmetic: pace, congestion events, the limit estimate, the cool-down.

    Every method takes the time explicitly, so the same object drives a live run
    (anyio's clock) and a test (a fake clock).
    """

    def __init__(
        self,
        *,
        rpm: float | None = None,
        polls_count: bool = False,
        retry_after_cap: float = RETRY_AFTER_CAP,
        stall_limit: float = STALL_LIMIT,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        min_rpm: float = 1.0,
    ) -> None:
        if rpm is not None and not rpm > 0:
            raise ValueError("rpm must be positive")
        # The plan's limit as told, less a margin for jitter in when requests arrive; the
        # pace never exceeds it.
        self._told = rpm
        self.ceiling = None if rpm is None else rpm * _TOLD_MARGIN
        self.limit = self.ceiling  # the estimate of the server's limit (counted requests per minute)
        self.rate = self.ceiling  # the pace of counted requests per minute; None: not paced
        self.polls_count = polls_count
        self.polls_count_learned = False  # a poll or result fetch was answered 429
        self.polls_count_since = -math.inf if polls_count else math.inf  # when they started to count
        self.followups = 2.2  # counted requests a submit causes when polls count (polls + result)
        self.planned: int | None = None  # submits the batch is expected to make (see polls_scarce)
        self.refused = 0  # 429s, for the summary
        self.events = 0  # congestion events (cuts)
        self._retry_after_cap = retry_after_cap
        self._stall_limit = stall_limit
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._min_rpm = min_rpm
        self._accepted: deque[tuple[float, bool]] = deque()  # (time, was a submit) in the last WINDOW
        self._next = -math.inf  # earliest time of the next counted slot
        self._next_submit = -math.inf  # earliest time of the next submit slot
        self._submit_owed_at = -math.inf  # from then on submits are owed their share
        self._cooldown_until = -math.inf
        self._last_cut = -math.inf
        self._probing = False  # after a cool-down: one request first
        self._probe_out = False  # that probe is on its way
        self._streak = 0  # consecutive 429s of counted requests
        self._cruising = 0  # accepted requests since the pace got back to cruising speed
        self._cruise_since = math.inf  # when it did
        self._cruise_rate = 0.0
        self._refused_since: float | None = None  # first 429 since the last accepted counted request

    # --- what the gate knows ---------------------------------------------------------

    def counts(self, kind: Kind) -> bool:
        """Whether requests of ``kind`` count against the account's rate (so are paced)."""
        return kind == "submit" or self.polls_count

    @property
    def polls_scarce(self) -> bool:
        """Whether polls should be spent sparingly: they count (told or learned), or they may
        and the whole batch fits in one minute of the told rate if they are (``planned``
        submits, each with its ``followups``). Polled freely, such a batch spends a sliding
        window's minute in a burst before a 429 says polls count, and then nothing is
        accepted until the burst ages out; polled sparingly it never meets a 429 at all,
        and noticing a job a little later costs it nothing. A longer batch polls freely
        until a 429 says otherwise (a later poll would slow how fast it re-learns latency)."""
        if self.polls_count:
            return True
        if self.ceiling is None or self.planned is None:
            return False
        return self.planned * (1.0 + self.followups) <= self.ceiling

    def submit_rate(self) -> float | None:
        """Submits per second the gate lets through at its current pace; None if unpaced."""
        if self.rate is None:
            return None
        share = 1.0 + self.followups if self.polls_count else 1.0
        return self.rate / share / 60.0

    def submit_owed(self, now: float) -> bool:
        """Whether submits are owed their share of the slots when polls count (one in
        ``1 + followups``, on a schedule). A submit then goes before waiting polls and
        results, so a burst of them does not stop submits (and the jobs in flight drain)."""
        return self.polls_count and self.rate is not None and now >= self._submit_owed_at

    def stalled(self, now: float) -> bool:
        """Whether counted requests have been refused for longer than the patience allows."""
        return self._refused_since is not None and now - self._refused_since > self._stall_limit

    def ready_at(self, kind: Kind, now: float) -> float | None:
        """Earliest time a request of ``kind`` may go; None while a probe's answer is awaited."""
        if not self.counts(kind):
            return now
        if self._probing:
            return None if self._probe_out else max(now, self._cooldown_until)
        start = max(now, self._next, self._cooldown_until)
        if kind == "submit":
            start = max(start, self._next_submit)
        return start

    # --- events ------------------------------------------------------------------------

    def grant(self, kind: Kind, now: float, *, pressed: bool = False) -> Grant:
        """Hand out a slot at ``now`` (the caller checked :meth:`ready_at`); ``pressed``: the
        request had to wait for it."""
        counted = self.counts(kind)
        probe = False
        pressed = pressed and counted
        if counted:
            if self._probing:
                self._probe_out = probe = True
            if self.rate is not None:
                interval = 60.0 / self.rate
                # A slot left idle can be used a little later: a poll that came just
                # after its slot passed need not cost the run one. The credit fits in the
                # gap between the pace and the limit, so no minute ever holds more.
                credit = 0.0 if math.isinf(self._next) else self._credit()
                self._next = max(self._next, now - credit * interval) + interval
                if kind == "submit" and self.polls_count:
                    # Spaced from the schedule, not from this grant: a submit that polls
                    # delayed does not push every later submit back (two spacings of credit).
                    # Polls and results go first whenever they wait; submits may use
                    # idle slots up to twice their share, never more.
                    share = interval * (1.0 + self.followups)
                    spacing = share / _SUBMIT_SHARE_SLACK
                    on_time = self._next_submit > now - 2.0 * spacing
                    self._next_submit = (self._next_submit if on_time else now) + spacing
                    # The share submits are owed, on a schedule of one per share: a submit
                    # that was owed and waited for a slot does not push the next one back;
                    # one that went early (nothing else waited) or after an idle spell
                    # starts the schedule afresh.
                    owed = self._submit_owed_at <= now <= self._submit_owed_at + share
                    self._submit_owed_at = (self._submit_owed_at if owed else now) + share
        next_at = self._next if counted and self.rate is not None else -math.inf
        return Grant(kind=kind, at=now, counted=counted, probe=probe, pressed=pressed, next_at=next_at)

    def sending(self, grant: Grant, now: float) -> None:
        """The request of ``grant`` leaves only now (its ledger line came first): the pace
        counts from when requests leave, so a late one does not arrive close to the next."""
        late = now - grant.at
        if late > 0 and grant.next_at > -math.inf:
            self._next = max(self._next, grant.next_at + late)

    def accepted(self, grant: Grant, now: float) -> None:
        """The request of ``grant`` got an answer that was not a 429."""
        self._accepted.append((now, grant.kind == "submit"))
        self._forget_before(now - WINDOW)
        if grant.probe:
            self._probing = self._probe_out = False
        if not grant.counted:
            return
        self._streak = 0
        self._refused_since = None
        if self.rate is not None and self.limit is not None:
            cruise = _CRUISE_FRACTION * self.limit
            if self.rate < cruise:
                self.rate = min(cruise, self.rate + _RECOVER_STEP * self.limit)
                self._cruising = 0
                self._cruise_since = now
                self._cruise_rate = self.rate
            elif grant.pressed:
                # Probe above the estimate, slowly at first and faster the longer no 429
                # comes, so a limit that was raised (another process stopped) is found.
                # Only while the pace is what holds requests back: a run that does not
                # use its pace learns nothing about the limit by raising it.
                self._cruising += 1
                progress = min(self._cruising / 60.0, max(0.0, now - self._cruise_since) / 60.0)
                self.rate = max(self.rate, self._cruise_rate * math.exp(_PROBE_GAIN * progress**2))
            if self.ceiling is not None:
                self.rate = min(self.rate, self.ceiling)

    def released(self, grant: Grant, now: float) -> None:
        """The request of ``grant`` ended without an answer (a network error, a cancel)."""
        if grant.probe and self._probe_out:
            self._probe_out = False  # let another request probe

    def rate_limited(self, grant: Grant, now: float, retry_after: float | None) -> float:
        """The request of ``grant`` was answered 429; returns the cool-down in seconds."""
        self.refused += 1
        if not grant.counted and not self.polls_count:
            # A poll or result fetch refused: they do count. From now on they are paced,
            # and the limit is what the server accepted of every kind.
            self.polls_count = self.polls_count_learned = True
            self.polls_count_since = now
            if self.limit is not None:
                self._forget_before(now - WINDOW)
                self.limit = max(self.limit, len(self._accepted) * 60.0 / WINDOW)
        if grant.counted or self.polls_count_learned:
            self._streak += 1
            if self._refused_since is None:
                self._refused_since = now
        if not grant.probe and grant.at > self._last_cut:
            self._cut(now)
        if retry_after is not None and math.isfinite(retry_after):
            wait = min(max(0.0, retry_after), self._retry_after_cap)
        else:
            wait = min(self._max_backoff, self._backoff * 2.0 ** max(0, self._streak - 1))
        self._cooldown_until = max(self._cooldown_until, now + wait)
        self._probing = True
        if grant.probe:
            self._probe_out = False
        return wait

    def _credit(self) -> float:
        """Slots an idle spell may save up: half the gap between the pace and the limit (the
        other half absorbs jitter in when requests arrive), at most 2."""
        limit = self._told if self._told is not None else self.limit
        if limit is None or self.rate is None:
            return 0.0
        return min(_CREDIT, max(0.0, 0.5 * (limit - self.rate)))

    def _cut(self, now: float) -> None:
        """A new congestion event: estimate the limit from what the server let through."""
        self.events += 1
        self._last_cut = now
        self._forget_before(now - WINDOW)
        seen = sum(1 for _, submit in self._accepted if submit or self.polls_count)
        estimate = max(self._min_rpm, seen * 60.0 / WINDOW)
        if self.ceiling is not None:
            estimate = min(estimate, self.ceiling)
        self.limit = estimate
        self.rate = max(self._min_rpm, _START_FRACTION * estimate)
        self._cruising = 0

    def _forget_before(self, start: float) -> None:
        while self._accepted and self._accepted[0][0] <= start:
            self._accepted.popleft()


@dataclass(order=True)
class _Waiter:
    priority: int
    seq: int
    kind: Kind = field(compare=False)
    wake: anyio.Event = field(compare=False, default_factory=anyio.Event)


class Slot:
    """One granted request; report its outcome with :meth:`accepted` or :meth:`rate_limited`."""

    def __init__(self, gate: RateGate, grant: Grant) -> None:
        self.grant = grant
        self._gate = gate
        self.verdict: Literal["accepted", "rate_limited"] | None = None

    @property
    def kind(self) -> Kind:
        """What the request is."""
        return self.grant.kind

    def sending(self) -> None:
        """The request is about to leave (after whatever had to come first, like its intent)."""
        self._gate.state.sending(self.grant, self._gate._clock())

    def accepted(self) -> None:
        """The server answered (anything but a 429)."""
        if self.verdict is None:
            self.verdict = "accepted"
            self._gate._settle(self, None)

    def rate_limited(self, retry_after: float | None) -> float:
        """The server answered 429; returns the shared cool-down it started, in seconds."""
        if self.verdict is not None:
            return 0.0
        self.verdict = "rate_limited"
        return self._gate._settle(self, retry_after)


class RateGate:
    """The one door of every API request: ``async with gate.slot("status") as slot:``.

    Waiting requests of the counted kinds are served in priority order (results, then
    polls, then submits; a submit first when submits are owed their share), each when
    :meth:`RateState.ready_at` allows. Inside the block
    the caller sends its request and reports the answer on the slot; leaving the block
    without a verdict (an exception, a cancellation) tells the gate nothing but frees
    a probe.
    """

    def __init__(self, state: RateState, *, clock: Callable[[], float] | None = None) -> None:
        self.state = state
        self._clock = clock or anyio.current_time
        self._queue: list[_Waiter] = []
        self._seq = itertools.count()

    @asynccontextmanager
    async def slot(self, kind: Kind) -> AsyncIterator[Slot]:
        """Wait for a slot for a request of ``kind``; raises RateLimitStalled when it never comes."""
        slot = Slot(self, await self._acquire(kind))
        try:
            yield slot
        finally:
            if slot.verdict is None:
                self.state.released(slot.grant, self._clock())
                self._wake_head()

    async def _acquire(self, kind: Kind) -> Grant:
        state = self.state
        if not state.counts(kind):
            return state.grant(kind, self._clock())
        me = _Waiter(_PRIORITY[kind], next(self._seq), kind)
        heapq.heappush(self._queue, me)
        waited = False
        try:
            while True:
                now = self._clock()
                if state.stalled(now):
                    raise RateLimitStalled(
                        f"rate limited: no request accepted for {state._stall_limit:.0f} s; giving up",
                        retry_after=None,
                    )
                chosen = self._chosen(now)
                if chosen is not me:
                    chosen.wake.set()
                start = state.ready_at(kind, now) if chosen is me else None
                if start is not None and start <= now:
                    if self._queue[0] is me:
                        heapq.heappop(self._queue)
                    else:  # a submit owed its share, ahead of the head
                        self._queue.remove(me)
                        heapq.heapify(self._queue)
                    return state.grant(kind, now, pressed=waited)
                waited = True
                # The head sleeps until its time (or until woken by a change); the others
                # wait to become the head. A patience check runs at least every minute.
                timeout = 60.0 if start is None else min(60.0, start - now)
                with anyio.move_on_after(timeout):
                    await me.wake.wait()
                me.wake = anyio.Event()
        except BaseException:
            if me in self._queue:
                self._queue.remove(me)
                heapq.heapify(self._queue)
            raise
        finally:
            self._wake_head()

    def _chosen(self, now: float) -> _Waiter:
        """The waiter the next slot is for: the first by priority (results, polls, submits),
        unless submits are owed their share (:meth:`RateState.submit_owed`)."""
        head = self._queue[0]
        if head.kind != "submit" and self.state.submit_owed(now):
            submits = [waiter for waiter in self._queue if waiter.kind == "submit"]
            if submits:
                return min(submits)
        return head

    def _settle(self, slot: Slot, retry_after: float | None) -> float:
        now = self._clock()
        wait = 0.0
        if slot.verdict == "accepted":
            self.state.accepted(slot.grant, now)
        else:
            wait = self.state.rate_limited(slot.grant, now, retry_after)
        self._wake_head()
        return wait

    def _wake_head(self) -> None:
        if self._queue:
            self._queue[0].wake.set()
            self._chosen(self._clock()).wake.set()
