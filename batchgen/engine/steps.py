"""The requests of one job: submit, poll, fetch the result, download the image.

Each is one API request through the rate gate (:mod:`batchgen.control.gate`), bounded in
time by :attr:`~batchgen.engine.settings.RunSettings.request_timeout` (a download by
``download_timeout`` and ``max_image_bytes``), its outcome reported to the job's
:class:`~batchgen.control.flight.Flight` and, where it is a fact worth keeping, to the
ledger. A step raises what went wrong; what happens next is the retry policy's, applied
by the scheduler.

A submit and its ``submitted`` ledger line are shielded from cancellation together, so
any request the API accepted is in the ledger unless the process is killed outright.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from batchgen import __version__
from batchgen.api.client import SegmindClient
from batchgen.api.image_urls import find_image_urls
from batchgen.control.breaker import FIRST_PAUSE, MAX_PAUSE, Go, SubmitBreaker
from batchgen.control.cadence import Cadence
from batchgen.control.flight import Flight, Phase
from batchgen.control.gate import Kind, RateGate, RateState, Slot
from batchgen.control.latency import LatencyModel
from batchgen.engine.estimate import price_of
from batchgen.engine.recovery import Accepted, Costs
from batchgen.engine.settings import RunSettings
from batchgen.engine.stops import Stopped, StopRules
from batchgen.errors import ApiError, JobTimedOut, RateLimited, RequestFailed, SubmitUncertain, TransientError
from batchgen.manifest.job import Job
from batchgen.outcome.summary import Summary
from batchgen.output.embed import ImageInfo
from batchgen.output.images import open_part
from batchgen.output.ledger import LedgerWriter, cost_field

__all__ = ["Steps"]

log = logging.getLogger("batchgen")

T = TypeVar("T")


class Steps:
    """The request steps of every job of one run, sharing its client, gate and ledger.

    ``submitting`` says whether new submits are still allowed; ``on_accepted`` is called
    once a submit was accepted (the job is now in flight); ``on_sent`` once a submit that
    left got its answer, or none (:attr:`sending` went down); ``retarget`` after anything
    that may change the in-flight target.
    """

    def __init__(
        self,
        client: SegmindClient,
        ledger: LedgerWriter,
        *,
        out_dir: Path,
        settings: RunSettings,
        summary: Summary,
        rate: RateState,
        gate: RateGate,
        latency: LatencyModel,
        cadence: Cadence,
        stops: StopRules,
        accepted: Accepted,
        submitting: Callable[[], bool],
        on_accepted: Callable[[], None],
        retarget: Callable[[], None],
        on_sent: Callable[[], None] = lambda: None,
        wall_clock: Callable[[], float] = time.time,
        manifest_sha256: str | None = None,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.out_dir = out_dir
        self.settings = settings
        self.summary = summary
        self.rate = rate
        self.gate = gate
        self.latency = latency
        self.cadence = cadence
        self.stops = stops
        self.accepted = accepted
        self._submitting = submitting
        self._on_accepted = on_accepted
        self._retarget = retarget
        self._on_sent = on_sent
        self.sending = 0  # submits that left and have no answer yet: they may be in flight
        self._wall_clock = wall_clock
        self.manifest_sha256 = manifest_sha256  # embedded in every image
        self._first_submit = anyio.Lock()
        self._accepted_once = False
        limit = settings.silence_limit
        self.breaker = SubmitBreaker(
            give_up_after=limit, first_pause=min(FIRST_PAUSE, limit / 10), max_pause=min(MAX_PAUSE, limit / 4)
        )
        self._breaker_moved = anyio.Event()
        self.costs: Costs = {}  # request id -> (USD, how it ended), as the answers' metrics said
        self.in_doubt: set[str] = set()  # keys of jobs whose submit may have been paid, not known
        self._queue_waits: dict[Flight, float] = {}  # a finished request's estimated queue wait
        self._polls_per_image: deque[int] = deque(maxlen=15)

    def queue_wait(self, flight: Flight) -> float | None:
        """The estimated queue wait of a finished request (once: it is forgotten)."""
        return self._queue_waits.pop(flight, None)

    # --- through the gate ------------------------------------------------------------

    async def api(self, kind: Kind, call: Callable[[], Awaitable[T]]) -> T:
        """One API request through the rate gate, bounded in time, its answer reported."""
        async with self.gate.slot(kind) as slot:
            return await self._answered(slot, kind, call)

    async def _answered(self, slot: Slot, kind: Kind, call: Callable[[], Awaitable[T]]) -> T:
        """Make the request ``slot`` was granted for, bounded in time; tell the gate how
        the server answered. A submit with no answer within the bound is in doubt."""
        try:
            with anyio.fail_after(self.settings.request_timeout):
                answer = await call()
        except TimeoutError:
            message = f"{kind}: no answer within {self.settings.request_timeout:g} s"
            if kind == "submit":
                raise SubmitUncertain(message, answered=False) from None
            raise TransientError(message) from None
        except RateLimited as exc:
            slot.rate_limited(exc.retry_after)
            raise
        except ApiError as exc:
            if exc.status_code is not None:
                slot.accepted()  # answered; only a 429 says anything about the rate
            raise
        slot.accepted()
        return answer

    # --- submit ----------------------------------------------------------------------

    async def submit(self, flight: Flight) -> None:
        """Submit the job and record ``submitted``; raises what went wrong
        (:class:`~batchgen.errors.SubmitUncertain` when it is not known whether the
        server took it: the flight is then UNCERTAIN and the ledger says why).

        Until one submit has been accepted, submits go one at a time, so a wrong key, a
        missing permission or an unknown model (401/403/404) stops the run after a
        single request instead of one per job in flight. Against a server that stops
        answering, the :class:`~batchgen.control.breaker.SubmitBreaker` pauses submits.
        """
        probe = await self._claim()
        try:
            if not self._accepted_once:
                async with self._first_submit:
                    if not self._accepted_once:
                        await self._post(flight)
                        return
            await self._post(flight)
        finally:
            if probe:
                self.breaker.released()

    async def _claim(self) -> bool:
        """Wait until the breaker lets a submit go; whether it goes as the probe."""
        while True:
            decision = self.breaker.claim(anyio.current_time())
            if decision is None:
                self.stops.silent(self.breaker)
                raise Stopped
            if isinstance(decision, Go):
                return decision.probe
            with anyio.move_on_after(decision.seconds):
                await self._breaker_moved.wait()

    def _heard(self, answered: bool) -> None:
        """Tell the breaker whether a submit got an answer; wake submits it held back."""
        now = anyio.current_time()
        if answered:
            self.breaker.answered(now)
        else:
            self.breaker.no_answer(now)
        self._breaker_moved.set()
        self._breaker_moved = anyio.Event()

    async def _post(self, flight: Flight) -> None:
        job = flight.job
        body = job.params.to_api()
        outcome: ApiError | None = None  # a refusal or a doubt, recorded once the slot is free
        async with self.gate.slot("submit") as slot:
            if not self._submitting():
                raise Stopped
            self.stops.check_budget(job, self.committed_usd(job.model))
            # From here the request may be accepted (and paid for): finish it and write
            # its ledger lines even if the run is being cancelled, or a rerun pays twice.
            with anyio.CancelScope(shield=True):
                # The intent right before the request leaves (not while it waits for its
                # slot: an interrupted paced run then leaves its unsent jobs "not started"):
                # if the process dies before the answer, the rerun looks for this body in
                # the request history instead of paying again.
                await self.ledger.write("submitting", job.key, durable=False, index=job.index, body=body)
                intent_at = self._wall_clock()
                slot.sending()
                self.summary.submits += 1
                sent = anyio.current_time()
                self.sending += 1
                try:
                    submitted = await self._answered(
                        slot, "submit", lambda: self.client.submit(job.model, body)
                    )
                    self._one_job_per_request(job, submitted.request_id)
                except ApiError as exc:
                    outcome = exc
                else:
                    self._heard(True)
                    self._accepted_once = True
                    flight.submitted(submitted.request_id, sent_at=sent, accepted_at=anyio.current_time())
                    self.accepted[submitted.request_id] = (job.key, self._wall_clock())
                    self._on_accepted()
                    await self._record_submitted(job, submitted.request_id, body)
                finally:
                    self.sending -= 1
                    self._on_sent()
        if outcome is not None:
            with anyio.CancelScope(shield=True):
                await self._not_accepted(flight, body, intent_at, outcome)
            raise outcome
        self._retarget()

    def _one_job_per_request(self, job: Job, request_id: str) -> None:
        """Raise :class:`SubmitUncertain` if another job already holds ``request_id``: such an
        answer is not believed; the job's own request is looked for in the history."""
        holder = self.accepted.get(request_id)
        if holder is None or holder[0] == job.key:
            return
        log.warning(
            "job %s: the API answered request id %s, which job %s already holds; "
            "looking for this job's own request in the history",
            job.short_key,
            request_id,
            holder[0][:12],
        )
        raise SubmitUncertain(
            f"the answer's request id {request_id} belongs to another job",
            answered=True,
            request_id=request_id,
        )

    async def _not_accepted(
        self, flight: Flight, body: dict[str, Any], intent_at: float, exc: ApiError
    ) -> None:
        """Record a submit that was not accepted: in doubt (``uncertain``: the history decides)
        or refused (``refused``: nothing was paid; without this line a rerun after a kill
        would take the intent for a submit in doubt)."""
        job = flight.job
        if isinstance(exc, SubmitUncertain):
            self._heard(exc.answered)
            flight.uncertain(body, intent_at=intent_at, why=str(exc), code=exc.status_code)
            self.in_doubt.add(job.key)
            await self.ledger.write(
                "uncertain", job.key, request_id=exc.request_id, code=exc.status_code, error=str(exc)
            )
            return
        if exc.status_code is not None:
            self._heard(True)
        await self.ledger.write("refused", job.key, code=exc.status_code, error=str(exc))

    def committed_usd(self, model: str) -> float:
        """What this run has committed to: the known cost of each accepted request, the price
        per image for the others, and for every submit in doubt (it may have been paid), those
        sent again unchecked included."""
        price = price_of(model, self.settings.price_per_image) or 0.0
        unknown = len(self.accepted) - len(self.costs) + len(self.in_doubt) + self.summary.unreconciled
        return sum(usd for usd, _ in self.costs.values()) + price * unknown

    async def adopt(self, flight: Flight, request_id: str, created: float) -> None:
        """Take over a request found in the history (accepted at wall time ``created``):
        record it ``submitted`` with ``recovered`` and poll it from here."""
        job = flight.job
        await self._record_submitted(job, request_id, job.params.to_api(), recovered=True)
        now, wall = anyio.current_time(), self._wall_clock()
        flight.resume(request_id, accepted_at=now - max(0.0, wall - created))
        self.accepted[request_id] = (job.key, created)
        self.in_doubt.discard(job.key)
        self._on_accepted()

    def absent(self, flight: Flight) -> None:
        """The submit in doubt was never accepted (the history says so): submit again."""
        flight.absent()
        self.in_doubt.discard(flight.job.key)

    async def _record_submitted(self, job: Job, request_id: str, body: dict[str, Any], **extra: Any) -> None:
        """The ``submitted`` line: the request the API accepted for ``job``."""
        written: dict[str, Any] = {"template": job.template} if job.template is not None else {}
        await self.ledger.write(
            "submitted",
            job.key,
            request_id=request_id,
            index=job.index,
            seed=job.seed,
            params=body,
            labels=dict(job.labels),
            **written,  # the prompt as written, when the prompt was made from it
            **extra,
        )

    # --- poll ------------------------------------------------------------------------

    async def poll(self, flight: Flight) -> None:
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
        waiting_for_probe = not self.latency.known and not self.cadence.is_probe(flight)
        with anyio.move_on_after(when - now) as sleep:
            # Waiting for the probe to teach the model, or on an estimate that may move:
            # either news ends the sleep, and the next look is planned again.
            await (self.latency.learned.wait() if waiting_for_probe else self.latency.moved())
        if not sleep.cancelled_caught:
            return
        request_id = flight.request_id
        sent = anyio.current_time()
        status = await self.api("status", lambda: self.client.status(request_id))
        received = anyio.current_time()
        flight.polled(status.state, sent_at=sent, received_at=received, inference_time=status.inference_time)
        self._priced(request_id, status.cost, status.remaining_credits, "COMPLETED")
        if flight.phase is Phase.READY:
            self._learn(flight)

    def _learn(self, flight: Flight) -> None:
        observation = flight.observation()
        if observation is not None:  # None for a resumed job: its submit time is only the ledger's
            queue = self.latency.observe(observation)
            if queue is not None:
                self._queue_waits[flight] = queue
        if flight.accepted_at is not None and flight.accepted_at >= self.rate.polls_count_since:
            # Polled entirely at the counted cadence: what each submit costs in polls now.
            self._polls_per_image.append(flight.polls)
            self.rate.followups = 1.0 + statistics.fmean(self._polls_per_image)

    def _priced(self, request_id: str, cost: float | None, remaining: float | None, status: str) -> None:
        """Note what an answer said a request cost and what credit is left."""
        if cost is not None:
            self.costs[request_id] = (cost, status)
        if remaining is not None:
            self.summary.remaining_credits = remaining

    def failed_cost(self, exc: BaseException) -> float | None:
        """What a FAILED request cost, when its answer said (noted like any other)."""
        if isinstance(exc, RequestFailed) and exc.request_id is not None and exc.cost is not None:
            self.costs[exc.request_id] = (exc.cost, "FAILED")
            return exc.cost
        return None

    # --- fetch and download ----------------------------------------------------------

    async def fetch(self, flight: Flight) -> None:
        """Fetch the result of a COMPLETED request; note its image URL."""
        request_id = flight.request_id
        assert request_id is not None
        result = await self.api("result", lambda: self.client.result(request_id))
        self._priced(request_id, result.cost, result.remaining_credits, "COMPLETED")
        urls = find_image_urls(result.output)
        if not urls:
            raise TransientError("no image URL in the result's output", request_id=request_id)
        if len(urls) > 1:
            log.debug("job %s: %d images in the output; keeping the first", flight.job.short_key, len(urls))
        flight.fetched(urls[0], inference_time=result.inference_time)

    async def download(self, flight: Flight) -> None:
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
                template=job.template,
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
            mtime_ns=saved.mtime_ns,
            **cost_field(self.costs.get(flight.request_id, (None, None))[0]),
        )
        flight.saved()
        self.summary.completed += 1
        self.stops.check_failure_rate()
        if flight.inference_time is not None:
            self.summary.inference_times.append(flight.inference_time)
