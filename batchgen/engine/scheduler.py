"""The runner's control loop: admit jobs, drive each through its life, keep the ledger.

One feeder admits jobs in manifest order, one token of the admission limiter each
(:mod:`batchgen.control.admission`: how many in flight, by Little's law). Each admitted job gets
a task that performs the request its phase asks for (:mod:`batchgen.control.flight`): submit,
status polls at the times the cadence picks (:mod:`batchgen.control.cadence`), the result
fetch, the download through :mod:`batchgen.output.images`. Every API request goes through
the rate gate (:mod:`batchgen.control.gate`); every error through the one retry policy
(:mod:`batchgen.control.retry`); every completion teaches the latency model
(:mod:`batchgen.control.latency`), which in turn sizes the cadence and the in-flight target.

Resuming is :func:`batchgen.output.resume.decide` per job: skip, poll the recorded request id,
or submit. A submit and its ``submitted`` ledger line are shielded from cancellation
together, so any request the API accepted is in the ledger unless the process is killed
outright.

Every wait has a bound: each API request :attr:`RunSettings.request_timeout`, each
download :attr:`RunSettings.download_timeout` and :attr:`RunSettings.max_image_bytes`,
each ``Retry-After`` :attr:`RunSettings.retry_after_cap`, each job the retention window
from its submit, and the attempts of :class:`~batchgen.control.retry.RetryPolicy`.

A file under OUT that cannot be written (disk full, a file size limit: an image or a
ledger line) halts the run (:meth:`Scheduler.halt`): nothing more is submitted or
saved, no job is failed for it, and every accepted request is in the ledger or, if the
ledger itself failed, in the writer's unrecorded list.

Stopping: :meth:`Scheduler.stop_submitting` (first Ctrl-C / SIGTERM, or a 406) cancels
the feeder's scope: jobs waiting to submit give up, jobs in flight go on to the end (the
runner cancels them after a grace period). :meth:`Scheduler.cancel` (a second Ctrl-C,
401/403, 404 on submit) stops everything at once; the ledger stays consistent.
"""

from __future__ import annotations

import logging
import math
import random
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.to_thread

from batchgen import __version__
from batchgen.api.client import SegmindClient, find_image_urls
from batchgen.api.history import History, HistoryUnavailable, Intent, match
from batchgen.control.admission import Admission
from batchgen.control.cadence import Cadence
from batchgen.control.flight import Flight, Phase, Step
from batchgen.control.gate import RETRY_AFTER_CAP, Kind, RateGate, RateState, Slot
from batchgen.control.latency import LatencyModel
from batchgen.control.retry import Action, Decision, RetryPolicy
from batchgen.engine.estimate import estimate, price_of
from batchgen.errors import ApiError, JobTimedOut, LocalWriteError, RateLimited, TransientError, UsageError
from batchgen.manifest.job import Job
from batchgen.outcome.summary import Summary
from batchgen.output.embed import ImageInfo
from batchgen.output.images import open_part
from batchgen.output.ledger import LedgerWriter
from batchgen.output.replay import LedgerState
from batchgen.output.resume import DEFAULT_MARGIN, DEFAULT_RETENTION, Poll, Reconcile, Skip, decide

__all__ = ["Counts", "RunSettings", "Scheduler"]

log = logging.getLogger("batchgen")

T = TypeVar("T")

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
    request_timeout: float = 60.0  # one API request, whatever the HTTP client's own timeouts
    download_timeout: float = 120.0  # one image download, start to end
    max_image_bytes: int = 64 * MIB
    grace: float = 60.0  # after the first Ctrl-C / SIGTERM, jobs in flight get this long
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
        for name in ("retry_after_cap", "request_timeout", "download_timeout", "grace"):
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
            "budget": self.budget,
            "price_per_image": self.price_per_image,
            "halt_failure_rate": self.halt_failure_rate,
            "halt_min_jobs": self.halt_min_jobs,
            "embed": self.embed,
            "report": self.report,
        }


@dataclass(slots=True)
class Counts:
    """A live view of a run for the progress display: the summary's tallies, and the jobs
    in flight (submitted to the API and not finished: the one figure the summary lacks)."""

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


def _code(exc: Exception) -> int | None:
    return exc.status_code if isinstance(exc, ApiError) else None


class _Stopped(Exception):
    """Submits were stopped while this job waited for its slot: it is abandoned, not failed."""


class Scheduler:
    """Runs jobs to completion against one API client, appending to one ledger.

    The caller owns the client, the ledger writer and the :class:`Summary` this fills in;
    :func:`batchgen.engine.runner.run` wires them up.
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
        history: History | None = None,
        manifest_sha256: str | None = None,
    ) -> None:
        self.client = client
        self.history = history
        self.ledger = ledger
        self.out_dir = out_dir
        self.settings = settings
        self.summary = summary
        self._wall_clock = wall_clock
        self._on_change = on_change or (lambda: None)
        self.manifest_sha256 = manifest_sha256  # embedded in every image
        self.rate = RateState(
            rpm=settings.rpm, polls_count=settings.rpm_counts_polls, retry_after_cap=settings.retry_after_cap
        )
        self.gate = RateGate(self.rate)
        self.model = LatencyModel()
        self.cadence = Cadence(self.model, self.rate)
        self.admission = Admission(cap=settings.concurrency, retention=settings.retention)
        self.policy = RetryPolicy(max_attempts=settings.max_attempts, rng=random.Random(settings.seed))
        self.counts = Counts(summary)
        self._submitting = True
        self._feeding: anyio.CancelScope | None = None
        self._scope: anyio.CancelScope | None = None
        self._followers: anyio.abc.TaskGroup | None = None
        self._first_submit = anyio.Lock()
        self._accepted_once = False
        self._resubmitted: set[str] = set()
        self._queue_waits: dict[Flight, float] = {}  # a finished request's estimated queue wait
        self._polls_per_image: deque[int] = deque(maxlen=15)
        self._accepted: dict[str, tuple[str, float]] = {}  # request id -> (job key, wall time)
        self._models: set[str] = set()
        self._history_warned = False
        self._prepared: tuple[list[Flight], list[Flight], list[tuple[Flight, Reconcile]]] | None = None

    # --- control ---------------------------------------------------------------------

    @property
    def submitting(self) -> bool:
        """Whether new submits are still allowed."""
        return self._submitting

    def stop_submitting(self) -> None:
        """Submit nothing more; jobs in flight go on to the end (they are paid for)."""
        self._submitting = False
        if self._feeding is not None:
            self._feeding.cancel()
        self._on_change()

    def cancel(self) -> None:
        """Stop everything now (second Ctrl-C, fatal API error); the ledger stays consistent."""
        self.stop_submitting()
        if self._scope is not None:
            self._scope.cancel()

    # --- the run ---------------------------------------------------------------------

    async def prepare(self, jobs: Iterable[Job], state: LedgerState) -> None:
        """Decide what each job needs (the resume rule), say what it will cost, and raise
        :class:`UsageError` if that is over ``--budget``: nothing is sent before this."""
        # Checking finished jobs hashes their files: keep that off the event loop.
        self._prepared = await anyio.to_thread.run_sync(self._plan, jobs, state, anyio.current_time())
        _, new, in_transit = self._prepared
        self._announce([f.job for f in new] + [f.job for f, _ in in_transit])

    async def run(self, jobs: Iterable[Job], state: LedgerState) -> None:
        """Run every job not already done according to ``state`` (the replayed ledger)."""
        requests0, polls0 = self.client.requests, self.client.polls
        if self._prepared is None:
            await self.prepare(jobs, state)
        assert self._prepared is not None
        resumed, new, in_transit = self._prepared
        limiter = self.admission.limiter
        try:
            if in_transit:
                try:
                    found, unknown = await self._reconcile(in_transit, state)
                except LocalWriteError as error:
                    self.halt(error)
                    return
                resumed.extend(found)
                new[:0] = unknown
            self._on_change()
            # Requests already on the server are polled at once, whatever the target.
            self.admission.make_room(len(resumed))
            with anyio.CancelScope() as scope:
                self._scope = scope
                async with anyio.create_task_group() as followers:
                    self._followers = followers
                    for flight in resumed:
                        limiter.acquire_on_behalf_of_nowait(flight)
                        self._in_flight(+1)
                        followers.start_soon(self._follow, flight)
                    with anyio.CancelScope() as feeding:
                        self._feeding = feeding
                        if not self._submitting:
                            feeding.cancel()
                        async with anyio.create_task_group() as submitters:
                            for flight in new:
                                await limiter.acquire_on_behalf_of(flight)
                                submitters.start_soon(self._submit_then_follow, flight)
            if self.summary.write_error is None and not self.summary.interrupted:
                try:
                    await self._record_costs(state)
                except LocalWriteError as error:
                    self.halt(error)
        finally:
            self._scope = self._feeding = self._followers = None
            self.summary.not_run = self.counts.not_run
            self.summary.resubmitted = len(self._resubmitted)
            self.summary.rate_limited += self.rate.refused
            self.summary.requests += self.client.requests - requests0
            self.summary.polls += self.client.polls - polls0
            if self.rate.events:
                self.summary.learned_rpm = self.rate.limit
            self.summary.polls_counted = self.rate.polls_count

    def _plan(
        self, jobs: Iterable[Job], state: LedgerState, now: float
    ) -> tuple[list[Flight], list[Flight], list[tuple[Flight, Reconcile]]]:
        """Sort the jobs by the resume rule: count the skipped ones; flights to poll, to
        submit, and to look for in the request history first.

        ``now`` is the run's clock (resumed requests get their age from the ledger's wall time).
        """
        resumed: list[Flight] = []
        new: list[Flight] = []
        in_transit: list[tuple[Flight, Reconcile]] = []
        wall = self._wall_clock()
        for job in jobs:
            self._models.add(job.model)
            action = decide(
                state.get(job.key),
                out_dir=self.out_dir,
                now=wall,
                retention=self.settings.retention,
                margin=self.settings.margin,
                retry_failed=self.settings.retry_failed,
            )
            if isinstance(action, Skip):
                if action.reason == "completed":
                    self.summary.skipped += 1
                else:
                    self.summary.skipped_failed += 1
                continue
            flight = Flight(job)
            if isinstance(action, Poll):
                # The ledger has wall time; the run's clock is monotonic.
                age = max(0.0, wall - action.submitted_at)
                flight.resume(action.request_id, accepted_at=now - age)
                resumed.append(flight)
            elif isinstance(action, Reconcile):
                in_transit.append((flight, action))
            else:
                if action.reason != "new":
                    self._resubmitted.add(job.key)
                if action.reason == "file-outside":
                    self.summary.warnings.append(
                        f"job {job.short_key}: its image in the ledger resolves outside"
                        f" {self.out_dir / 'images'}; not counted as done, made again"
                    )
                new.append(flight)
        return resumed, new, in_transit

    def _announce(self, jobs: list[Job]) -> None:
        """Log the cost and time of what is to be submitted; refuse it if over ``--budget``."""
        if not jobs:
            return
        settings = self.settings
        guess = estimate(jobs, rpm=settings.rpm, price_per_image=settings.price_per_image)
        self.summary.estimated_cost = guess.cost
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

    def _history_unavailable(self, why: str, consequence: str) -> None:
        """Say once that the history could not be read, and what that costs."""
        if not self._history_warned:
            self._history_warned = True
            log.warning("request history unavailable (%s): %s", why, consequence)
            self.summary.warnings.append(f"request history unavailable: {why}")

    async def _reconcile(
        self, in_transit: list[tuple[Flight, Reconcile]], state: LedgerState
    ) -> tuple[list[Flight], list[Flight]]:
        """Find the submits a killed run sent without seeing the answer; adopt those found.

        Returns the flights to poll (found: recorded ``submitted`` with ``recovered``) and
        those to submit (not on the server, or the history could not be read).
        """
        intents = [Intent(flight.job.key, action.body, action.intent_at) for flight, action in in_transit]
        found: dict[str, Any] = {}
        if self.history is None:
            why = "no history URL"
        else:
            try:
                since = min(i.at for i in intents)
                models = {flight.job.model for flight, _ in in_transit}
                rows = [
                    row
                    for model in sorted(models)
                    for row in await self.history.rows(since=since, until=self._wall_clock(), model=model)
                ]
                found = match(intents, rows, known=state.request_ids)
                why = ""
            except HistoryUnavailable as exc:
                why = str(exc)
        if why:
            self._history_unavailable(
                why, f"{len(intents)} submits whose answer was lost are sent again and may be paid twice"
            )
            self.summary.unreconciled += len(intents)
        adopted: list[Flight] = []
        unknown: list[Flight] = []
        now, wall = anyio.current_time(), self._wall_clock()
        for flight, action in in_transit:
            row = found.get(flight.job.key)
            if row is None:
                unknown.append(flight)
                continue
            job = flight.job
            created = row.created if row.created is not None else action.intent_at
            await self._record_submitted(job, row.request_id, job.params.to_api(), recovered=True)
            flight.resume(row.request_id, accepted_at=now - max(0.0, wall - created))
            self._accepted[row.request_id] = (job.key, created)
            adopted.append(flight)
            self.summary.recovered += 1
        if adopted:
            log.info(
                "found %d submits of an interrupted run in the request history: polling them", len(adopted)
            )
        return adopted, unknown

    async def _record_costs(self, state: LedgerState) -> None:
        """Write a ``cost`` line for each request of the batch not yet priced (from the
        history, in pages), and put the batch's cost in the summary."""
        requests = dict(state.requests)
        requests.update(self._accepted)
        costs = dict(state.costs)
        unpriced = {rid: at for rid, (_, at) in requests.items() if rid not in costs}
        if unpriced and self.history is not None:
            try:
                with anyio.fail_after(120):
                    rows = {
                        row.request_id: row
                        for model in sorted(self._models)
                        for row in await self.history.rows(
                            since=min(unpriced.values()), until=self._wall_clock(), model=model
                        )
                    }
            except (HistoryUnavailable, TimeoutError) as exc:
                self._history_unavailable(str(exc) or "timed out", "the cost of the run is not known")
                rows = {}
            for request_id in unpriced:
                row = rows.get(request_id)
                if row is None or row.cost is None:
                    continue
                costs[request_id] = (row.cost, row.status)
                key = requests[request_id][0]
                await self.ledger.write("cost", key, request_id=request_id, usd=row.cost, status=row.status)
        priced = [costs[rid] for rid in requests if rid in costs]
        if priced:
            self.summary.cost_usd = round(sum(usd for usd, _ in priced), 6)
            self.summary.cost_failed_usd = round(sum(usd for usd, status in priced if status == "FAILED"), 6)
        self.summary.cost_unknown = len(requests) - len(priced)

    # --- one job ---------------------------------------------------------------------

    async def _submit_then_follow(self, flight: Flight) -> None:
        """Submit (cancelled with the feeder), then hand the job to the followers' group."""
        handed_over = False
        try:
            while flight.phase is Phase.NEW:
                try:
                    await self._submit(flight)
                except _Stopped:
                    break
                except Exception as exc:
                    if not await self._handle(flight, "submit", exc):
                        break
            if flight.phase is Phase.SUBMITTED and self._followers is not None:
                self._followers.start_soon(self._follow, flight)
                handed_over = True
        finally:
            if not handed_over:
                flight.abandon()
                self._finish(flight)

    async def _follow(self, flight: Flight) -> None:
        """Take a submitted job to SAVED or FAILED, polling, fetching and downloading."""
        try:
            while not flight.phase.final:
                step = flight.step
                assert step is not None
                try:
                    if step == "submit":  # expired and resubmitted
                        if not self._submitting:
                            break
                        await self._submit(flight)
                        continue
                    elif step == "status":
                        await self._poll(flight)
                    elif step == "result":
                        await self._fetch(flight)
                    else:
                        await self._download(flight)
                    self.policy.succeeded(step, flight.attempts)
                except _Stopped:
                    break
                except Exception as exc:
                    if not await self._handle(flight, step, exc):
                        break
        finally:
            flight.abandon()
            self._finish(flight)

    def _finish(self, flight: Flight) -> None:
        """The job leaves the run: free its place, tell admission how long it held it."""
        self.cadence.release(flight)
        queue = self._queue_waits.pop(flight, None)
        if flight.accepted_at is not None and flight.phase in (Phase.SAVED, Phase.FAILED):
            now = anyio.current_time()
            hold = None if flight.resumed else now - flight.accepted_at
            self.admission.finished(now, hold=hold, service=flight.inference_time, queue=queue)
        if flight.accepted_at is not None:
            self._in_flight(-1)
        self.admission.limiter.release_on_behalf_of(flight)
        self._retarget()

    def _in_flight(self, delta: int) -> None:
        counts = self.counts
        counts.in_flight += delta
        self.summary.peak_in_flight = max(self.summary.peak_in_flight, counts.in_flight)
        self._on_change()

    def _retarget(self) -> None:
        self.admission.update(anyio.current_time(), submit_rate=self.rate.submit_rate())

    def halt(self, error: LocalWriteError) -> None:
        """A file under OUT cannot be written: stop everything now (exit 4); fail no job.

        Every accepted request is in the ledger, which a rerun polls (nothing paid twice),
        or, if the ledger itself failed, in the writer's unrecorded list, which the runner
        prints (their "submitting" lines let the rerun find them in the request history).
        """
        if self.summary.write_error is None:
            self.summary.write_error = str(error)
            self.summary.error(str(error), at=self._wall_clock())
            log.error("%s; stopping the run (rerun the same command once it can write)", error)
        self.cancel()

    async def _handle(self, flight: Flight, step: Step, exc: Exception) -> bool:
        """Apply the retry policy to ``exc``; True to carry on with the job, False if it ended."""
        try:
            return await self._apply(flight, step, exc)
        except LocalWriteError as error:  # the ledger line of a failure or an expiry
            self.halt(error)
            return False

    async def _apply(self, flight: Flight, step: Step, exc: Exception) -> bool:
        decision = self.policy.decide(exc, step=step, attempts=flight.attempts)
        action = decision.action
        if action is Action.HALT:
            assert isinstance(exc, LocalWriteError)
            self.halt(exc)
            return False
        if action is Action.RETRY:
            log.debug("job %s: %s; again in %.3fs", flight.job.short_key, exc, decision.delay)
            await anyio.sleep(decision.delay)
            return True
        if action is Action.WAIT:
            self._retarget()  # a 429 may have taught the gate a rate
            return True
        if action is Action.REFETCH:
            log.debug("job %s: image not saved (%s); fetching the result again", flight.job.short_key, exc)
            flight.refetch()
            await anyio.sleep(decision.delay)
            return True
        if action is Action.RESUBMIT:
            if await self._image_from_history(flight):
                return True
            log.info("job %s: request %s expired; resubmitting", flight.job.short_key, flight.request_id)
            await self.ledger.write("expired", flight.job.key, request_id=flight.request_id)
            self._resubmitted.add(flight.job.key)
            self.cadence.release(flight)
            flight.expire()
            self._in_flight(-1)
            return True
        if action is Action.FAIL:
            await self._fail(flight, exc, decision)
            return False
        if action is Action.STOP_SUBMITTING:
            if self.summary.fatal is None:
                self.summary.fatal = decision.reason
                self.summary.error(decision.reason, at=self._wall_clock(), code=_code(exc))
                log.error("%s; submitting nothing more, finishing the jobs in flight", decision.reason)
            self.stop_submitting()
            if flight.phase is Phase.NEW:
                return False
            # A 406 while polling would be odd; keep polling what is paid for, slowly.
            await anyio.sleep(self.policy.backoff(3))
            return True
        # Action.STOP: 401/403/404 on submit; nothing in this run can succeed.
        if self.summary.fatal is None:
            self.summary.fatal = decision.reason
            self.summary.error(decision.reason, at=self._wall_clock(), code=_code(exc))
            log.error("%s; stopping the run", decision.reason)
        self.cancel()
        return False

    async def _image_from_history(self, flight: Flight) -> bool:
        """The result is gone (404): if the request history still has the image, download
        it from there instead of paying again. True when the job goes on that way."""
        request_id = flight.request_id
        if self.history is None or request_id is None or flight.history_checked:
            return False
        flight.history_checked = True
        try:
            row = await self.history.get(request_id)
        except HistoryUnavailable as exc:
            self._history_unavailable(str(exc), "requests past retention are submitted (and paid for) again")
            return False
        if row is None or row.status != "COMPLETED" or row.generation_url is None:
            return False
        log.info(
            "job %s: result of %s gone; its image is in the request history", flight.job.short_key, request_id
        )
        flight.from_history(row.generation_url)
        self.summary.from_history += 1
        return True

    async def _fail(self, flight: Flight, exc: Exception, decision: Decision) -> None:
        code = exc.status_code if isinstance(exc, ApiError) else None
        detail = exc.detail if isinstance(exc, ApiError) and exc.detail else decision.reason
        job = flight.job
        await self.ledger.write(
            "failed",
            job.key,
            request_id=flight.request_id,
            seed=job.seed,
            code=code,
            error=detail,
            retryable=decision.retryable,
            step=flight.step,
        )
        flight.fail()
        self.summary.failed += 1
        self.summary.error(detail, at=self._wall_clock(), key=job.key, code=code)
        log.warning("job %s (%s) failed: %s", job.short_key, job.filename, detail)
        self._check_failure_rate()

    # --- the requests ------------------------------------------------------------------

    async def _api(self, kind: Kind, call: Callable[[], Awaitable[T]]) -> T:
        """One API request through the rate gate, bounded in time, its answer reported."""
        async with self.gate.slot(kind) as slot:
            return await self._answered(slot, kind, call)

    async def _answered(self, slot: Slot, kind: Kind, call: Callable[[], Awaitable[T]]) -> T:
        """Make the request ``slot`` was granted for, bounded in time; tell the gate how
        the server answered."""
        try:
            with anyio.fail_after(self.settings.request_timeout):
                answer = await call()
        except TimeoutError:
            raise TransientError(f"{kind}: no answer within {self.settings.request_timeout:g} s") from None
        except RateLimited as exc:
            slot.rate_limited(exc.retry_after)
            raise
        except ApiError as exc:
            if exc.status_code is not None:
                slot.accepted()  # answered; only a 429 says anything about the rate
            raise
        slot.accepted()
        return answer

    async def _submit(self, flight: Flight) -> None:
        """Submit the job and record ``submitted``.

        Until one submit has been accepted, submits go one at a time, so a wrong key, a
        missing permission or an unknown model (401/403/404) stops the run after a
        single request instead of one per job in flight.
        """
        if not self._accepted_once:
            async with self._first_submit:
                if not self._accepted_once:
                    await self._post(flight)
                    return
        await self._post(flight)

    async def _post(self, flight: Flight) -> None:
        job = flight.job
        body = job.params.to_api()
        if not flight.intent_written:
            # The intent first, before waiting for a slot (so its disk write does not
            # delay the paced request): if the process dies before the answer, the
            # rerun looks for this body in the request history instead of paying again.
            await self.ledger.write("submitting", job.key, index=job.index, body=body)
            flight.intent_written = True
        async with self.gate.slot("submit") as slot:
            if not self._submitting:
                raise _Stopped
            self._check_budget(job)
            # From here the request may be accepted (and paid for): finish it and write
            # its ledger line even if the run is being cancelled, or a rerun pays twice.
            with anyio.CancelScope(shield=True):
                self.summary.submits += 1
                sent = anyio.current_time()
                submitted = await self._answered(slot, "submit", lambda: self.client.submit(job.model, body))
                self._accepted_once = True
                flight.submitted(submitted.request_id, sent_at=sent, accepted_at=anyio.current_time())
                self._accepted[submitted.request_id] = (job.key, self._wall_clock())
                self._in_flight(+1)
                await self._record_submitted(job, submitted.request_id, body)
        self._retarget()

    async def _record_submitted(self, job: Job, request_id: str, body: dict[str, Any], **extra: Any) -> None:
        """The ``submitted`` line: the request the API accepted for ``job``."""
        await self.ledger.write(
            "submitted",
            job.key,
            request_id=request_id,
            index=job.index,
            seed=job.seed,
            params=body,
            labels=dict(job.labels),
            **extra,
        )

    def _check_budget(self, job: Job) -> None:
        """Stop submitting before this submit would take the run's spending past ``--budget``.

        Spending counts every request this run had accepted (in flight ones included) at
        the price per image: what the run has committed to, before the history prices it.
        """
        budget = self.settings.budget
        price = price_of(job.model, self.settings.price_per_image)
        if budget is None or price is None:
            return
        committed = len(self._accepted) * price
        if committed + price > budget + 1e-9:
            if not self.summary.budget_reached:
                self.summary.budget_reached = True
                log.warning(
                    "budget reached: %d requests x %.4g USD = %.2f USD committed of %.2f USD; "
                    "submitting nothing more, finishing the jobs in flight",
                    len(self._accepted),
                    price,
                    committed,
                    budget,
                )
            self.stop_submitting()
            raise _Stopped

    def _check_failure_rate(self) -> None:
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
        self.stop_submitting()

    async def _poll(self, flight: Flight) -> None:
        """Wait until the cadence says, then ask the status once."""
        assert flight.request_id is not None and flight.accepted_at is not None
        now = anyio.current_time()
        deadline = flight.accepted_at + self.settings.retention
        # A request resumed past the window is still asked once: its result (or a 404,
        # then the history) may yet give the image without paying again.
        if now >= deadline and flight.polls > 0:
            raise JobTimedOut(
                f"request {flight.request_id} did not finish within the "
                f"{self.settings.retention / 60:g}-minute retention window"
            )
        when = min(self.cadence.next_poll(flight, now), max(deadline, now))
        waiting_for_probe = not self.model.known and not self.cadence.is_probe(flight)
        with anyio.move_on_after(when - now) as sleep:
            # Waiting for the probe to teach the model, or on an estimate that may move:
            # either news ends the sleep, and the next look is planned again.
            await (self.model.learned.wait() if waiting_for_probe else self.model.moved())
        if not sleep.cancelled_caught:
            return
        request_id = flight.request_id
        sent = anyio.current_time()
        status = await self._api("status", lambda: self.client.status(request_id))
        received = anyio.current_time()
        flight.polled(status.state, sent_at=sent, received_at=received, inference_time=status.inference_time)
        if flight.phase is Phase.READY:
            self._learn(flight)

    def _learn(self, flight: Flight) -> None:
        observation = flight.observation()
        if observation is not None:  # None for a resumed job: its submit time is only the ledger's
            queue = self.model.observe(observation)
            if queue is not None:
                self._queue_waits[flight] = queue
        if flight.accepted_at is not None and flight.accepted_at >= self.rate.polls_count_since:
            # Polled entirely at the counted cadence: what each submit costs in polls now.
            self._polls_per_image.append(flight.polls)
            self.rate.followups = 1.0 + statistics.fmean(self._polls_per_image)

    async def _fetch(self, flight: Flight) -> None:
        """Fetch the result of a COMPLETED request; note its image URL."""
        request_id = flight.request_id
        assert request_id is not None
        result = await self._api("result", lambda: self.client.result(request_id))
        urls = find_image_urls(result.output)
        if not urls:
            raise TransientError("no image URL in the result's output", request_id=request_id)
        if len(urls) > 1:
            log.debug("job %s: %d images in the output; keeping the first", flight.job.short_key, len(urls))
        flight.fetched(urls[0], inference_time=result.inference_time)

    async def _download(self, flight: Flight) -> None:
        """Download the image (.part, verify, rename), record ``completed``."""
        job = flight.job
        url = flight.image_url
        assert url is not None and flight.request_id is not None
        limit = self.settings.download_timeout
        info = None
        if self.settings.embed:
            info = ImageInfo(
                key=job.key,
                request_id=flight.request_id,
                index=job.index,
                model=job.model,
                params=job.params.to_api(),
                labels=dict(job.labels),
                manifest_sha256=self.manifest_sha256,
                version=__version__,
            )
        try:
            with anyio.fail_after(limit):
                async with (
                    self.client.download(url, max_bytes=self.settings.max_image_bytes) as download,
                    open_part(self.out_dir, job.filename) as part,
                ):
                    async for chunk in download.chunks:
                        await part.write(chunk)
                    saved = await part.commit(content_type=download.content_type, info=info)
        except TimeoutError:
            raise TransientError(f"download took longer than {limit:g} s") from None
        await self.ledger.write(
            "completed",
            job.key,
            request_id=flight.request_id,
            seed=job.seed,
            inference_time=flight.inference_time,
            file=saved.file,
            sha256=saved.sha256,
            bytes=saved.bytes,
        )
        flight.saved()
        self.summary.completed += 1
        self._check_failure_rate()
        if flight.inference_time is not None:
            self.summary.inference_times.append(flight.inference_time)
