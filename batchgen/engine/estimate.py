"""What a batch will cost and how long it will take, before it starts.

The price is per accepted request, from a small table of list prices (USD per image)
that ``--price-per-image`` overrides. The time is the longer of two bounds: the submit
rate (the plan's ``--rpm``, else the Pro plan's 50) and one job's expected latency
(Bria 3.2 base mode takes about 22 s; other modes and step counts scale it, see
:func:`batchgen.control.latency.relative_cost`). Both are estimates: the run measures the real
figures and the request history prices each request afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from batchgen.control.latency import relative_cost
from batchgen.manifest.job import Job
from batchgen.outcome.figures import format_duration

__all__ = ["ASSUMED_RPM", "BASE_SECONDS", "PRICES", "Estimate", "estimate", "price_of"]

# List prices, USD per image (Segmind's model page, 2026-11).
PRICES: dict[str, float] = {"bria-text-to-image": 0.04}
ASSUMED_RPM = 50.0  # the Pro plan's limit, when --rpm is not given
BASE_SECONDS = 22.0  # Bria 3.2, mode base, 40 steps (Segmind's documented typical latency)


def price_of(model: str, override: float | None = None) -> float | None:
    """USD per image for ``model``: the override, else the table, else None (unknown)."""
    return override if override is not None else PRICES.get(model)


@dataclass(frozen=True, slots=True)
class Estimate:
    """Jobs to submit, their cost (None when a model's price is unknown) and the time."""

    jobs: int
    cost: float | None
    seconds: float
    rpm: float
    rpm_assumed: bool

    def describe(self) -> str:
        """``"1,000 jobs: about 40.00 USD; at 50 rpm about 20m 22s"``."""
        cost = "cost unknown (set --price-per-image)" if self.cost is None else f"about {self.cost:,.2f} USD"
        rpm = f"{self.rpm:g} rpm" + (" (the Pro plan's limit; set --rpm)" if self.rpm_assumed else "")
        return f"{self.jobs:,} jobs to submit: {cost}; at {rpm} about {format_duration(self.seconds)}"


def estimate(jobs: Iterable[Job], *, rpm: float | None, price_per_image: float | None) -> Estimate:
    """The estimate for submitting every job of ``jobs`` once."""
    count = 0
    cost: float | None = 0.0
    longest = 0.0
    for job in jobs:
        count += 1
        price = price_of(job.model, price_per_image)
        cost = None if cost is None or price is None else cost + price
        longest = max(longest, BASE_SECONDS * relative_cost(job.params.mode, job.params.steps_num))
    rate = rpm if rpm is not None else ASSUMED_RPM
    seconds = count * 60 / rate + longest if count else 0.0
    return Estimate(jobs=count, cost=cost, seconds=seconds, rpm=rate, rpm_assumed=rpm is None)
