"""Everything one emulator instance remembers: settings, queue, limits, counters, request log."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from batchgen.emulator.config import RUNTIME_SETTINGS, EmulatorConfig
from batchgen.emulator.faults import FaultInjector
from batchgen.emulator.history import RequestHistory
from batchgen.emulator.images import ImageCache
from batchgen.emulator.jobs import JobQueue
from batchgen.emulator.ratelimit import SlidingWindow
from batchgen.emulator.requestlog import RequestLog

__all__ = ["EmulatorState", "Stats"]


@dataclass(slots=True)
class Stats:
    """Counters of what the emulator answered (jobs per state are computed when read)."""

    submits_accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    status_polls: int = 0
    result_fetches: int = 0
    image_downloads: int = 0
    history_requests: int = 0  # listings and single rows of the request history served


class EmulatorState:
    """The mutable state behind one app built by ``create_app``."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._initial = config
        self._start(config)

    def reset(self) -> None:
        """Back to how it started: its first settings, full credits, no job, counter, request or row.

        The seeded draws (inference times, faults, stalls) start again from their seeds,
        so a reset emulator answers as a freshly started one would.
        """
        self._start(self._initial)

    def _start(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock = config.clock
        self.credits = config.credits
        self.queue = JobQueue(workers=config.workers, time_scale=config.time_scale, seed=config.seed)
        self.limiter = SlidingWindow()
        self.faults = FaultInjector(seed=config.fault_seed)
        self.images = ImageCache(image_format=config.image_format, long_side=config.image_size)
        self.stats = Stats()
        self.requests = RequestLog()
        self.history = RequestHistory(wall_origin=time.time(), clock_origin=self.clock())
        self.blocked_terms = tuple(term.lower() for term in config.blocked_terms if term)

    def blocked_term(self, prompt: str) -> str | None:
        """The first blocked term the prompt contains (case-insensitive), if any."""
        lowered = prompt.lower()
        return next((term for term in self.blocked_terms if term in lowered), None)

    def stats_body(self) -> dict[str, Any]:
        """The JSON of ``GET /_emulator/stats``."""
        now = self.clock()
        return {
            "submits_accepted": self.stats.submits_accepted,
            "rejected": dict(sorted(self.stats.rejected.items())),
            "status_polls": self.stats.status_polls,
            "result_fetches": self.stats.result_fetches,
            "image_downloads": self.stats.image_downloads,
            "history_requests": self.stats.history_requests,
            "jobs": self.queue.counts(now=now, ttl=self.config.ttl),
            "peak_queue_depth": self.queue.peak_queue_depth,
            "duplicate_submits": self.queue.duplicate_submits,
            "clock": now,
        }

    def runtime_settings(self) -> dict[str, Any]:
        """The settings ``POST /_emulator/config`` may change, with credits as what is left."""
        values = {name: getattr(self.config, name) for name in RUNTIME_SETTINGS}
        values["credits"] = self.credits
        return values

    def update(self, changes: dict[str, Any]) -> list[str]:
        """Apply runtime changes; returns problems (and changes nothing) when any is invalid."""
        unknown = sorted(set(changes) - set(RUNTIME_SETTINGS))
        if unknown:
            allowed = ", ".join(RUNTIME_SETTINGS)
            return [f"{name}: cannot be changed at run time (allowed: {allowed})" for name in unknown]
        problems = [_type_problem(name, value) for name, value in changes.items()]
        found = [p for p in problems if p]
        if found:
            return found
        try:
            config = dataclasses.replace(self.config, **changes)
        except ValueError as exc:
            return str(exc).split("; ")
        self.config = config
        if "credits" in changes:
            self.credits = changes["credits"]
        # Schedules already fixed stay as they are: these apply to later submits.
        self.queue.time_scale = config.time_scale
        if config.workers != self.queue.workers:
            self.queue.resize(config.workers, now=self.clock())
        return []


# The JSON type of each runtime setting that is not a plain number.
_KINDS: dict[str, str] = {
    "rpm": "integer or null",
    "credits": "integer or null",
    "workers": "integer",
    "image_fault": "string",
    "retry_after": "string or null",
    "history": "boolean",
}


def _type_problem(name: str, value: Any) -> str | None:
    """A problem when ``value`` has the wrong JSON type for setting ``name``."""
    kind = _KINDS.get(name, "number")
    if value is None and kind.endswith(" or null"):
        return None
    if kind == "boolean":
        fits = isinstance(value, bool)
    elif kind.startswith("string"):
        fits = isinstance(value, str)
    elif kind.startswith("integer"):
        fits = isinstance(value, int) and not isinstance(value, bool)
    else:  # JSON true/false are not numbers, though Python's bool is an int
        fits = isinstance(value, (int, float)) and not isinstance(value, bool)
    if fits:
        return None
    article = "an" if kind.startswith("integer") else "a"
    return f"{name}: {value!r} is not {article} {kind}"
