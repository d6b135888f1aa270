"""What a batch will cost and how long it will take, before it starts.

The price is per accepted request, from a small table of list prices (USD per image)
that ``--price-per-image`` overrides. The time is the rate's share plus one job's
latency: the requests that count against the plan's rate limit (``--rpm``, else the Pro
plan's 50), spread at that rate, then the last job's expected latency (Bria 3.2 base
mode takes about 22 s; other modes and step counts scale it, see
:func:`batchgen.control.latency.relative_cost`).

Which requests count is known only for submits: Segmind does not say whether status
polls and result fetches count against the limit. So the estimate counts only submits,
one per job, unless it is told (``--rpm-counts-polls``) or an earlier run in the same
folder learned it from a 429 on a poll; then each job counts as :data:`COUNTED_PER_IMAGE`
requests (its submit, one status poll and its result: what a run that knows the latency
spends). :meth:`Estimate.describe` says which it counted. Both figures are estimates: the
run measures the real ones and each request's price comes from its answer or the request
history afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from batchgen.control.latency import relative_cost
from batchgen.manifest.job import Job
from batchgen.outcome.figures import format_duration

__all__ = [
    "ASSUMED_RPM",
    "BASE_SECONDS",
    "COUNTED_PER_IMAGE",
    "PRICES",
    "Estimate",
    "PollsCount",
    "estimate",
    "price_of",
]

# List prices, USD per image (Segmind's model page, 2026-11).
PRICES: dict[str, float] = {"bria-text-to-image": 0.04}
ASSUMED_RPM = 50.0  # the Pro plan's limit, when --rpm is not given
BASE_SECONDS = 22.0  # Bria 3.2, mode base, 40 steps (Segmind's documented typical latency)
# Requests per image when every request counts: the submit, one status poll (a run that
# knows the latency polls about once), the result fetch. Image downloads go to a CDN.
COUNTED_PER_IMAGE = 3

# Whether status polls count against the rate: not known (only submits are counted),
# told (--rpm-counts-polls), or learned by an earlier run of the same folder (a 429 on a poll).
PollsCount = Literal["unknown", "told", "learned"]


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
    polls: PollsCount = "unknown"
    latency: float = 0.0  # seconds of the slowest job, after the last submit

    @property
    def counted(self) -> int:
        """Requests counted against the rate limit: one per job, or three when polls count."""
        return self.jobs * (1 if self.polls == "unknown" else COUNTED_PER_IMAGE)

    def describe(self) -> str:
        """``"100 jobs to submit: about 4.00 USD; at 600 rpm about 32.0s: 10.0s for 100 submits
        (the only requests known to count), then 22.0s for the last job"``."""
        cost = "cost unknown (set --price-per-image)" if self.cost is None else f"about {self.cost:,.2f} USD"
        rpm = f"{self.rpm:g} rpm" + (" (the Pro plan's limit; set --rpm)" if self.rpm_assumed else "")
        if self.polls == "unknown":
            counted = f"{self.counted:,} submits (the only requests known to count)"
        else:
            why = "as told" if self.polls == "told" else "as an earlier run learned"
            counted = f"{self.counted:,} requests (polls count, {why}: a submit, a poll and a result per job)"
        return (
            f"{self.jobs:,} jobs to submit: {cost}; at {rpm} about {format_duration(self.seconds)}:"
            f" {format_duration(self.seconds - self.latency)} for {counted},"
            f" then {format_duration(self.latency)} for the last job"
        )


def estimate(
    jobs: Iterable[Job], *, rpm: float | None, price_per_image: float | None, polls: PollsCount = "unknown"
) -> Estimate:
    """The estimate for submitting every job of ``jobs`` once.

    ``polls`` says whether status polls are known to count against ``rpm`` (see the
    module docstring): only then are they part of the time.
    """
    count = 0
    cost: float | None = 0.0
    longest = 0.0
    for job in jobs:
        count += 1
        price = price_of(job.model, price_per_image)
        cost = None if cost is None or price is None else cost + price
        longest = max(longest, BASE_SECONDS * relative_cost(job.params.mode, job.params.steps_num))
    rate = rpm if rpm is not None else ASSUMED_RPM
    per_job = 1 if polls == "unknown" else COUNTED_PER_IMAGE
    seconds = count * per_job * 60 / rate + longest if count else 0.0
    return Estimate(
        jobs=count,
        cost=cost,
        seconds=seconds,
        rpm=rate,
        rpm_assumed=rpm is None,
        polls=polls,
        latency=longest if count else 0.0,
    )
