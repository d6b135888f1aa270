"""How fast batchgen may go: the submit rate limiter, and the one retry policy.

:class:`RateLimiter` paces submits evenly under an ``rpm`` ceiling from the very first
one (no burst at start), and on a 429 imposes one shared cool-down on every caller and
lowers the rate multiplicatively, which then recovers additively with each accepted
submit (AIMD, as TCP and AWS's adaptive retry mode do).

:class:`RetryPolicy` is the single place that decides, for any error a job meets,
whether to try again and after how long (exponential backoff with full jitter), to
give up, or to stop the run. 429s never count against a job's attempts.
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from batchgen.errors import (
    BadRequest,
    FatalApiError,
    ImageInvalid,
    InsufficientCredits,
    RateLimited,
    RequestFailed,
    RequestNotFound,
    TransientError,
)

__all__ = ["Action", "Decision", "RateLimiter", "RetryPolicy"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter:
    """A submit pacer with an ``rpm`` ceiling, a shared 429 cool-down, and AIMD.

    ``acquire()`` waits for the next submit slot; slots are ``60 / rate`` seconds apart,
    and the first one is immediate, so nothing bursts at start and an idle limiter does
    not bank slots.

    On a 429 (``on_rate_limited()``) every caller waits ``max(Retry-After, backoff)``, the
    backoff doubling with each consecutive 429 and resetting on success, and the rate is
    cut to ``decrease`` (half) of a guess of the server's limit: the lower of the current
    rate and the submits accepted in the last ``window`` (60 s; exactly the limit for a
    sliding-window server). 429s for requests sent before the last cut extend the
    cool-down but do not cut again (one decrease per congestion event, as TCP does).
    Each accepted submit (``on_success()``) then adds ``recovery`` (10%) of the guess
    while the rate is well below it, and ``probe`` (1%) of it near it, up to ``rpm``.

    ``clock`` and ``sleep`` are injectable (a fake clock makes tests exact); both
    default to anyio's.
    """

    def __init__(
        self,
        rpm: float = 50.0,
        *,
        min_rpm: float = 1.0,
        decrease: float = 0.5,
        recovery: float = 0.1,
        probe: float = 0.01,
        window: float = 60.0,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        if not rpm > 0:
            raise ValueError("rpm must be positive")
        self.ceiling = float(rpm)
        self.rate = float(rpm)
        self.min_rpm = min(float(min_rpm), self.ceiling)
        self._decrease = decrease
        self._recovery = recovery
        self._probe = probe
        self._limit_seen: float | None = None  # the best guess of the server's limit (rpm)
        self._window = window
        self._accepted: deque[float] = deque()  # accepted submits in the last ``window`` s
        self._base_backoff = backoff
        self._max_backoff = max_backoff
        self._clock: Clock = clock or anyio.current_time
        self._sleep: Sleep = sleep or anyio.sleep
        self._next_slot: float | None = None
        self._cooldown_until = -math.inf
        self._last_decrease = -math.inf
        self._consecutive_429 = 0
        self.rate_limited = 0  # 429s seen, for progress and the summary

    @property
    def interval(self) -> float:
        """Seconds between two submits at the current rate."""
        return 60.0 / self.rate

    def cooldown_remaining(self) -> float:
        """Seconds left in the current 429 cool-down (0 when none)."""
        return max(0.0, self._cooldown_until - self._clock())

    async def acquire(self) -> float:
        """Wait for the next submit slot; return the time it was granted (pass it to
        :meth:`on_rate_limited` if that submit is answered 429)."""
        while True:
            now = self._clock()
            if self._next_slot is None:
                self._next_slot = now
            start = max(self._next_slot, self._cooldown_until)
            if start <= now:
                # Slots are spaced from the later of the planned slot and now, so time
                # spent idle is not saved up into a burst.
                self._next_slot = max(self._next_slot, now) + self.interval
                return now
            # Another caller may take the slot or a 429 may move it while we sleep:
            # re-check rather than trust the reservation.
            await self._sleep(start - now)

    def on_success(self) -> None:
        """An accepted submit: recover the rate additively and forget the backoff."""
        self._consecutive_429 = 0
        now = self._clock()
        self._accepted.append(now)
        self._forget_before(now - self._window)
        seen = self._limit_seen
        if seen is None:
            step = self._recovery * self.ceiling
        elif self.rate < 0.9 * seen:
            step = self._recovery * seen  # far below the rate that hit the limit: climb fast
        else:
            step = self._probe * seen  # near it: creep, the limit is probably right there
        self.rate = min(self.ceiling, self.rate + step)

    def _forget_before(self, start: float) -> None:
        while self._accepted and self._accepted[0] <= start:
            self._accepted.popleft()

    def on_rate_limited(self, retry_after: float | None = None, *, sent_at: float | None = None) -> float:
        """A 429: cut the rate (once per congestion event), start a shared cool-down.

        Returns the cool-down in seconds from now.
        """
        now = self._clock()
        self.rate_limited += 1
        self._consecutive_429 += 1
        backoff = min(self._max_backoff, self._base_backoff * 2.0 ** (self._consecutive_429 - 1))
        wait = max(retry_after or 0.0, backoff)
        self._cooldown_until = max(self._cooldown_until, now + wait)
        if sent_at is None or sent_at > self._last_decrease:
            # The server's limit is at most the current rate, and at most what it accepted
            # in its last minute (exactly that, for a sliding window). Recovery steps are
            # sized to this guess, not to the ceiling: with a 50 rpm ceiling on a 5 rpm
            # plan, ceiling-sized steps would overshoot at once.
            self._forget_before(now - self._window)
            guess = self.rate
            if self._accepted:
                guess = min(guess, len(self._accepted) * 60.0 / self._window)
            self._limit_seen = guess
            self.rate = max(self.min_rpm, guess * self._decrease)
            self._last_decrease = now
        # Slots already planned at the old rate would come too soon after the pause.
        self._next_slot = max(self._next_slot or now, self._cooldown_until)
        return wait


class Action(enum.Enum):
    """What to do about an error."""

    RETRY = "retry"  # try the same step again after ``delay``
    WAIT = "wait"  # rate limited: wait ``delay``, not counted against the job
    RESUBMIT = "resubmit"  # the request is gone (404 on a poll): submit the job again
    FAIL = "fail"  # give up on this job; ``retryable`` says whether a rerun should retry it
    STOP_SUBMITTING = "stop_submitting"  # 406: submit nothing more, finish what is in flight
    STOP = "stop"  # 401/403/404 on submit: stop the whole run now


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer: an action, how long to wait first, and for FAIL if retryable."""

    action: Action
    delay: float = 0.0
    retryable: bool = False
    reason: str = ""


@dataclass
class RetryPolicy:
    """THE retry policy: what to do for any error, after how long.

    Transient errors (5xx, dropped connections, timeouts, an invalid downloaded image)
    are retried up to ``max_attempts`` times in all with exponential backoff and full
    jitter (a uniform draw in ``[0, min(max_delay, base_delay * 2**attempt)]``), then
    the job fails retryably. ``rng`` is injectable so jitter is reproducible.
    ``time_factor`` scales every delay (tests run the emulator at a small time scale).
    """

    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_resubmits: int = 3
    time_factor: float = 1.0
    rng: random.Random = field(default_factory=random.Random)

    def backoff(self, attempt: int) -> float:
        """Full-jitter delay before retry number ``attempt`` (1-based)."""
        cap = min(self.max_delay, self.base_delay * 2.0 ** max(0, attempt - 1))
        return self.rng.uniform(0.0, cap) * self.time_factor

    def decide(
        self,
        error: BaseException,
        *,
        attempt: int,
        resubmits: int = 0,
        rate_limit_wait: float | None = None,
    ) -> Decision:
        """Decide what to do about ``error``, the ``attempt``-th transient failure of this
        step (1-based), after ``resubmits`` resubmissions of the job.

        ``rate_limit_wait`` is the cool-down the rate limiter imposed for a 429.
        """
        reason = str(error)
        if isinstance(error, RateLimited):
            if rate_limit_wait is None:
                rate_limit_wait = error.retry_after or self.base_delay
            return Decision(Action.WAIT, delay=rate_limit_wait, reason=reason)
        if isinstance(error, FatalApiError):
            return Decision(Action.STOP, reason=reason)
        if isinstance(error, InsufficientCredits):
            return Decision(Action.STOP_SUBMITTING, reason=reason)
        if isinstance(error, BadRequest | RequestFailed):
            return Decision(Action.FAIL, retryable=False, reason=reason)
        if isinstance(error, RequestNotFound):
            if resubmits >= self.max_resubmits:
                return Decision(
                    Action.FAIL, retryable=True, reason=f"expired {resubmits + 1} times: {reason}"
                )
            return Decision(Action.RESUBMIT, reason=reason)
        if _is_transient(error):
            if attempt >= self.max_attempts:
                return Decision(
                    Action.FAIL, retryable=True, reason=f"gave up after {attempt} attempts: {reason}"
                )
            return Decision(Action.RETRY, delay=self.backoff(attempt), reason=reason)
        # Anything else is a bug or an environment problem (disk full, permissions):
        # fail the job retryably rather than loop on it.
        return Decision(Action.FAIL, retryable=True, reason=f"{type(error).__name__}: {reason}")


def _is_transient(error: BaseException) -> bool:
    # An image that failed its checks is retried like a broken download.
    return isinstance(error, TransientError | ImageInvalid)
