"""The runner: submit jobs under limits, poll them in parallel, save images, keep the ledger.

One anyio task group holds one task per job in flight. A job is started while fewer
than ``concurrency`` are in flight and the rate limiter gives it a submit slot; it then
polls with an adaptive cadence (:class:`PollCadence`), fetches the result, downloads the
image through :mod:`batchgen.storage` and appends ``completed`` to the ledger. Every
error goes through the one retry policy (:class:`batchgen.limits.RetryPolicy`).

Resuming is :func:`batchgen.ledger.decide` per job: skip, poll the recorded request id,
or submit. A submit and its ``submitted`` ledger line are shielded from cancellation
together, so any request the API accepted is in the ledger unless the process is killed
outright; then the submits whose answers were in transit are lost, at most one per
concurrency slot (the API has no idempotency key to find them again).

Stopping: :meth:`Scheduler.stop_submitting` (first Ctrl-C / SIGTERM, or a 406) lets jobs
in flight finish and starts nothing new; a second Ctrl-C, or a fatal API error
(401/403, 404 on submit), cancels everything at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from batchgen.client import SegmindClient, StatusResult, find_image_urls
from batchgen.errors import ApiError, ImageInvalid, RateLimited, TransientError
from batchgen.job import Job
from batchgen.ledger import (
    DEFAULT_MARGIN,
    DEFAULT_RETENTION,
    LedgerState,
    LedgerWriter,
    Poll,
    Skip,
    Submit,
    decide,
)
from batchgen.limits import Action, RateLimiter, RetryPolicy
from batchgen.report import Summary
from batchgen.storage import open_part

__all__ = ["Counts", "PollCadence", "RunSettings", "Scheduler"]

log = logging.getLogger("batchgen")


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How a run behaves. Times are seconds, multiplied by ``time_factor`` where noted.

    ``time_factor`` scales the poll prior and intervals and every backoff, so a run
    against an emulator whose inference runs at ``--time-scale 0.001`` can use 0.001 and
    stay fast yet poll as it would at full scale. The submit ceiling ``rpm``, the server's
    ``Retry-After`` and its rate-limit minute are real time; ``server_clock_scale`` (real
    seconds per second of the server's clock) converts the last two for a server whose
    whole clock runs faster (a test's emulator with a sped-up clock).
    """

    concurrency: int = 8
    rpm: float = 50.0
    retry_failed: bool = False
    rpm_counts_polls: bool = False  # also pace status polls and result fetches by ``rpm``
    time_factor: float = 1.0
    poll_prior: float = 25.0  # expected submit-to-COMPLETED before any job finished (scaled)
    min_poll_interval: float = 1.0  # (scaled)
    max_poll_interval: float = 20.0  # (scaled)
    max_attempts: int = 6  # consecutive transient failures of one job before it fails
    retry_base_delay: float = 1.0  # (scaled)
    retry_max_delay: float = 30.0  # (scaled)
    server_clock_scale: float = 1.0  # real seconds per second of the server's clock
    retention: float = DEFAULT_RETENTION
    margin: float = DEFAULT_MARGIN
    seed: int | None = None  # seeds the retry jitter

    def problems(self) -> list[str]:
        """Every setting out of range, as sentences."""
        found = []
        if self.concurrency < 1:
            found.append(f"concurrency {self.concurrency} must be at least 1")
        if not self.rpm > 0:
            found.append(f"rpm {self.rpm} must be above 0")
        if not self.time_factor > 0:
            found.append(f"time scale {self.time_factor} must be above 0")
        if self.max_attempts < 1:
            found.append(f"max attempts {self.max_attempts} must be at least 1")
        return found

    def to_json(self) -> dict[str, Any]:
        """The settings for the ledger's ``run_started`` line."""
        return {
            "concurrency": self.concurrency,
            "rpm": self.rpm,
            "retry_failed": self.retry_failed,
            "rpm_counts_polls": self.rpm_counts_polls,
            "time_factor": self.time_factor,
        }


class PollCadence:
    """When to poll: first near the expected completion, then backing off.

    The expected submit-to-COMPLETED time starts at ``prior`` and is then the median of
    the latest observations. An observation is bracketed by the last poll that found
    the job unfinished and the poll that found it done (the midpoint is taken); when the
    very first poll already finds it done, the true time is unknown but no larger, so
    90% of it is taken: the estimate drifts down until polls start to bracket it, and
    never creeps up on its own.
    """

    def __init__(
        self,
        *,
        prior: float,
        min_interval: float,
        max_interval: float,
        growth: float = 1.6,
        window: int = 64,
    ) -> None:
        self.prior = prior
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.growth = growth
        self._seen: deque[float] = deque(maxlen=window)

    def expected(self) -> float:
        """Expected seconds from submit to COMPLETED."""
        if not self._seen:
            return self.prior
        ordered = sorted(self._seen)
        return ordered[len(ordered) // 2]

    def observe(self, *, done_at: float, last_pending_at: float | None) -> None:
        """Learn from a job found done ``done_at`` s after its submit (``last_pending_at``:
        when it was last seen unfinished, None if never)."""
        if last_pending_at is None:
            self._seen.append(done_at * 0.9)
        else:
            self._seen.append((done_at + last_pending_at) / 2)

    def first_delay(self, elapsed: float) -> float:
        """Seconds to wait before the first poll of a job submitted ``elapsed`` s ago."""
        return max(self.min_interval, self.expected() - elapsed)

    def next_delay(self, unfinished_polls: int) -> float:
        """Seconds to wait after ``unfinished_polls`` polls found the job still running."""
        base = max(self.min_interval, self.expected() * 0.2)
        return min(self.max_interval, base * self.growth ** max(0, unfinished_polls - 1))


@dataclass(slots=True)
class _Flight:
    """One job's progress through submit, poll, result and download."""

    request_id: str | None = None
    sent_at: float = 0.0  # monotonic time of the submit
    completed: bool = False
    inference_time: float | None = None
    unfinished_polls: int = 0
    last_pending_at: float | None = None
    attempt: int = 0  # consecutive transient failures
    resubmits: int = 0

    def restart(self) -> None:
        """Forget an expired request: the job will be submitted again."""
        self.request_id = None
        self.completed = False
        self.inference_time = None
        self.unfinished_polls = 0
        self.last_pending_at = None
        self.attempt = 0
        self.resubmits += 1


@dataclass(slots=True)
class Counts:
    """A live view of a run for the progress display: the summary's tallies, and the jobs
    in flight (the one figure the summary does not keep)."""

    summary: Summary
    in_flight: int = 0

    @property
    def total(self) -> int:
        """Jobs of the manifest."""
        return self.summary.total

    @property
    def done(self) -> int:
        """Jobs whose image exists: completed now or skipped as complete."""
        return self.summary.done

    @property
    def failed(self) -> int:
        """Jobs failed in this run or skipped as failed permanently before."""
        return self.summary.failed + self.summary.skipped_failed

    @property
    def not_run(self) -> int:
        """Jobs neither done nor failed (yet)."""
        return self.total - self.done - self.failed


class _Stop(Exception):
    """Raised inside a job task to abandon the job without recording anything."""


class Scheduler:
    """Runs jobs to completion against one API client, appending to one ledger.

    The caller owns the client, the ledger writer and the :class:`Summary` this fills in;
    :func:`batchgen.runner.run` wires them up.
    """

    def __init__(
        self,
        client: SegmindClient,
        ledger: LedgerWriter,
        *,
        out_dir: Path,
        settings: RunSettings,
        summary: Summary,
        wall_clock: Callable[[], float] = time.time,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.out_dir = out_dir
        self.settings = settings
        self.summary = summary
        self._wall_clock = wall_clock
        self._on_change = on_change or (lambda: None)
        tf = settings.time_factor
        self.limiter = RateLimiter(
            settings.rpm, backoff=1.0 * tf, max_backoff=60.0 * tf, window=60.0 * settings.server_clock_scale
        )
        self.policy = RetryPolicy(
            max_attempts=settings.max_attempts,
            base_delay=settings.retry_base_delay,
            max_delay=settings.retry_max_delay,
            time_factor=tf,
            rng=random.Random(settings.seed),
        )
        self.cadence = PollCadence(
            prior=settings.poll_prior * tf,
            min_interval=settings.min_poll_interval * tf,
            max_interval=settings.max_poll_interval * tf,
        )
        self.counts = Counts(summary)
        self._submitting = True
        self._changed = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._submit_waits: set[anyio.CancelScope] = set()
        self._accepted_once = False
        self._probing = False
        self._probe_changed = anyio.Event()
        self._resubmitted: set[str] = set()

    # --- control ---------------------------------------------------------------------

    @property
    def submitting(self) -> bool:
        """Whether new submits are still allowed."""
        return self._submitting

    def stop_submitting(self) -> None:
        """Submit nothing more; jobs in flight go on to the end (they are paid for)."""
        self._submitting = False
        for scope in list(self._submit_waits):
            scope.cancel()  # jobs waiting for a submit slot give up now
        self._notify()

    def cancel(self) -> None:
        """Stop everything now (second Ctrl-C, fatal API error); the ledger stays consistent."""
        self.stop_submitting()
        if self._scope is not None:
            self._scope.cancel()

    def _notify(self) -> None:
        # An Event is set from sync code too; waiters hold the old one, so swap it.
        self._changed.set()
        self._changed = anyio.Event()
        self._on_change()

    # --- the run ---------------------------------------------------------------------

    async def run(self, jobs: Iterable[Job], state: LedgerState) -> None:
        """Run every job not already done according to ``state`` (the replayed ledger)."""
        requests0, polls0 = self.client.requests, self.client.polls
        # Checking finished jobs hashes their files: keep that off the event loop.
        polls, submits = await anyio.to_thread.run_sync(self._plan, jobs, state)
        self._on_change()
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                async with anyio.create_task_group() as tg:
                    # Jobs already in flight on the server are polled first; they count
                    # against the concurrency limit like any other.
                    for job, poll in polls:
                        self.counts.in_flight += 1
                        tg.start_soon(self._drive, job, poll)
                    for job, submit in submits:
                        if not await self._wait_for_slot():
                            break
                        self.counts.in_flight += 1
                        tg.start_soon(self._drive, job, submit)
        finally:
            self._scope = None
            self.summary.not_run = self.counts.not_run
            self.summary.resubmitted = len(self._resubmitted)
            self.summary.rate_limited += self.limiter.rate_limited
            self.summary.requests += self.client.requests - requests0
            self.summary.polls += self.client.polls - polls0

    def _plan(
        self, jobs: Iterable[Job], state: LedgerState
    ) -> tuple[list[tuple[Job, Poll]], list[tuple[Job, Submit]]]:
        """Sort the jobs by the resume rule: count the skipped ones, return what to poll and submit."""
        polls: list[tuple[Job, Poll]] = []
        submits: list[tuple[Job, Submit]] = []
        now = self._wall_clock()
        for job in jobs:
            action = decide(
                state.get(job.key),
                out_dir=self.out_dir,
                now=now,
                retention=self.settings.retention,
                margin=self.settings.margin,
                retry_failed=self.settings.retry_failed,
            )
            if isinstance(action, Skip):
                if action.reason == "completed":
                    self.summary.skipped += 1
                else:
                    self.summary.skipped_failed += 1
            elif isinstance(action, Poll):
                polls.append((job, action))
            else:
                if action.reason != "new":
                    self._resubmitted.add(job.key)
                submits.append((job, action))
        return polls, submits

    async def _wait_for_slot(self) -> bool:
        """Wait until fewer than ``concurrency`` jobs are in flight; False if submits stopped."""
        while self._submitting and self.counts.in_flight >= self.settings.concurrency:
            await self._changed.wait()
        return self._submitting

    # --- one job ---------------------------------------------------------------------

    async def _drive(self, job: Job, start: Poll | Submit) -> None:
        """Take one job from its starting point to ``completed`` or ``failed``."""
        flight = _Flight()
        if isinstance(start, Poll):
            flight.request_id = start.request_id
            # The ledger has wall time; polling runs on the monotonic clock.
            age = max(0.0, self._wall_clock() - start.submitted_at)
            flight.sent_at = anyio.current_time() - age
        try:
            await self._steps(job, flight)
        except _Stop:
            pass
        finally:
            self.counts.in_flight -= 1
            self._notify()

    async def _steps(self, job: Job, flight: _Flight) -> None:
        """The job's steps inside the retry loop, until it is recorded done or failed."""
        while True:
            try:
                if flight.request_id is None:
                    await self._submit(job, flight)
                if not flight.completed:
                    await self._await_completion(flight)
                await self._fetch_and_save(job, flight)
                return
            except _Stop:
                raise
            except Exception as exc:
                if not await self._handle(job, flight, exc):
                    return

    async def _handle(self, job: Job, flight: _Flight, exc: Exception) -> bool:
        """Apply the retry policy to ``exc``; True to carry on with the job, False if it ended."""
        transient = isinstance(exc, TransientError | ImageInvalid)
        if transient:
            flight.attempt += 1
        wait = self.limiter.on_rate_limited(self._retry_after(exc)) if isinstance(exc, RateLimited) else None
        decision = self.policy.decide(
            exc, attempt=flight.attempt, resubmits=flight.resubmits, rate_limit_wait=wait
        )
        if decision.action in (Action.RETRY, Action.WAIT):
            log.debug("job %s: %s; again in %.3fs", job.short_key, exc, decision.delay)
            await anyio.sleep(decision.delay)
            return True
        if decision.action is Action.RESUBMIT:
            log.info("job %s: request %s expired; resubmitting", job.short_key, flight.request_id)
            await self.ledger.write("expired", job.key, request_id=flight.request_id)
            self._resubmitted.add(job.key)
            flight.restart()
            return True
        if decision.action is Action.FAIL:
            await self._fail(job, flight, exc, retryable=decision.retryable, reason=decision.reason)
            return False
        if decision.action is Action.STOP_SUBMITTING:
            if self.summary.fatal is None:
                self.summary.fatal = decision.reason
                log.error("%s: submitting nothing more, finishing the jobs in flight", decision.reason)
            self.stop_submitting()
            if flight.request_id is None:
                raise _Stop
            # A 406 while polling would be odd; keep polling what is paid for, slowly.
            await anyio.sleep(self.policy.backoff(flight.attempt + 1))
            return True
        # Action.STOP: 401/403/404 on submit; nothing in this run can succeed.
        if self.summary.fatal is None:
            self.summary.fatal = decision.reason
            log.error("%s: stopping the run", decision.reason)
        self.cancel()
        raise _Stop

    def _retry_after(self, exc: RateLimited) -> float | None:
        """The server's Retry-After in real seconds."""
        return None if exc.retry_after is None else exc.retry_after * self.settings.server_clock_scale

    async def _fail(self, job: Job, flight: _Flight, exc: Exception, *, retryable: bool, reason: str) -> None:
        code = exc.status_code if isinstance(exc, ApiError) else None
        detail = exc.detail if isinstance(exc, ApiError) and exc.detail else reason
        await self.ledger.write(
            "failed",
            job.key,
            request_id=flight.request_id,
            seed=job.seed,
            code=code,
            error=detail,
            retryable=retryable,
        )
        self.summary.failed += 1
        log.warning("job %s (%s) failed: %s", job.short_key, job.filename, detail)

    async def _submit(self, job: Job, flight: _Flight) -> None:
        """Wait for a submit slot, submit, and record ``submitted``; 429s just wait again."""
        while True:
            if not self._submitting:
                raise _Stop
            probe = False
            with anyio.CancelScope() as waiting:
                self._submit_waits.add(waiting)
                try:
                    probe = await self._probe_turn()
                    sent_at = await self.limiter.acquire()
                finally:
                    self._submit_waits.discard(waiting)
            if waiting.cancelled_caught or not self._submitting:
                if probe:
                    self._probe_over(accepted=False)
                raise _Stop
            # From here the request may be accepted (and paid for): finish it and write
            # its ledger line even if the run is being cancelled, or a rerun pays twice.
            with anyio.CancelScope(shield=True):
                self.summary.submits += 1
                accepted = False
                try:
                    submitted = await self.client.submit(job.model, job.params.to_api())
                    accepted = True
                except RateLimited as exc:
                    # Not a failure and not counted against the job: slow down, go again.
                    self.limiter.on_rate_limited(self._retry_after(exc), sent_at=sent_at)
                    continue
                finally:
                    if probe:
                        self._probe_over(accepted=accepted)
                self.limiter.on_success()
                flight.request_id = submitted.request_id
                flight.sent_at = anyio.current_time()
                flight.attempt = 0
                await self.ledger.write(
                    "submitted",
                    job.key,
                    request_id=submitted.request_id,
                    index=job.index,
                    seed=job.seed,
                    params=job.params.to_api(),
                    labels=dict(job.labels),
                )
                return

    async def _probe_turn(self) -> bool:
        """Wait until this job may submit; True if its submit is the run's probe.

        Until one submit has been accepted, submits go one at a time, so a wrong key, a
        missing permission or an unknown model (401/403/404) stops the run after a single
        request instead of one per concurrency slot.
        """
        while not self._accepted_once:
            if not self._probing:
                self._probing = True
                return True
            await self._probe_changed.wait()
        return False

    def _probe_over(self, *, accepted: bool) -> None:
        """The probe submit ended; on success every job may submit from now on."""
        self._accepted_once = self._accepted_once or accepted
        self._probing = False
        self._probe_changed.set()
        self._probe_changed = anyio.Event()

    async def _await_completion(self, flight: _Flight) -> None:
        """Poll until the request is COMPLETED (FAILED and errors raise)."""
        assert flight.request_id is not None
        while True:
            elapsed = anyio.current_time() - flight.sent_at
            if flight.last_pending_at is None and flight.unfinished_polls == 0:
                delay = self.cadence.first_delay(elapsed)
            else:
                delay = self.cadence.next_delay(flight.unfinished_polls)
            await anyio.sleep(delay)
            if self.settings.rpm_counts_polls:
                await self.limiter.acquire()
            status: StatusResult = await self.client.status(flight.request_id)
            flight.attempt = 0
            polled_at = anyio.current_time() - flight.sent_at
            if status.state == "COMPLETED":
                self.cadence.observe(done_at=polled_at, last_pending_at=flight.last_pending_at)
                flight.completed = True
                flight.inference_time = status.inference_time
                return
            flight.unfinished_polls += 1
            flight.last_pending_at = polled_at

    async def _fetch_and_save(self, job: Job, flight: _Flight) -> None:
        """Fetch the result, download the image (.part, verify, rename), record ``completed``."""
        assert flight.request_id is not None
        if self.settings.rpm_counts_polls:
            await self.limiter.acquire()
        result = await self.client.result(flight.request_id)
        flight.attempt = 0
        urls = find_image_urls(result.output)
        if not urls:
            raise TransientError("no image URL in the result's output", request_id=flight.request_id)
        if len(urls) > 1:
            log.debug("job %s: %d images in the output; keeping the first", job.short_key, len(urls))
        async with self.client.download(urls[0]) as download, open_part(self.out_dir, job.filename) as part:
            async for chunk in download.chunks:
                await part.write(chunk)
            saved = await part.commit(content_type=download.content_type)
        inference_time = result.inference_time if result.inference_time is not None else flight.inference_time
        await self.ledger.write(
            "completed",
            job.key,
            request_id=flight.request_id,
            seed=job.seed,
            inference_time=inference_time,
            file=saved.file,
            sha256=saved.sha256,
            bytes=saved.bytes,
        )
        self.summary.completed += 1
        if inference_time is not None:
            self.summary.inference_times.append(inference_time)
