"""THE retry policy: for any error a job meets, what happens next, after how long.

:meth:`RetryPolicy.decide` is the one place that classifies errors, and
:class:`Attempts` (one per job) is the one record of what a job has been through; only
the policy changes it. Counts are kept per step for the whole life of the job and are
never reset behind the policy's back, so every loop ends:

- ``submit`` and ``download`` (which includes checking the image): at most
  ``max_attempts`` transient failures each, over the job's whole life;
- a submit that may have been accepted (:class:`~batchgen.errors.SubmitUncertain`) is
  never retried: it is reconciled against the request history (``RECONCILE``);
- ``status`` and ``result`` *follow* a request that is paid for: they are idempotent, so
  a failed one is just a missed look, and an outage is ridden out: the job fails
  (retryably: the rerun polls the same request, never submits it again) only once the
  failures in a row (an answer clears the streak, which :meth:`RetryPolicy.succeeded`
  does) are at least ``max_attempts`` *and* have lasted ``follow_patience`` seconds;
- a request that vanished (404 on a poll): resubmitted at most ``max_resubmits`` times
  (the request history is asked for its image first); a 404 on the result of a request
  that said COMPLETED is asked again, then the history (``RECOVER``), never resubmitted;
- the image host refusing the URL (403/404/410, an expired signed URL): the result is
  fetched again for a fresh URL, counted as a download attempt, never resubmitted;
- 429s: the rate gate imposes the wait; a job refused ``max_rate_limited`` times
  gives up (retryably);
- a local write error (disk full, file size limit): the whole run halts; no job fails.

Backoff is exponential with full jitter: a uniform draw in
``[0, min(max_delay, base_delay * 2**(n-1))]`` before the n-th retry (``rng`` makes it
reproducible).
"""

from __future__ import annotations

import enum
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from batchgen.errors import (
    BadRequest,
    FatalApiError,
    ImageInvalid,
    ImageUnavailable,
    InsufficientCredits,
    JobTimedOut,
    LocalWriteError,
    RateLimited,
    RateLimitStalled,
    RequestFailed,
    RequestNotFound,
    SubmitUncertain,
    TransientError,
)

__all__ = ["Action", "Attempts", "Decision", "RetryPolicy"]

StepName = Literal["submit", "status", "result", "download"]


class Action(enum.Enum):
    """What to do about an error."""

    RETRY = "retry"  # the same step again after ``delay``
    WAIT = "wait"  # rate limited: go through the rate gate again (it holds the wait)
    REFETCH = "refetch"  # fetch the result again (fresh image URL) after ``delay``
    RESUBMIT = "resubmit"  # the request is gone (404): submit the job again
    RECONCILE = "reconcile"  # the submit may have been accepted: find it in the request history
    RECOVER = "recover"  # the result is gone though it said COMPLETED: the history's image, else fail
    FAIL = "fail"  # give up on this job; ``retryable`` says whether a rerun should retry it
    STOP_SUBMITTING = "stop_submitting"  # 406: submit nothing more, finish what is in flight
    STOP = "stop"  # 401/403/404 on submit: stop the whole run now
    HALT = "halt"  # a local write failed (disk full): stop the whole run now, fail no job


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer: an action, how long to wait first, and for FAIL whether retryable."""

    action: Action
    delay: float = 0.0
    retryable: bool = False
    reason: str = ""


@dataclass(slots=True)
class Attempts:
    """What one job has been through; changed only by :class:`RetryPolicy`."""

    failures: Counter[str] = field(default_factory=Counter)  # transient failures per step
    follow_streak: int = 0  # status polls and result fetches failed in a row
    streak_since: float = 0.0  # when that streak began (the policy's clock)
    resubmits: int = 0
    rate_limited: int = 0

    @property
    def total(self) -> int:
        """Every transient failure of the job so far."""
        return sum(self.failures.values())


@dataclass
class RetryPolicy:
    """THE retry policy (see the module docstring)."""

    max_attempts: int = 6
    max_resubmits: int = 3
    max_rate_limited: int = 50
    base_delay: float = 0.25
    max_delay: float = 30.0
    follow_patience: float = 180.0  # seconds of failed polls in a row before a follow gives up
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic

    def backoff(self, n: int) -> float:
        """Full-jitter delay before retry number ``n`` (1-based)."""
        cap = min(self.max_delay, self.base_delay * 2.0 ** max(0, n - 1))
        return self.rng.uniform(0.0, cap)

    def succeeded(self, step: StepName, attempts: Attempts) -> None:
        """A request of ``step`` was answered: a poll or result that answers ends a failure streak."""
        if step in _FOLLOW:
            attempts.follow_streak = 0

    def decide(self, error: BaseException, *, step: StepName, attempts: Attempts) -> Decision:
        """Decide what follows ``error``, met at ``step``; records it in ``attempts``."""
        reason = str(error)
        if isinstance(error, RateLimitStalled):
            return Decision(Action.FAIL, retryable=True, reason=reason)
        if isinstance(error, RateLimited):
            attempts.rate_limited += 1
            if attempts.rate_limited > self.max_rate_limited:
                return Decision(
                    Action.FAIL,
                    retryable=True,
                    reason=f"rate limited {attempts.rate_limited} times: {reason}",
                )
            return Decision(Action.WAIT, reason=reason)
        if isinstance(error, FatalApiError):
            return Decision(Action.STOP, reason=reason)
        if isinstance(error, LocalWriteError):
            # Not the job's fault and not worth a retry: every image and ledger line after
            # it would fail the same way (and failing jobs would write still more lines).
            return Decision(Action.HALT, reason=reason)
        if isinstance(error, InsufficientCredits):
            return Decision(Action.STOP_SUBMITTING, reason=reason)
        if isinstance(error, BadRequest | RequestFailed):
            return Decision(Action.FAIL, retryable=False, reason=reason)
        if isinstance(error, JobTimedOut):
            return Decision(Action.FAIL, retryable=True, reason=reason)
        if isinstance(error, SubmitUncertain):
            # Counted like a failed submit: once the history shows it was not accepted, a
            # job whose submits keep ending in doubt gives up (scheduler: ``gave_up``).
            self._count(attempts, step)
            return Decision(Action.RECONCILE, reason=reason)
        if isinstance(error, RequestNotFound) and step == "result":
            # It said COMPLETED; a paid request is followed to its image, never replaced.
            n = self._follow_failed(attempts, step)
            if n >= self.max_attempts:
                return Decision(
                    Action.RECOVER,
                    retryable=True,
                    reason=f"the result of a COMPLETED request answered 404 {n} times: {reason}",
                )
            return Decision(Action.RETRY, delay=self.backoff(n), reason=reason)
        if isinstance(error, RequestNotFound):
            if attempts.resubmits >= self.max_resubmits:
                return Decision(
                    Action.FAIL, retryable=True, reason=f"expired {attempts.resubmits + 1} times: {reason}"
                )
            attempts.resubmits += 1
            return Decision(Action.RESUBMIT, reason=reason)
        if step == "download" and isinstance(error, ImageUnavailable | ImageInvalid | TransientError):
            n = self._count(attempts, "download")
            if n >= self.max_attempts:
                return Decision(
                    Action.FAIL, retryable=True, reason=f"image not saved after {n} attempts: {reason}"
                )
            return Decision(Action.REFETCH, delay=self.backoff(n), reason=reason)
        if isinstance(error, TransientError | ImageInvalid | ImageUnavailable) and step in _FOLLOW:
            n = self._follow_failed(attempts, step)
            lasted = self.clock() - attempts.streak_since
            if n >= self.max_attempts and lasted >= self.follow_patience:
                return Decision(
                    Action.FAIL,
                    retryable=True,
                    reason=f"no answer about the request for {lasted:.0f} s ({n} tries): {reason}",
                )
            return Decision(Action.RETRY, delay=self.backoff(n), reason=reason)
        if isinstance(error, TransientError | ImageInvalid | ImageUnavailable):
            n = self._count(attempts, step)
            if n >= self.max_attempts:
                return Decision(Action.FAIL, retryable=True, reason=f"gave up after {n} attempts: {reason}")
            return Decision(Action.RETRY, delay=self.backoff(n), reason=reason)
        # Anything else is a bug or an environment problem (disk full, permissions):
        # fail the job retryably rather than loop on it.
        return Decision(Action.FAIL, retryable=True, reason=f"{type(error).__name__}: {reason}")

    @staticmethod
    def _count(attempts: Attempts, step: StepName) -> int:
        attempts.failures[step] += 1
        return attempts.failures[step]

    def gave_up(self, attempts: Attempts) -> Decision | None:
        """After a submit in doubt proved not accepted: FAIL (retryably) once the job's
        submits have failed ``max_attempts`` times, else None (submit again)."""
        n = attempts.failures["submit"]
        if n >= self.max_attempts:
            return Decision(Action.FAIL, retryable=True, reason=f"no submit accepted after {n} attempts")
        return None

    def _follow_failed(self, attempts: Attempts, step: StepName) -> int:
        """One more poll or result fetch failed in a row; the streak's length."""
        self._count(attempts, step)
        if attempts.follow_streak == 0:
            attempts.streak_since = self.clock()
        attempts.follow_streak += 1
        return attempts.follow_streak


# The steps that follow a request already paid for.
_FOLLOW: frozenset[str] = frozenset({"status", "result"})
