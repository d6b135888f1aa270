"""What a run shows while it goes: live counts, a tqdm bar on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import anyio

from batchgen.outcome.figures import format_duration
from batchgen.outcome.summary import Summary

__all__ = ["Counts", "Progress"]

log = logging.getLogger("batchgen")


@dataclass(slots=True)
class Counts:
    """A live view of a run for the progress display: the summary's tallies, and the jobs
    in flight (submitted to the API and not finished: the one figure the summary lacks)."""

    summary: Summary
    in_flight: int = 0
    doubts: Collection[str] = ()  # keys of the jobs whose submit is in doubt (the steps' live set)

    @property
    def in_doubt(self) -> int:
        """Jobs whose submit may have been paid, waiting for the request history to say."""
        return len(self.doubts)

    @property
    def total(self) -> int:
        """Jobs of the manifest."""
        return self.summary.total

    @property
    def done(self) -> int:
        """Jobs whose image exists: completed now or skipped as complete."""
        return self.summary.done

    @property
    def failed(self) -> int:
        """Jobs failed in this run or skipped as failed permanently before."""
        return self.summary.failed + self.summary.skipped_failed

    @property
    def not_run(self) -> int:
        """Jobs neither done nor failed (yet), nor left in doubt (not known whether paid)."""
        return self.total - self.done - self.failed - self.summary.uncertain


class Progress:
    """A tqdm bar on a terminal; otherwise a plain log line every ``interval`` seconds."""

    def __init__(self, counts: Counts, rate_limited: Callable[[], int], *, tty: bool, interval: float):
        self.counts = counts
        self._rate_limited = rate_limited
        self.tty = tty
        self.interval = interval
        self._bar: Any = None
        self._shown = 0
        self._started = time.monotonic()
        self._initial = 0
        self._begun = False

    def _begin(self) -> None:
        # The first update comes once the scheduler has sorted the jobs (skipped ones are
        # already done), so the bar and the ETA start from there.
        self._started = time.monotonic()
        self._initial = self.counts.done + self.counts.failed
        self._shown = self._initial
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.counts.total,
                initial=self._initial,
                unit="img",
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def update(self) -> None:
        """Refresh the bar (cheap; tqdm throttles redraws)."""
        if not self._begun:
            self._begun = True
            self._begin()
        if self._bar is None:
            return
        finished = self.counts.done + self.counts.failed
        self._bar.set_postfix_str(
            f"in flight {self.counts.in_flight},{self._doubts('in doubt {}')} failed {self.counts.failed}, "
            f"429s {self._rate_limited()}",
            refresh=False,
        )
        if finished != self._shown:
            self._bar.update(finished - self._shown)
            self._shown = finished

    def line(self) -> str:
        """One progress line: done/total, in flight, failed, 429s, ETA."""
        c = self.counts
        finished = c.done + c.failed
        elapsed = time.monotonic() - self._started
        rate = (finished - self._initial) / elapsed if elapsed > 0 else 0.0
        remaining = c.total - finished
        eta = format_duration(remaining / rate) if rate > 0 else "?"
        return (
            f"progress: {c.done}/{c.total} done, {c.in_flight} in flight,{self._doubts('{} in doubt')} "
            f"{c.failed} failed, {self._rate_limited()} 429s, ETA {eta}"
        )

    def _doubts(self, shape: str) -> str:
        """The jobs in doubt in ``shape`` (`` N in doubt,``) while submits wait for the request
        history; nothing otherwise."""
        return f" {shape.format(self.counts.in_doubt)}," if self.counts.in_doubt else ""

    def fields(self) -> dict[str, int]:
        """The progress line's figures, for a JSON log line."""
        c = self.counts
        return {
            "done": c.done,
            "total": c.total,
            "in_flight": c.in_flight,
            "in_doubt": c.in_doubt,
            "failed": c.failed,
            "rate_limited": self._rate_limited(),
        }

    async def tick(self) -> None:
        """Log a line every ``interval`` seconds when there is no bar (cron, CI, pipes)."""
        if self.tty:
            return
        while True:
            await anyio.sleep(self.interval)
            log.info("%s", self.line(), extra={"fields": {"progress": self.fields()}})

    def close(self) -> None:
        if self._bar is not None:
            self.update()
            self._bar.close()
            self._bar = None
