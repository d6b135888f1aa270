"""When a run stops submitting on its own: the USD budget, the failure-rate halt, a fatal answer.

Each rule only records why in the summary, says it once in the log, and asks the
scheduler to stop (``stop_submitting``: jobs in flight go on, they are paid for; or
``cancel``: nothing in this run can succeed). Which exit code follows is the summary's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from batchgen.control.breaker import SubmitBreaker
from batchgen.engine.estimate import price_of
from batchgen.engine.settings import RunSettings
from batchgen.errors import ApiError
from batchgen.manifest.job import Job
from batchgen.outcome.figures import format_duration
from batchgen.outcome.summary import Summary

__all__ = ["StopRules", "Stopped"]

log = logging.getLogger("batchgen")


class Stopped(Exception):
    """Submits were stopped while this job waited for its slot: it is abandoned, not failed."""


class StopRules:
    """The stop rules of one run, acting through the scheduler's ``stop_submitting`` and ``cancel``."""

    def __init__(
        self,
        settings: RunSettings,
        summary: Summary,
        *,
        wall_clock: Callable[[], float],
        stop_submitting: Callable[[], None],
        cancel: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.summary = summary
        self._wall_clock = wall_clock
        self._stop_submitting = stop_submitting
        self._cancel = cancel

    def check_budget(self, job: Job, committed: float) -> None:
        """Stop submitting before this submit would take the run's spending past ``--budget``;
        raises :class:`Stopped` if so.

        ``committed`` (USD) is what the run has committed to: every request it had accepted
        (in flight ones included) and every submit in doubt, at the cost the answers said
        or else the price per image.
        """
        budget = self.settings.budget
        price = price_of(job.model, self.settings.price_per_image)
        if budget is None or price is None:
            return
        if committed + price > budget + 1e-9:
            if not self.summary.budget_reached:
                self.summary.budget_reached = True
                log.warning(
                    "budget reached: %.2f USD committed of %.2f USD, the next image %.4g USD; "
                    "submitting nothing more, finishing the jobs in flight",
                    committed,
                    budget,
                    price,
                )
            self._stop_submitting()
            raise Stopped

    def check_failure_rate(self) -> None:
        """Stop submitting once more than ``--halt-on-failure-rate`` percent of the jobs this
        run finished failed (after ``halt_min_jobs`` finished); jobs in flight go on."""
        limit = self.settings.halt_failure_rate
        if limit is None or self.summary.failure_rate_halted:
            return
        failed, finished = self.summary.failed, self.summary.failed + self.summary.completed
        if finished < self.settings.halt_min_jobs or failed * 100 <= limit * finished:
            return
        self.summary.failure_rate_halted = True
        log.error(
            "%d of %d finished jobs failed (%.1f%%, over --halt-on-failure-rate %g%%); "
            "submitting nothing more, finishing the jobs in flight",
            failed,
            finished,
            failed * 100 / finished,
            limit,
        )
        self._stop_submitting()

    def silent(self, breaker: SubmitBreaker) -> None:
        """The API has answered no submit for the breaker's give-up time: submit nothing more
        (jobs in flight and submits in doubt are still followed). Exit 3, like a fatal answer."""
        if self.summary.fatal is None:
            reason = (
                f"the API answered no submit for {format_duration(breaker.give_up_after)} "
                f"({breaker.silent_in_a_row} in a row got no answer)"
            )
            self.summary.fatal = reason
            self.summary.error(reason, at=self._wall_clock())
            log.error("%s; submitting nothing more, following the jobs in flight", reason)
        self._stop_submitting()

    def fatal(self, reason: str, exc: Exception, *, everything: bool) -> None:
        """A fatal API answer: stop submitting (406: jobs in flight go on), or, with
        ``everything`` (401/403, 404 on submit), stop the whole run now."""
        if self.summary.fatal is None:
            self.summary.fatal = reason
            code = exc.status_code if isinstance(exc, ApiError) else None
            self.summary.error(reason, at=self._wall_clock(), code=code)
            if everything:
                log.error("%s; stopping the run", reason)
            else:
                log.error("%s; submitting nothing more, finishing the jobs in flight", reason)
        if everything:
            self._cancel()
        else:
            self._stop_submitting()
