"""How a run behaves: :class:`RunSettings`, checked once, recorded in the ledger."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from batchgen.control.breaker import GIVE_UP_AFTER
from batchgen.control.gate import RETRY_AFTER_CAP
from batchgen.engine.reconcile import DEFAULT_HISTORY_LAG, DEFAULT_PATIENCE
from batchgen.output.resume import DEFAULT_MARGIN, DEFAULT_RETENTION

__all__ = ["MIB", "RunSettings"]

MIB = 1024 * 1024


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
        found = []
        if self.concurrency is not None and self.concurrency < 1:
            found.append(f"concurrency {self.concurrency} must be at least 1 (or auto)")
        if self.rpm is not None and not (self.rpm > 0 and math.isfinite(self.rpm)):
            found.append(f"rpm {self.rpm} must be a number above 0")
        if self.max_attempts < 1:
            found.append(f"max attempts {self.max_attempts} must be at least 1")
        for name in (
            "retry_after_cap",
            "request_timeout",
            "download_timeout",
            "grace",
            "follow_patience",
            "history_lag",
            "reconcile_patience",
            "silence_limit",
        ):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                found.append(f"{name.replace('_', ' ')} {value} must be a number of seconds, 0 or more")
        rate = self.halt_failure_rate
        if rate is not None and not (0 <= rate < 100):
            found.append(f"halt on failure rate {rate} must be a percentage from 0 up to (not including) 100")
        if self.halt_min_jobs < 1:
            found.append(f"halt min jobs {self.halt_min_jobs} must be at least 1")
        if self.max_image_bytes < 1:
            found.append(f"max image bytes {self.max_image_bytes} must be at least 1")
        for name in ("price_per_image", "budget"):
            value = getattr(self, name)
            if value is not None and not (value >= 0 and math.isfinite(value)):
                found.append(f"{name.replace('_', ' ')} {value} must be a number of USD, 0 or more")
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
