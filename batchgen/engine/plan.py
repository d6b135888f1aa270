"""Before anything is sent: each job sorted by the resume rule, and what the rest will cost.

:func:`plan` applies :func:`batchgen.output.resume.decide` to every job of the run and
counts the skipped ones in the summary; :func:`announce` logs the estimate of what is to
be submitted and refuses a run over ``--budget`` (exit 2, nothing sent).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from batchgen.control.flight import Flight
from batchgen.engine.estimate import PollsCount, estimate
from batchgen.engine.settings import RunSettings
from batchgen.errors import UsageError
from batchgen.manifest.job import Job
from batchgen.outcome.summary import Summary
from batchgen.output.layout import IMAGES_DIR
from batchgen.output.replay import LedgerState
from batchgen.output.resume import Poll, Reconcile, Skip, decide

__all__ = ["Plan", "announce", "plan", "polls_known"]

log = logging.getLogger("batchgen")


@dataclass(slots=True)
class Plan:
    """What a run must do with the jobs not already done."""

    resumed: list[Flight] = field(default_factory=list)  # requests on the server: poll them
    new: list[Flight] = field(default_factory=list)  # to submit
    in_transit: list[tuple[Flight, Reconcile]] = field(default_factory=list)  # look for in the history first
    resubmitted: set[str] = field(default_factory=set)  # keys of jobs submitted before
    model_names: set[str] = field(default_factory=set)  # Segmind models of the run's jobs
    polls: PollsCount = "unknown"  # whether status polls are known to count against the rate

    def to_submit(self) -> list[Job]:
        """Every job that may be submitted (those in transit too, if the history lacks them)."""
        return [f.job for f in self.new] + [f.job for f, _ in self.in_transit]


def plan(
    jobs: Iterable[Job],
    state: LedgerState,
    *,
    out_dir: Path,
    settings: RunSettings,
    summary: Summary,
    now: float,
    wall: float,
) -> Plan:
    """Sort the jobs by the resume rule; count the skipped ones in ``summary``.

    ``now`` is the run's clock and ``wall`` the wall clock (the ledger's): a resumed
    request's age comes from the ledger. Checking finished jobs hashes their files: call
    it off the event loop.
    """
    result = Plan(polls=polls_known(settings, state))
    for job in jobs:
        result.model_names.add(job.model)
        action = decide(
            state.get(job.key),
            out_dir=out_dir,
            now=wall,
            retention=settings.retention,
            margin=settings.margin,
            retry_failed=settings.retry_failed,
        )
        if isinstance(action, Skip):
            if action.reason == "completed":
                summary.skipped += 1
            else:
                summary.skipped_failed += 1
            continue
        flight = Flight(job)
        if isinstance(action, Poll):
            age = max(0.0, wall - action.submitted_at)
            flight.resume(action.request_id, accepted_at=now - age)
            result.resumed.append(flight)
        elif isinstance(action, Reconcile):
            result.in_transit.append((flight, action))
        else:
            if action.reason != "new":
                result.resubmitted.add(job.key)
            if action.reason == "file-outside":
                summary.warnings.append(
                    f"job {job.short_key}: its image in the ledger resolves outside"
                    f" {out_dir / IMAGES_DIR}; not counted as done, made again"
                )
            result.new.append(flight)
    return result


def polls_known(settings: RunSettings, state: LedgerState) -> PollsCount:
    """Whether status polls count against the rate: told (``--rpm-counts-polls``), learned by
    an earlier run of this folder (a 429 on a poll), or not known."""
    if settings.rpm_counts_polls:
        return "told"
    if any(run.counts and run.counts.get("polls_counted") is True for run in state.runs):
        return "learned"
    return "unknown"


def announce(
    jobs: list[Job], settings: RunSettings, summary: Summary, *, polls: PollsCount = "unknown"
) -> None:
    """Log the cost and time of what is to be submitted; refuse it if over ``--budget``.

    ``polls``: whether status polls are known to count against the rate (:func:`polls_known`);
    the estimate counts them only then.
    """
    if not jobs:
        return
    guess = estimate(jobs, rpm=settings.rpm, price_per_image=settings.price_per_image, polls=polls)
    summary.estimated_cost = guess.cost
    if summary.emulated:  # a demo must not read as a quote: nothing is paid, the emulator keeps its own time
        log.info(
            "%s on Segmind (emulated: nothing is paid, the emulator keeps its own time)", guess.describe()
        )
    else:
        log.info("%s", guess.describe())
    if settings.budget is not None and guess.cost is None:
        raise UsageError(
            "--budget needs a price: this model is not in the price table; set --price-per-image"
        )
    if settings.budget is not None and guess.cost is not None and guess.cost > settings.budget + 1e-9:
        raise UsageError(
            f"the estimate ({guess.cost:,.2f} USD for {guess.jobs:,} jobs) is over --budget "
            f"{settings.budget:,.2f} USD: nothing was submitted (raise --budget, or run fewer jobs)"
        )
