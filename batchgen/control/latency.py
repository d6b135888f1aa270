"""How long requests take: what a run learns from the jobs it sees finish.

A request's time from submit to done is its wait in the server's queue plus its
service time. The server reports the service time exactly (``metrics.inference_time``)
whenever a request completes, however late the client noticed, so that is learned per
*service class* ``(mode, steps_num)``: the median of the class's last :data:`WINDOW`
completions, in the order they finished (a window kept in submit order would be biased
short: of the latest submits, the short ones finish first, and the long ones would
arrive to find the window already full of later submits).

A shift is read in submit order, because after a change the new requests finish
interleaved with older ones: when the :data:`SHIFT_RUN` latest submitted in the window
all took more than :data:`SHIFT_UP` times the median of the rest (or less than
1/:data:`SHIFT_DOWN` of it), the latency has moved: the window restarts from them, and
requests submitted before them no longer count, so a 4x change mid-run is right again
after about five completions. Down needs the larger factor: the latest submits to
have finished are the short ones of their time, so ordinary spread (about +-25 %)
would often look like a drop by 1.3x; it almost never looks like one by 2x.

The queue wait is bracketed from what the polls of a job saw: a poll that found it
``QUEUED`` means it had not started when the poll was sent; one that found it
``PROCESSING`` means it had started by the time the answer arrived; the answer that
said ``COMPLETED`` bounds its end, and start = end - service time. A tight bracket
gives a sample (its midpoint); a job found done at its very first poll only bounds
the wait from above, so it can lower the estimate, never raise it. The estimate is the
median of the last :data:`WINDOW` samples (zero before any).

A class never seen yet borrows from a class that has been seen, scaled by a coarse
prior of relative cost (:data:`RELATIVE_COST` x steps); its own first completion
replaces the guess. The spread (how much one request differs from its class median)
is read off the same windows, each value over its own class's median, pooled, as the
sigma of a log-normal: few samples still give usable tails.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

import anyio

__all__ = [
    "RELATIVE_COST",
    "SHIFT_DOWN",
    "SHIFT_RUN",
    "SHIFT_UP",
    "WINDOW",
    "LatencyModel",
    "Observation",
    "ServiceClass",
    "relative_cost",
]

ServiceClass = tuple[str, int]  # (mode, steps_num)

WINDOW = 15
SHIFT_RUN = 5  # when the latest this many submits of a window ...
SHIFT_UP = 1.3  # ... all took this much longer than the median of the rest,
SHIFT_DOWN = 2.0  # ... or all this much less, the class's window restarts from them
# How much slower each mode is than another at equal steps: only to guess a class not
# seen yet from one that was (base is Bria 3.2's ~22 s; fast is distilled; hd renders
# larger). Replaced by the class's own first observation.
RELATIVE_COST: dict[str, float] = {"base": 1.0, "fast": 0.3, "hd": 1.6}
DEFAULT_SIGMA = 0.3  # the spread assumed before a few completions were seen
MIN_SIGMA = 0.05
_NORMAL = statistics.NormalDist()


@dataclass(frozen=True, slots=True)
class Observation:
    """What one finished request showed, in the run's clock (seconds).

    ``sent_at`` / ``accepted_at``: the submit went out / its answer came back.
    ``queued_until``: the send time of the last poll that found it ``QUEUED``.
    ``processing_by``: the receive time of the first poll that found it ``PROCESSING``.
    ``pending_until``: the send time of the last poll that found it unfinished.
    ``done_by``: the receive time of the answer that said it was done.
    ``service``: the server's ``inference_time``, when it gave one.
    """

    service_class: ServiceClass
    sent_at: float
    accepted_at: float
    done_by: float
    service: float | None = None
    pending_until: float | None = None
    queued_until: float | None = None
    processing_by: float | None = None


def _median(values: deque[float]) -> float:
    return statistics.median(values)


def _median_service(window: deque[tuple[float, int, float]]) -> float:
    return statistics.median(v for _, _, v in window)


class LatencyModel:
    """Service time per class, queue wait, spread; :attr:`learned` is set at the first lesson."""

    def __init__(self, *, window: int = WINDOW) -> None:
        self._window = window
        # Per class: (submit time, arrival number, service seconds), in submit order.
        self._service: dict[ServiceClass, deque[tuple[float, int, float]]] = {}
        self._seq = 0
        self._since: dict[ServiceClass, float] = {}  # submits before this no longer count
        self._queue: deque[float] = deque(maxlen=window)
        self._sigma: float | None = None  # the spread, recomputed lazily
        self.learned = anyio.Event()  # set once any service time is known
        self._moved = anyio.Event()
        self.observations = 0

    @property
    def known(self) -> bool:
        """Whether anything has been learned yet."""
        return bool(self._service)

    async def moved(self) -> None:
        """Wait until the latency of some class shifts (see :data:`SHIFT_RUN`)."""
        await self._moved.wait()

    # --- learning ----------------------------------------------------------------------

    def observe(self, obs: Observation) -> float | None:
        """Learn from one finished request; returns its estimated queue wait (or None)."""
        self.observations += 1
        service = obs.service
        if service is None or not service > 0:
            # No server figure: the whole bracketed latency stands in for the service time.
            low = obs.pending_until if obs.pending_until is not None else obs.accepted_at
            service = max(1e-6, (low + obs.done_by) / 2 - obs.sent_at)
            self._add_service(obs.service_class, service, submitted=obs.sent_at)
            return None
        self._add_service(obs.service_class, service, submitted=obs.sent_at)
        return self._add_queue(obs, service)

    def _add_service(self, service_class: ServiceClass, seconds: float, *, submitted: float) -> None:
        if submitted < self._since.get(service_class, -math.inf):
            return  # submitted before the latency last moved: it describes the old regime
        window = self._service.get(service_class)
        if window is None:
            window = self._service[service_class] = deque(maxlen=self._window)
        self._seq += 1
        window.append((submitted, self._seq, seconds))  # completion order: a full window drops the oldest
        if len(window) > SHIFT_RUN:
            # The latest submits all far off the median of the ones before: the latency moved.
            by_submit = sorted(window)
            values = [v for _, _, v in by_submit]
            recent = values[-SHIFT_RUN:]
            before = statistics.median(values[:-SHIFT_RUN])
            if all(v > SHIFT_UP * before for v in recent) or all(v * SHIFT_DOWN < before for v in recent):
                kept = by_submit[-SHIFT_RUN:]
                window.clear()
                window.extend(sorted(kept, key=lambda entry: entry[1]))
                self._since[service_class] = kept[0][0]
                # Jobs asleep on the old estimate must look again now.
                self._moved.set()
                self._moved = anyio.Event()
        self._sigma = None
        if not self.learned.is_set():
            self.learned.set()

    def _add_queue(self, obs: Observation, service: float) -> float | None:
        """Bracket the queue wait of ``obs``; record it when the bracket says enough."""
        low, high = 0.0, obs.done_by - service - obs.sent_at
        if obs.queued_until is not None:
            low = max(low, obs.queued_until - obs.accepted_at)
        if obs.processing_by is not None:
            high = min(high, obs.processing_by - obs.sent_at)
        if obs.pending_until is not None:
            low = max(low, obs.pending_until - service - obs.accepted_at)
        high = max(high, low, 0.0)
        middle = (low + high) / 2
        tight = high - low <= 0.25 * (service + high)
        if tight or low > 0:
            self._queue.append(middle)
            return middle
        # Found done at the first look: the wait was at most ``high``. That can only say
        # the estimate is too high, never that it is too low.
        if self._queue and self.queue_wait() > high:
            self._queue.append(high)
        return high

    # --- predictions -------------------------------------------------------------------

    def service_time(self, service_class: ServiceClass) -> float | None:
        """The expected service time of a class (seconds), or None when nothing is known."""
        window = self._service.get(service_class)
        if window:
            return _median_service(window)
        if not self._service:
            return None
        # Borrow from the class seen most often, scaled by the relative cost prior.
        seen, samples = max(self._service.items(), key=lambda item: len(item[1]))
        return _median_service(samples) * _cost(service_class) / _cost(seen)

    def queue_wait(self) -> float:
        """The expected wait in the server's queue (seconds), 0 before any sample."""
        return _median(self._queue) if self._queue else 0.0

    def spread(self) -> float:
        """The spread of service times around their class median: sigma of their logarithm.

        Read from the pooled windows (each value over its own class's median); 0.3 until
        there are a few samples.
        """
        if self._sigma is None:
            logs: list[float] = []
            for window in self._service.values():
                middle = _median_service(window)
                logs.extend(math.log(v / middle) for _, _, v in window if v > 0 and middle > 0)
            if len(logs) < 4:
                self._sigma = DEFAULT_SIGMA
            else:
                self._sigma = max(MIN_SIGMA, math.sqrt(statistics.fmean(x * x for x in logs)))
        return self._sigma

    def ratio(self, q: float) -> float:
        """The ``q`` quantile of one request's service time over its class median.

        Service times are taken as log-normal around the median with :meth:`spread`: a
        few samples then still give sensible tails (a 15-sample window's own 5th
        percentile is little more than its minimum).
        """
        return math.exp(_NORMAL.inv_cdf(q) * self.spread())


def relative_cost(mode: str, steps: int) -> float:
    """How long a (mode, steps) job takes relative to base mode at 40 steps (a prior)."""
    return RELATIVE_COST.get(mode, 1.0) * max(1, steps) / 40


def _cost(service_class: ServiceClass) -> float:
    return relative_cost(*service_class)
