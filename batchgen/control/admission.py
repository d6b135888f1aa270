"""How many jobs to keep in flight: Little's law on what the run has measured.

To run at a rate ``r`` when each job holds its place for ``T`` seconds, about ``r x T``
jobs must be in flight. The target is

    ceil(HEADROOM x rate x T) + 2, at most the cap

where

- ``rate`` is the lower of the submit rate the rate gate allows (the plan's limit,
  told or learned) and ``GROWTH`` x the completion rate measured over the last couple
  of job lifetimes. When no limit is known the second term alone lets in-flight grow
  (by HEADROOM x GROWTH, about 1.9x, each round) while throughput keeps up, and stop
  growing when the server's workers are what binds;
- ``T`` is the median time recent jobs held their place (submit to image saved), their
  wait in the server's queue counted only up to one service time: a queue that we
  made ourselves by submitting too much must not justify submitting more.

Before any job has finished, ``T`` is unknown: with a known rate the gate's pacing
bounds what goes out (``rate x t`` after ``t`` seconds) and two minutes of it are
admitted; with none, :data:`INITIAL` jobs go, and until throughput can be measured each
job that finishes lets one more in (slow start: the target doubles each round) unless
jobs are seen waiting in the server's queue (its workers are full already). The
target never shrinks before a full round of jobs has finished (the first completions
alone say little about throughput), and never exceeds
what the measured throughput finishes within a quarter of the retention window (a
job must not sit in the server's queue anywhere near an hour).

The target sizes an :class:`anyio.CapacityLimiter` (``limiter``) that the scheduler's
feeder acquires one token from per job (resized as the target moves).

Whatever the rate, the machine bounds it too: each job in flight holds up to
:data:`FILES_PER_JOB` open files (its connection, and while its image is saved, the
``.part`` file), and the process may open only so many (``ulimit -n``). The ``ceiling``
(:func:`file_ceiling`: what the open-file limit leaves after the files already open and
:data:`RESERVED_FILES` for the rest of the run) caps the target and a fixed
``--concurrency`` alike, so that a run under a low limit goes slower instead of failing
with "Too many open files" (exit 4) on every rerun.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

import anyio

from batchgen.output.resume import DEFAULT_RETENTION

__all__ = [
    "AUTO_CAP",
    "FILES_PER_JOB",
    "GROWTH",
    "HEADROOM",
    "INITIAL",
    "RESERVED_FILES",
    "Admission",
    "file_ceiling",
]

AUTO_CAP = 1000  # ``--concurrency auto``: the most jobs ever in flight
INITIAL = 16  # in flight before anything is measured, when no rate is known
HEADROOM = 1.5  # also covers jobs that wait at the submit door for their slot
GROWTH = 1.25
RETENTION_SHARE = 0.25
QUEUEING = 0.25  # a wait in the server's queue above this share of the service time ends slow start
_HOLD_WINDOW = 15
_MAX_SPAN = 600.0
FILES_PER_JOB = 2  # its connection, and while its image is saved, the .part file
# Open files beside the jobs': idle keep-alive connections (16, api/wire.py), name
# lookups, the request history, the report's thumbnail threads, a notification.
RESERVED_FILES = 32


def file_ceiling(limit: int, open_now: int) -> int:
    """The most jobs in flight that ``limit`` open files leave room for, ``open_now`` being
    open already (the ledger, the lock, the standard streams...); at least 1."""
    return max(1, (limit - open_now - RESERVED_FILES) // FILES_PER_JOB)


class Admission:
    """The in-flight target and the limiter it sizes.

    ``cap``: ``--concurrency`` (None: auto, at most :data:`AUTO_CAP`); ``ceiling``: what
    the open-file limit allows (:func:`file_ceiling`; None: no limit known), which lowers
    either.
    """

    def __init__(
        self, *, cap: int | None = None, retention: float = DEFAULT_RETENTION, ceiling: int | None = None
    ) -> None:
        self.cap = cap if cap is not None else AUTO_CAP
        if ceiling is not None:
            self.cap = max(1, min(self.cap, ceiling))
        self.fixed = cap is not None
        self.retention = retention
        self.target = min(self.cap, INITIAL)
        self.limiter = anyio.CapacityLimiter(self.target)
        self._holds: deque[float] = deque(maxlen=_HOLD_WINDOW)
        self._finished: deque[float] = deque()  # when recent jobs finished
        self._first_finish: float | None = None
        self._finished_count = 0
        self._queueing = False  # a finished job waited in the server's queue: slow start is over

    def hold_time(self) -> float | None:
        """The median time recent jobs held their place (queue beyond one service time excluded)."""
        return statistics.median(self._holds) if self._holds else None

    def throughput(self, now: float) -> float | None:
        """Jobs finished per second over the last couple of lifetimes (at most 10 minutes);
        None until that long has passed since the first one finished."""
        hold = self.hold_time()
        if hold is None or self._first_finish is None:
            return None
        span = min(max(2.0 * hold, 0.5), _MAX_SPAN)
        if now - self._first_finish < span:
            return None
        while self._finished and self._finished[0] < now - span:
            self._finished.popleft()
        return len(self._finished) / span

    def finished(
        self,
        now: float,
        *,
        hold: float | None = None,
        service: float | None = None,
        queue: float | None = None,
    ) -> None:
        """A job left the server at ``now`` (done or failed); ``hold``: its time in flight."""
        self._finished.append(now)
        self._finished_count += 1
        if self._first_finish is None:
            self._first_finish = now
        if hold is not None and hold > 0:
            excess = max(0.0, (queue or 0.0) - (service or 0.0)) if service is not None else 0.0
            self._holds.append(max(1e-3, hold - excess))
        if queue is not None and service is not None and queue > QUEUEING * service:
            self._queueing = True

    def make_room(self, jobs: int) -> None:
        """Let ``jobs`` (requests already on the server, resumed) in at once, above the target."""
        self.limiter.total_tokens = max(self.target, jobs, 1)

    def update(self, now: float, *, submit_rate: float | None) -> int:
        """Recompute the target from the gate's submit rate (per second, None if unknown)."""
        target = self._compute(now, submit_rate)
        if self.throughput(now) is None:
            target = max(target, self.target)  # not enough seen yet to shrink on
        self.target = max(1, min(self.cap, target))
        if self.limiter.total_tokens != self.target:
            self.limiter.total_tokens = self.target
        return self.target

    def _compute(self, now: float, submit_rate: float | None) -> int:
        hold = self.hold_time()
        mu = self.throughput(now)
        if submit_rate is None and mu is None:
            # Nothing bounds the rate and throughput is not measurable yet: slow start,
            # one more job in flight per job finished (doubling each round), until the
            # server is seen queueing our jobs (then more in flight only waits longer).
            if self._queueing:
                return self.target
            return INITIAL + self._finished_count
        if hold is None:
            assert submit_rate is not None
            # The pace bounds what goes out; admit what it lets through in two minutes.
            return max(INITIAL, math.ceil(submit_rate * 120.0))
        rate = math.inf if submit_rate is None else submit_rate
        if mu is not None:
            rate = min(rate, GROWTH * mu)
        target = math.ceil(HEADROOM * rate * hold) + 2
        if mu is not None:
            target = min(target, max(1, math.ceil(mu * self.retention * RETENTION_SHARE)))
        return target
