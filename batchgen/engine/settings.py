"""How a run behaves: :class:`RunSettings`, checked once, recorded in the ledger.

:data:`LIMITS` is the one table of what each number a user sets may be (the options of
``batchgen run``, by their setting's name): a value outside it is refused before
anything is written or sent, with a sentence that says the range and, where the bound is
not obvious, why (``--rpm 1e-9`` would plan a run of years; ``--price-per-image 1e308``
made the estimate infinite). :meth:`RunSettings.problems` applies it to the settings,
:func:`limit_problems` to the options that are not settings (``max_jobs``,
``time_scale``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchgen.control.breaker import GIVE_UP_AFTER
from batchgen.control.gate import RETRY_AFTER_CAP
from batchgen.engine.reconcile import DEFAULT_HISTORY_LAG, DEFAULT_PATIENCE
from batchgen.output.resume import DEFAULT_MARGIN, DEFAULT_RETENTION

__all__ = ["LIMITS", "MIB", "RPM_MIN", "Limit", "RunSettings", "limit_problems"]

MIB = 1024 * 1024
RPM_MIN = 0.1  # requests a minute: one every ten minutes
_DAY = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Limit:
    """Where a number a user sets must lie: from ``low`` to ``high``, each excluded if
    ``above`` / ``below``; a whole number if ``whole``; never NaN or infinite."""

    label: str  # as the sentence names it: "rpm", "grace"
    unit: str  # what the number counts, plural ("seconds", "USD"), or ""
    low: float
    high: float = math.inf
    above: bool = False
    below: bool = False
    whole: bool = False
    why: str = ""  # why the bound, when it is not obvious

    def problem(self, value: float) -> str | None:
        """The sentence refusing ``value``, or None if it lies within."""
        low_ok = value > self.low if self.above else value >= self.low
        high_ok = value < self.high if self.below else value <= self.high
        if low_ok and high_ok and math.isfinite(value) and (not self.whole or value == int(value)):
            return None
        number = "a whole number" if self.whole else "a number"
        of = f" of {self.unit}," if self.unit else ""
        why = f" ({self.why})" if self.why else ""
        return f"{self.label} {value} must be {number}{of} {self._span()}{why}"

    def _span(self) -> str:
        low = _show(self.low)
        if self.high == math.inf:
            return f"above {low}" if self.above else f"at least {low}"
        high = _show(self.high)
        if self.above:
            return f"above {low} and {'below' if self.below else 'at most'} {high}"
        return f"from {low} {'up to (not including)' if self.below else 'to'} {high}"


def _show(bound: float) -> str:
    """A bound as the sentence shows it: 2,592,000 rather than 2.592e+06."""
    return f"{int(bound):,}" if bound == int(bound) else f"{bound:g}"


LIMITS: dict[str, Limit] = {
    "concurrency": Limit("concurrency", "jobs", 1, whole=True),
    "rpm": Limit(
        "rpm",
        "requests a minute",
        RPM_MIN,
        why="one every ten minutes; a slower pace plans a run of weeks",
    ),
    "grace": Limit(
        "grace",
        "seconds",
        0,
        _DAY,
        why="a day; a job in flight is finished or expired within the server's hour of retention",
    ),
    "request_timeout": Limit(
        "request timeout",
        "seconds",
        0,
        3600,
        above=True,
        why="an hour; a request unanswered that long will not be answered",
    ),
    "history_lag": Limit(
        "history lag",
        "seconds",
        0,
        30 * _DAY,
        why="30 days; no request history is read further back",
    ),
    "price_per_image": Limit(
        "price per image",
        "USD",
        0,
        100,
        why="no image model costs more; bria-text-to-image costs 0.04",
    ),
    "budget": Limit("budget", "USD", 0),
    "halt_failure_rate": Limit("halt on failure rate", "percent", 0, 100, below=True),
    "halt_min_jobs": Limit("halt min jobs", "jobs", 1, whole=True),
    "max_jobs": Limit("max jobs", "jobs", 1, whole=True),
    "time_scale": Limit(
        "time scale",
        "",
        0,
        10,
        above=True,
        why="1 is Segmind's own speed; the built-in emulator is for quick runs",
    ),
}


def limit_problems(values: Mapping[str, float | None]) -> list[str]:
    """The sentences refusing each of ``values`` (name in :data:`LIMITS` -> number, None:
    not set) that lies outside its limit, in the table's order."""
    found = []
    for name, limit in LIMITS.items():
        value = values.get(name)
        if value is not None:
            problem = limit.problem(value)
            if problem is not None:
                found.append(problem)
    return found


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How a run behaves. Times are seconds. Nothing here describes the server's speed:
    the run measures latency, worker capacity and rate limits itself.

    ``concurrency`` caps the jobs in flight (None: ``auto``, see
    :mod:`batchgen.control.admission`); ``rpm`` is the plan's limit in requests per minute if
    known (None: found from the server's 429s); ``rpm_counts_polls`` says status polls
    and result fetches count against it too (otherwise learned from a 429 on one).
    """

    concurrency: int | None = None
    rpm: float | None = None
    rpm_counts_polls: bool = False
    retry_failed: bool = False
    max_attempts: int = 6
    retry_after_cap: float = RETRY_AFTER_CAP
    request_timeout: float = 30.0  # one API request, whatever the HTTP client's own timeouts
    download_timeout: float = 120.0  # one image download, start to end
    max_image_bytes: int = 64 * MIB
    grace: float = 60.0  # after the first Ctrl-C / SIGTERM, jobs in flight get this long
    follow_patience: float = 180.0  # failed polls in a row of a paid request, before its follow gives up
    history_lag: float = DEFAULT_HISTORY_LAG  # a request missing from the history is proof only after this
    reconcile_patience: float = DEFAULT_PATIENCE  # how long a run looks for one submit in doubt
    resubmit_uncertain: bool = False  # the user accepts paying twice for submits in doubt
    silence_limit: float = GIVE_UP_AFTER  # no submit answered this long: submit nothing more
    retention: float = DEFAULT_RETENTION
    margin: float = DEFAULT_MARGIN
    seed: int | None = None  # seeds the retry jitter
    price_per_image: float | None = None  # USD, for --budget and the estimates
    budget: float | None = None  # USD this run may spend: submits stop before passing it
    halt_failure_rate: float | None = None  # percent: stop submitting when more of the finished failed
    halt_min_jobs: int = 20  # ... once at least this many jobs finished in this run
    embed: bool = True
    report: bool = True

    def problems(self) -> list[str]:
        """Every setting out of range, as sentences."""
        found = limit_problems({name: getattr(self, name) for name in LIMITS if hasattr(self, name)})
        if self.max_attempts < 1:
            found.append(f"max attempts {self.max_attempts} must be at least 1")
        for name in (
            "retry_after_cap",
            "download_timeout",
            "follow_patience",
            "reconcile_patience",
            "silence_limit",
        ):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                found.append(f"{name.replace('_', ' ')} {value} must be a number of seconds, 0 or more")
        if self.max_image_bytes < 1:
            found.append(f"max image bytes {self.max_image_bytes} must be at least 1")
        return found

    def to_json(self) -> dict[str, Any]:
        """The settings for the ledger's ``run_started`` line."""
        return {
            "concurrency": self.concurrency if self.concurrency is not None else "auto",
            "rpm": self.rpm,
            "retry_failed": self.retry_failed,
            "rpm_counts_polls": self.rpm_counts_polls,
            "history_lag": self.history_lag,
            "resubmit_uncertain": self.resubmit_uncertain,
            "budget": self.budget,
            "price_per_image": self.price_per_image,
            "halt_failure_rate": self.halt_failure_rate,
            "halt_min_jobs": self.halt_min_jobs,
            "embed": self.embed,
            "report": self.report,
        }
