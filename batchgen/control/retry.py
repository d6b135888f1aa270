"""THE retry policy: for any error a job meets, what happens next, after how long.

:meth:`RetryPolicy.decide` is the one place that classifies errors, and
:class:`Attempts` (one per job) is the one record of what a job has been through; only
the policy changes it. Counts are kept per step for the whole life of the job and are
never reset behind the policy's back, so every loop ends:

- ``submit``, ``result`` and ``download`` (which includes checking the image): at most
  ``max_attempts`` transient failures each, over the job's whole life;
- ``status``: polls are idempotent and cheap, so a failed poll is just a missed look;
  ``max_attempts`` failures *in a row* (a poll that answers clears the streak, which
  :meth:`RetryPolicy.succeeded` does) fail the job;
- a request that vanished (404 on a poll or a result fetch): resubmitted at most
  ``max_resubmits`` times;
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
from collections import Counter
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
    poll_streak: int = 0  # status polls failed in a row
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
    rng: random.Random = field(default_factory=random.Random)

    def backoff(self, n: int) -> float:
        """Full-jitter delay before retry number ``n`` (1-based)."""
        cap = min(self.max_delay, self.base_delay * 2.0 ** max(0, n - 1))
        return self.rng.uniform(0.0, cap)

    def succeeded(self, step: StepName, attempts: Attempts) -> None:
        """A request of ``step`` was answered: a poll that answers ends a failure streak."""
        if step == "status":
            attempts.poll_streak = 0

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
        if isinstance(error, TransientError | ImageInvalid | ImageUnavailable):
            if step == "status":
                attempts.poll_streak += 1
                n = attempts.poll_streak
                self._count(attempts, step)
            else:
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
