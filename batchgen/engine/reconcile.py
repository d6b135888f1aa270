"""Submits in doubt, settled by the account's request history: found, absent, or not known.

A submit is *in doubt* when it may have reached the server and no usable answer came
back (:class:`~batchgen.errors.SubmitUncertain`), or when a killed run left its
``submitting`` line without an answer. It may have been accepted and paid for, so it is
never sent again blindly: :meth:`Reconciler.resolve` reads the request history (the same
body matching a rerun uses, :func:`batchgen.api.history.match`) on a bounded schedule of
its own, while other jobs go on, until one of:

- :class:`Found`: the history holds a request with that body that no job holds: the job
  adopts it (it is polled, not paid for again);
- :class:`Absent`: a read made at least ``lag`` seconds after the intent holds no such
  request: only now may the job be submitted again. Segmind does not say how soon a new
  request shows in the history (its usage dashboard is said to lag up to two hours), so a
  missing request proves nothing before that;
- :class:`Unresolved`: ``patience`` seconds passed without either, or the history cannot
  be read: the job is reported as "not known whether paid" and left for a rerun.

Reads are shared: one listing per model answers every submit in doubt at once, and
waiters that asked for a read made after their own look reuse it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio

from batchgen.api.history import History, HistoryRow, HistoryUnavailable, Intent, match

__all__ = [
    "DEFAULT_HISTORY_LAG",
    "DEFAULT_PATIENCE",
    "Absent",
    "Found",
    "Reconciler",
    "Resolution",
    "Unresolved",
]

log = logging.getLogger("batchgen")

DEFAULT_HISTORY_LAG = 7200.0  # seconds: the only lag figure Segmind gives (its usage dashboard)
DEFAULT_PATIENCE = 180.0  # seconds a run keeps looking for one submit in doubt
# When to look, in seconds after the doubt began: the history may need a moment to
# show a request the server took a moment ago, then looks thin out.
_LOOKS = (1.0, 3.0, 7.0, 15.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0)
_LOOK_EVERY = 30.0  # after the schedule, while patience lasts


@dataclass(frozen=True, slots=True)
class Found:
    """The history holds the request: adopt it."""

    row: HistoryRow


@dataclass(frozen=True, slots=True)
class Absent:
    """Read past the lag window, the history holds no such request: it was never accepted."""


@dataclass(frozen=True, slots=True)
class Unresolved:
    """Not known whether the request was accepted (``why``); a rerun may tell."""

    why: str


Resolution = Found | Absent | Unresolved


@dataclass(slots=True, eq=False)
class _Doubt:
    intent: Intent
    model: str
    outcome: Resolution | None = None
    settled: anyio.Event = field(default_factory=anyio.Event)
    read: bool = False  # a read of the history answered while it was in doubt
    failure: str | None = None  # why the last read that did not answer failed


def look_times(*, start: float, wall: float, intent_at: float, lag: float) -> list[float]:
    """When to read the history for a submit in doubt, on the run's clock: the schedule
    after the intent (at wall time ``intent_at``; looks already due collapse into one at
    ``start``, the run's time now, whose wall time is ``wall``), and one right after the
    lag window, when absence becomes proof."""

    def run_time(at: float) -> float:
        return start + (at - wall)

    scheduled = {max(start, run_time(intent_at + offset)) for offset in _LOOKS}
    return sorted(scheduled | {max(start, run_time(intent_at + lag) + 0.5)})


def _clock_text(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


class Reconciler:
    """Settles the submits in doubt of one run against one request history (None: none to read).

    ``known`` gives every request id a job already holds (the ledger's and this run's):
    such rows belong to other submits. Times: ``lag`` and intents in wall-clock seconds
    (``wall_clock``, the ledger's clock), the schedule on the run's clock.
    """

    def __init__(
        self,
        history: History | None,
        *,
        known: Callable[[], Collection[str]],
        lag: float = DEFAULT_HISTORY_LAG,
        patience: float = DEFAULT_PATIENCE,
        wall_clock: Callable[[], float],
    ) -> None:
        self.history = history
        self._known = known
        self.lag = lag
        self.patience = patience
        self._wall_clock = wall_clock
        self._doubts: dict[str, _Doubt] = {}  # job key -> its submit in doubt
        self._lock = anyio.Lock()
        self._read_at: dict[str, float] = {}  # model -> run time the last read of it began
        self._unavailable: str | None = None  # why the history cannot be read in this run
        self.reads = 0
        self.asked: list[Intent] = []  # every submit in doubt this run looked for
        self.failing: str | None = None  # why the last read did not answer, if it did not

    @property
    def pending(self) -> int:
        """Submits in doubt being looked for now."""
        return len(self._doubts)

    async def resolve(self, key: str, body: Mapping[str, Any], *, intent_at: float, model: str) -> Resolution:
        """Settle the submit of ``body`` for job ``key`` whose intent was written at wall time
        ``intent_at``: look in the history on the schedule until it is found, proven absent,
        or ``patience`` runs out."""
        doubt = _Doubt(Intent(key, body, intent_at), model)
        self._doubts[key] = doubt
        self.asked.append(doubt.intent)
        start = anyio.current_time()
        deadline = start + self.patience
        looks = deque(look_times(start=start, wall=self._wall_clock(), intent_at=intent_at, lag=self.lag))
        reads = 0
        try:
            while doubt.outcome is None:
                if self.history is None or self._unavailable is not None:
                    why = self._unavailable or "no request history to read"
                    return Unresolved(f"the request history cannot be read ({why})")
                now = anyio.current_time()
                when = looks.popleft() if looks else now + _LOOK_EVERY
                if reads and when > deadline:
                    break
                with anyio.move_on_after(max(0.0, when - now)):
                    await doubt.settled.wait()
                if doubt.outcome is None:
                    began = anyio.current_time()
                    await self._read(model, fresh_after=when)
                    reads += 1
                    # A look due before this read began is served by it: not made again.
                    while looks and looks[0] <= began:
                        looks.popleft()
            if doubt.outcome is not None:
                return doubt.outcome
            return Unresolved(self._why_unresolved(doubt))
        finally:
            del self._doubts[key]

    def _why_unresolved(self, doubt: _Doubt) -> str:
        if self._unavailable is not None:
            return f"the request history cannot be read ({self._unavailable})"
        if not doubt.read:
            return f"the request history did not answer for {self.patience:.0f} s ({doubt.failure})"
        intent_at = doubt.intent.at
        return (
            f"not in the request history after {self.patience:.0f} s; the history may lag up to "
            f"{self.lag:.0f} s, so a rerun after {_clock_text(intent_at + self.lag)} decides"
        )

    async def _read(self, model: str, *, fresh_after: float) -> None:
        """Read the history of ``model`` once for every submit in doubt of it, unless a read
        that began at or after ``fresh_after`` already did."""
        async with self._lock:
            if self._read_at.get(model, -1.0) >= fresh_after or self.history is None:
                return
            waiting = [d for d in self._doubts.values() if d.model == model and d.outcome is None]
            if not waiting:
                return
            self._read_at[model] = anyio.current_time()
            began = self._wall_clock()
            self.reads += 1
            try:
                # One try: the schedule is the retry, and a silent history must not hold
                # a look for minutes.
                rows = await self.history.rows(
                    since=min(d.intent.at for d in waiting), until=began, model=model, tries=1
                )
            except HistoryUnavailable as exc:
                log.debug("request history not read: %s", exc)
                self.failing = str(exc)
                for doubt in waiting:
                    doubt.failure = str(exc)
                if exc.permanent:
                    self._unavailable = str(exc)
                    for doubt in waiting:
                        doubt.settled.set()
                return
            self.failing = None
            found = match([d.intent for d in waiting], rows, known=set(self._known()))
            for doubt in waiting:
                doubt.read = True
                row = found.get(doubt.intent.key)
                if row is not None:
                    doubt.outcome = Found(row)
                elif began >= doubt.intent.at + self.lag:
                    doubt.outcome = Absent()
                else:
                    continue
                doubt.settled.set()
