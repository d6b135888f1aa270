"""The scheduler: admit jobs, drive each through its life, stop when told.

One feeder admits jobs in manifest order, one token of the admission limiter each
(:mod:`batchgen.control.admission`: how many in flight, by Little's law). Each admitted
job gets a task that performs the step its phase asks for (:mod:`batchgen.control.flight`)
through :mod:`batchgen.engine.steps`: submit, status polls at the times the cadence picks
(:mod:`batchgen.control.cadence`), the result fetch, the download. Every error goes through
the one retry policy (:mod:`batchgen.control.retry`), applied here; every completion
teaches the latency model (:mod:`batchgen.control.latency`), which in turn sizes the
cadence and the in-flight target.

Before anything is sent, :mod:`batchgen.engine.plan` sorts the jobs by the resume rule;
submits a killed run may have sent are looked for in the request history first
(:mod:`batchgen.engine.recovery`), and so are images whose result is gone. The USD
budget, the failure-rate halt and fatal answers are :mod:`batchgen.engine.stops`.

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
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread

from batchgen.api.client import SegmindClient
from batchgen.api.history import History
from batchgen.control.admission import Admission
from batchgen.control.cadence import Cadence
from batchgen.control.flight import Flight, Phase
from batchgen.control.gate import RateGate, RateState
from batchgen.control.latency import LatencyModel
from batchgen.control.retry import Action, Decision, RetryPolicy, StepName
from batchgen.engine.open_files import in_flight_ceiling
from batchgen.engine.plan import Plan, announce, plan
from batchgen.engine.progress import Counts
from batchgen.engine.reconcile import Absent, Found, Reconciler
from batchgen.engine.recovery import Accepted, Recovery
from batchgen.engine.settings import RunSettings
from batchgen.engine.steps import Steps
from batchgen.engine.stops import Stopped, StopRules
from batchgen.errors import ApiError, LocalWriteError, SubmitUncertain
from batchgen.manifest.job import Job
from batchgen.outcome.summary import Summary
from batchgen.output.ledger import LedgerWriter, cost_field
from batchgen.output.replay import LedgerState

__all__ = ["Scheduler"]

log = logging.getLogger("batchgen")


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
        self.ledger = ledger
        self.out_dir = out_dir
        self.settings = settings
        self.summary = summary
        self._wall_clock = wall_clock
        self._on_change = on_change or (lambda: None)
        self.rate = RateState(
            rpm=settings.rpm, polls_count=settings.rpm_counts_polls, retry_after_cap=settings.retry_after_cap
        )
        self.gate = RateGate(self.rate)
        self.latency = LatencyModel()
        self.cadence = Cadence(self.latency, self.rate)
        self.admission = Admission(
            cap=settings.concurrency,
            retention=settings.retention,
            ceiling=in_flight_ceiling(settings.concurrency),
        )
        self.policy = RetryPolicy(
            max_attempts=settings.max_attempts,
            follow_patience=settings.follow_patience,
            rng=random.Random(settings.seed),
            clock=anyio.current_time,
        )
        self.counts = Counts(summary)
        self.accepted: Accepted = {}
        self.stops = StopRules(
            settings, summary, wall_clock=wall_clock, stop_submitting=self.stop_submitting, cancel=self.cancel
        )
        self.steps = Steps(
            client,
            ledger,
            out_dir=out_dir,
            settings=settings,
            summary=summary,
            rate=self.rate,
            gate=self.gate,
            latency=self.latency,
            cadence=self.cadence,
            stops=self.stops,
            accepted=self.accepted,
            submitting=lambda: self._submitting,
            on_accepted=lambda: self._in_flight(+1),
            retarget=self._retarget,
            on_sent=self._moved,
            wall_clock=wall_clock,
            manifest_sha256=manifest_sha256,
        )
        self.counts.doubts = self.steps.in_doubt
        self._admitted: set[str] = set()  # keys of the jobs holding an admission token
        self.recovery = Recovery(
            history, ledger, summary, accepted=self.accepted, wall_clock=wall_clock, lag=settings.history_lag
        )
        self._ledger_ids: set[str] = set()
        self.reconciler = Reconciler(
            history,
            known=lambda: self._ledger_ids | self.accepted.keys(),
            lag=settings.history_lag,
            patience=0.0 if settings.resubmit_uncertain else settings.reconcile_patience,
            wall_clock=wall_clock,
        )
        self._submitting = True
        self._moves = anyio.Event()  # set when a job may have left flight (see wind_down)
        self._feeding: anyio.CancelScope | None = None
        self._scope: anyio.CancelScope | None = None
        self._followers: anyio.abc.TaskGroup | None = None
        self._resubmitted: set[str] = set()
        self._resent_unchecked: set[str] = set()  # keys sent again unchecked (--resubmit-uncertain)
        self._plan: Plan | None = None

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

    @property
    def in_flight(self) -> int:
        """Jobs in flight: accepted and not finished, or their submit on its way (it may be)."""
        return self.counts.in_flight + self.steps.sending

    async def wind_down(self, grace: float) -> int:
        """Submit nothing more, give the jobs in flight up to ``grace`` seconds to finish, then
        stop everything (:meth:`cancel`); the jobs still in flight then.

        Only jobs in flight are waited for: they are paid for. A job waiting for a retry
        delay or for the request history (its submit in doubt) is not: it is stopped at
        once, its ``submitting`` or ``uncertain`` line left for the rerun, which looks in
        the history before it pays again."""
        self.stop_submitting()
        with anyio.move_on_after(grace):
            while self.in_flight:
                await self._moves.wait()
                self._moves = anyio.Event()
        left = self.in_flight
        self.cancel()
        return left

    def _moved(self) -> None:
        self._moves.set()

    # --- the run ---------------------------------------------------------------------

    async def prepare(self, jobs: Iterable[Job], state: LedgerState) -> None:
        """Decide what each job needs (the resume rule), say what it will cost, and raise
        :class:`~batchgen.errors.UsageError` if that is over ``--budget``: nothing is sent
        before this."""
        now, wall = anyio.current_time(), self._wall_clock()
        settings, summary, out_dir = self.settings, self.summary, self.out_dir

        def sort() -> Plan:
            return plan(jobs, state, out_dir=out_dir, settings=settings, summary=summary, now=now, wall=wall)

        # Checking finished jobs hashes their files: keep that off the event loop.
        self._plan = await anyio.to_thread.run_sync(sort)
        self._resubmitted |= self._plan.resubmitted
        announce(self._plan.to_submit(), settings, summary, polls=self._plan.polls)

    async def run(self, jobs: Iterable[Job], state: LedgerState) -> None:
        """Run every job not already done according to ``state`` (the replayed ledger)."""
        requests0, polls0 = self.client.requests, self.client.polls
        if self._plan is None:
            await self.prepare(jobs, state)
        assert self._plan is not None
        resumed, new, in_transit = self._plan.resumed, self._plan.new, self._plan.in_transit
        self._ledger_ids = set(state.request_ids) | set(state.orphans)
        for flight, action in in_transit:
            # A killed run sent these without seeing the answer: in doubt until the history says.
            flight.uncertain(
                action.body, intent_at=action.intent_at, why="the run that sent it ended before the answer"
            )
            self.steps.in_doubt.add(flight.job.key)
        doubted = [flight for flight, _ in in_transit]
        self.rate.planned = len(new) + len(resumed) + len(doubted)
        try:
            self._on_change()
            # Requests already on the server are polled at once, whatever the target; so
            # are submits in doubt looked for in the history.
            self.admission.make_room(len(resumed) + len(doubted))
            with anyio.CancelScope() as scope:
                self._scope = scope
                async with anyio.create_task_group() as followers:
                    self._followers = followers
                    for flight in resumed:
                        self._admit_now(flight)
                        self._in_flight(+1)
                        followers.start_soon(self._follow, flight)
                    for flight in doubted:
                        self._admit_now(flight)
                        followers.start_soon(self._follow, flight)
                    with anyio.CancelScope() as feeding:
                        self._feeding = feeding
                        if not self._submitting:
                            feeding.cancel()
                        async with anyio.create_task_group() as submitters:
                            for flight in new:
                                await self._admit(flight)
                                submitters.start_soon(self._submit_then_follow, flight)
            # An interrupted run ends within its grace, a halted one cannot write: neither
            # reads the history, yet both say what the answers priced.
            stopped = self.summary.write_error is not None or self.summary.interrupted
            try:
                await self.recovery.record_costs(
                    state,
                    self._plan.model_names,
                    answered=self.steps.costs,
                    doubts=self.reconciler.asked,
                    in_doubt=self.steps.in_doubt,
                    failing=self.reconciler.failing,
                    read_history=not stopped,
                )
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

    # --- one job ---------------------------------------------------------------------

    async def _submit_then_follow(self, flight: Flight) -> None:
        """Submit (cancelled with the feeder), then hand the job to the followers' group."""
        handed_over = False
        try:
            while flight.phase is Phase.NEW:
                try:
                    await self.steps.submit(flight)
                except Stopped:
                    break
                except Exception as exc:
                    if not await self._handle(flight, "submit", exc):
                        break
            if flight.phase in (Phase.SUBMITTED, Phase.UNCERTAIN) and self._followers is not None:
                # Paid for, or maybe: followed to the end even once submits stop.
                self._followers.start_soon(self._follow, flight)
                handed_over = True
        finally:
            if not handed_over:
                self._finish(flight)

    async def _follow(self, flight: Flight) -> None:
        """Take a submitted job to SAVED or FAILED, polling, fetching and downloading."""
        try:
            while not flight.phase.final:
                step = flight.step
                assert step is not None
                if step == "reconcile":
                    # A submit in doubt waits for the history, not for the server: its place
                    # goes to another job meanwhile (a burst of doubts, each waiting minutes,
                    # held every place and stopped the run), and is taken again after.
                    self._unadmit(flight)
                    try:
                        if not await self._settle(flight):
                            break
                    except LocalWriteError as error:  # the ``submitted`` line of an adopted request
                        self.halt(error)
                        break
                    if flight.step == "submit":  # absent: submitted again, in turn
                        if not self._submitting:
                            break
                        await self._admit(flight)
                    # Adopted: on the server already, so polled at once rather than made to
                    # wait for a place (its own went to another job meanwhile).
                    continue
                try:
                    if step == "submit":  # expired, or its submit in doubt proven absent
                        if not self._submitting:
                            break
                        await self.steps.submit(flight)
                        continue
                    elif step == "status":
                        await self.steps.poll(flight)
                    elif step == "result":
                        await self.steps.fetch(flight)
                    else:
                        await self.steps.download(flight)
                    self.policy.succeeded(step, flight.attempts)
                except Stopped:
                    break
                except Exception as exc:
                    if not await self._handle(flight, step, exc):
                        break
        finally:
            self._finish(flight)

    async def _settle(self, flight: Flight) -> bool:
        """Settle a submit in doubt from the request history; True to carry on with the job
        (adopted: polled; absent: submitted again), False if it ends this run in doubt."""
        job = flight.job
        assert flight.intent_body is not None and flight.intent_at is not None
        outcome = await self.reconciler.resolve(
            job.key, flight.intent_body, intent_at=flight.intent_at, model=job.model
        )
        if isinstance(outcome, Found):
            row = outcome.row
            created = row.created if row.created is not None else flight.intent_at
            await self.steps.adopt(flight, row.request_id, created)
            self.summary.recovered += 1
            log.info(
                "job %s: its submit in doubt is request %s (request history); polling it",
                job.short_key,
                row.request_id,
            )
            return True
        if isinstance(outcome, Absent):
            self.steps.absent(flight)
            decision = self.policy.gave_up(flight.attempts)
            if decision is not None:
                why = f"{decision.reason}; the last: {flight.doubt}"
                error = SubmitUncertain(why, answered=True, status_code=flight.doubt_code, detail=why)
                await self._fail(flight, error, decision)
                return False
            log.info(
                "job %s: its submit in doubt was not accepted (not in the request history %g s later);"
                " submitting again",
                job.short_key,
                self.reconciler.lag,
            )
            return True
        if self.settings.resubmit_uncertain and job.key not in self._resent_unchecked:
            # Once per job and run: a resend whose answer is lost as well stays in doubt
            # (sent again and again, one job was paid three times).
            self._resent_unchecked.add(job.key)
            log.warning(
                "job %s: %s; submitting again (--resubmit-uncertain: it may be paid twice)",
                job.short_key,
                outcome.why,
            )
            self.summary.unreconciled += 1
            self.steps.absent(flight)
            return True
        why = outcome.why
        if job.key in self._resent_unchecked:  # --resubmit-uncertain looks for nothing: say what happened
            why = "sent again once unchecked (--resubmit-uncertain), and that submit is in doubt too"
        log.warning("job %s: not known whether its submit was paid: %s", job.short_key, why)
        self.summary.uncertain_why = self.summary.uncertain_why or why
        return False

    def _finish(self, flight: Flight) -> None:
        """The job leaves the run: free its place, tell admission how long it held it."""
        if flight.phase is Phase.UNCERTAIN:
            self.summary.uncertain += 1  # not known whether paid: the rerun looks again
            # Settled by nothing: the run stopped (a signal, a halt) while the history was asked.
            self.summary.uncertain_why = self.summary.uncertain_why or (
                "the run stopped before the request history settled it"
            )
        flight.abandon()
        self.cadence.release(flight)
        queue = self.steps.queue_wait(flight)
        if flight.accepted_at is not None and flight.phase in (Phase.SAVED, Phase.FAILED):
            now = anyio.current_time()
            hold = None if flight.resumed else now - flight.accepted_at
            self.admission.finished(now, hold=hold, service=flight.inference_time, queue=queue)
        if flight.accepted_at is not None:
            self._in_flight(-1)
        self._unadmit(flight)
        self._retarget()

    async def _admit(self, flight: Flight) -> None:
        """Wait for an admission token for ``flight`` (a place among the jobs in flight)."""
        await self.admission.limiter.acquire_on_behalf_of(flight)
        self._admitted.add(flight.job.key)

    def _admit_now(self, flight: Flight) -> None:
        """A token for a job already on the server at the start (room made for it: no one waits yet)."""
        self.admission.limiter.acquire_on_behalf_of_nowait(flight)
        self._admitted.add(flight.job.key)

    def _unadmit(self, flight: Flight) -> None:
        """Give ``flight``'s token back, if it holds one."""
        if flight.job.key in self._admitted:
            self._admitted.discard(flight.job.key)
            self.admission.limiter.release_on_behalf_of(flight)

    def _in_flight(self, delta: int) -> None:
        counts = self.counts
        counts.in_flight += delta
        self.summary.peak_in_flight = max(self.summary.peak_in_flight, counts.in_flight)
        self._moved()
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

    async def _handle(self, flight: Flight, step: StepName, exc: Exception) -> bool:
        """Apply the retry policy to ``exc``; True to carry on with the job, False if it ended."""
        try:
            return await self._apply(flight, step, exc)
        except LocalWriteError as error:  # the ledger line of a failure or an expiry
            self.halt(error)
            return False

    async def _apply(self, flight: Flight, step: StepName, exc: Exception) -> bool:
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
        if action is Action.RECONCILE:
            return True  # the flight is UNCERTAIN: the history settles it (step "reconcile")
        if action is Action.RECOVER:
            if await self.recovery.image_from_history(flight):
                return True
            await self._fail(flight, exc, decision)
            return False
        if action is Action.RESUBMIT:
            if await self.recovery.image_from_history(flight):
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
            self.stops.fatal(decision.reason, exc, everything=False)
            if flight.phase is Phase.NEW:
                return False
            # A 406 while polling would be odd; keep polling what is paid for, slowly.
            await anyio.sleep(self.policy.backoff(3))
            return True
        # Action.STOP: 401/403/404 on submit; nothing in this run can succeed.
        self.stops.fatal(decision.reason, exc, everything=True)
        return False

    async def _fail(self, flight: Flight, exc: Exception, decision: Decision) -> None:
        code = exc.status_code if isinstance(exc, ApiError) else None
        detail = exc.detail if isinstance(exc, ApiError) and exc.detail else decision.reason
        job = flight.job
        usd = self.steps.failed_cost(exc)
        await self.ledger.write(
            "failed",
            job.key,
            request_id=flight.request_id,
            seed=job.seed,
            code=code,
            error=detail,
            retryable=decision.retryable,
            step=flight.step,
            **cost_field(usd),
        )
        flight.fail()
        self.summary.failed += 1
        self.summary.error(detail, at=self._wall_clock(), key=job.key, code=code)
        log.warning("job %s (%s) failed: %s", job.short_key, job.filename, detail)
        self.stops.check_failure_rate()
