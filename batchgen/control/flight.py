"""One job's life in a run, as data: its phase, what its polls saw, its attempt record.

::

    NEW ──submitted──▶ SUBMITTED ──polled COMPLETED──▶ READY ──fetched──▶ FETCHED ──saved──▶ SAVED
     │▲                 ▲ │ ▲                            │ ▲                  │
     ││                 │ │ └─polled QUEUED/PROCESSING   │ └────refetch───────┘ (image host refused,
     │└──────expire─────┼─┴──────────────────────────────┘                        bad download)
     │                  │
     └─uncertain─▶ UNCERTAIN ──absent──▶ NEW      (the history shows, past its lag, no such request)
                        └──found (resume)──▶ SUBMITTED   (the history holds the request: adopted)
    any phase ──fail──▶ FAILED          any phase ──abandon──▶ ABANDONED (the run stopped first)

A submit that may have been accepted without a usable answer (UNCERTAIN) has no path
back to a POST except through the request history: ``absent``.

The task that drives a flight (:mod:`batchgen.engine.scheduler`) performs only the I/O the
phase asks for (:attr:`Flight.step`) and reports the outcome through these transitions;
an illegal transition raises :class:`IllegalTransition`, so the machine can be tested
without HTTP. Times are the run's clock (seconds). The attempt record is the retry
policy's (:class:`batchgen.control.retry.Attempts`): nothing here changes it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from batchgen.api.client import ServerState
from batchgen.control.latency import Observation, ServiceClass
from batchgen.control.retry import Attempts
from batchgen.manifest.job import Job

__all__ = ["Flight", "IllegalTransition", "Phase", "Step"]

Step = Literal["submit", "status", "result", "download", "reconcile"]


class Phase(enum.Enum):
    """Where a job is."""

    NEW = "new"  # to be submitted
    UNCERTAIN = "uncertain"  # the submit may have been accepted: the request history decides
    SUBMITTED = "submitted"  # accepted; polled until the server says COMPLETED
    READY = "ready"  # COMPLETED on the server; the result is to be fetched
    FETCHED = "fetched"  # the image URL is known; the image is to be downloaded
    SAVED = "saved"  # the image is saved and ``completed`` recorded
    FAILED = "failed"  # ``failed`` recorded
    ABANDONED = "abandoned"  # the run stopped before the job finished

    @property
    def final(self) -> bool:
        """Whether the job is done with for this run."""
        return self in (Phase.SAVED, Phase.FAILED, Phase.ABANDONED)


_STEPS: dict[Phase, Step] = {
    Phase.NEW: "submit",
    Phase.UNCERTAIN: "reconcile",
    Phase.SUBMITTED: "status",
    Phase.READY: "result",
    Phase.FETCHED: "download",
}


class IllegalTransition(RuntimeError):
    """A transition was asked for from a phase that does not allow it (a bug)."""


@dataclass(slots=True, eq=False)
class Flight:
    """A job in flight and everything its requests have shown so far (compared by identity)."""

    job: Job
    phase: Phase = Phase.NEW
    request_id: str | None = None
    resumed: bool = False  # polling a request an earlier run submitted
    sent_at: float | None = None  # the submit went out
    accepted_at: float | None = None  # the submit's answer came back (or the ledger's time, resumed)
    polls: int = 0  # status polls answered since the submit
    last_poll_at: float | None = None
    last_state: ServerState | None = None
    queued_until: float | None = None
    processing_by: float | None = None
    pending_until: float | None = None
    done_by: float | None = None
    inference_time: float | None = None
    image_url: str | None = None
    history_checked: bool = False  # the request history was asked for this request's image
    intent_body: dict[str, Any] | None = None  # UNCERTAIN: the body of the submit in doubt ...
    intent_at: float | None = None  # ... and the wall time of its ``submitting`` line
    doubt: str | None = None  # UNCERTAIN: why the submit's outcome is not known
    doubt_code: int | None = None  # ... and the HTTP status of its answer, if one came
    attempts: Attempts = field(default_factory=Attempts)

    @property
    def step(self) -> Step | None:
        """The request the current phase asks for; None once the job is final."""
        return _STEPS.get(self.phase)

    @property
    def service_class(self) -> ServiceClass:
        """What the job's latency is learned and predicted by."""
        params = self.job.params
        return (params.mode, params.steps_num)

    def _require(self, *allowed: Phase) -> None:
        if self.phase not in allowed:
            names = "/".join(p.name for p in allowed)
            raise IllegalTransition(f"job {self.job.short_key}: {self.phase.name} is not {names}")

    # --- transitions -------------------------------------------------------------------

    def resume(self, request_id: str, *, accepted_at: float) -> None:
        """NEW/UNCERTAIN -> SUBMITTED for a request submitted earlier (by an earlier run, or a
        submit in doubt found in the request history): its id and when it was accepted."""
        self._require(Phase.NEW, Phase.UNCERTAIN)
        self.intent_body = self.intent_at = self.doubt = None
        self.request_id = request_id
        self.sent_at = self.accepted_at = accepted_at
        self.resumed = True
        self.phase = Phase.SUBMITTED

    def submitted(self, request_id: str, *, sent_at: float, accepted_at: float) -> None:
        """NEW -> SUBMITTED: the API accepted the job as ``request_id``."""
        self._require(Phase.NEW)
        self.request_id = request_id
        self.sent_at = sent_at
        self.accepted_at = accepted_at
        self.resumed = False
        self.phase = Phase.SUBMITTED

    def uncertain(self, body: dict[str, Any], *, intent_at: float, why: str, code: int | None = None) -> None:
        """NEW -> UNCERTAIN: the submit of ``body`` (intent written at wall time ``intent_at``)
        may have been accepted; no usable answer came back (``why``; ``code`` its HTTP status)."""
        self._require(Phase.NEW)
        self.intent_body = body
        self.intent_at = intent_at
        self.doubt = why
        self.doubt_code = code
        self.phase = Phase.UNCERTAIN

    def absent(self) -> None:
        """UNCERTAIN -> NEW: the request history, read past its lag window, has no such request."""
        self._require(Phase.UNCERTAIN)
        self.intent_body = self.intent_at = None
        self.phase = Phase.NEW

    def polled(
        self, state: ServerState, *, sent_at: float, received_at: float, inference_time: float | None = None
    ) -> None:
        """A status answer: still QUEUED / PROCESSING, or COMPLETED (-> READY)."""
        self._require(Phase.SUBMITTED)
        self.polls += 1
        self.last_poll_at = received_at
        self.last_state = state
        if state == "COMPLETED":
            self.done_by = received_at
            self.inference_time = inference_time
            self.phase = Phase.READY
            return
        self.pending_until = sent_at
        if state == "QUEUED":
            self.queued_until = sent_at
        elif self.processing_by is None:
            self.processing_by = received_at

    def fetched(self, image_url: str, *, inference_time: float | None = None) -> None:
        """READY -> FETCHED: the result named the image."""
        self._require(Phase.READY)
        self.image_url = image_url
        if inference_time is not None:
            self.inference_time = inference_time
        self.phase = Phase.FETCHED

    def refetch(self) -> None:
        """FETCHED -> READY: the download failed; ask for the result (a fresh URL) again."""
        self._require(Phase.FETCHED)
        self.image_url = None
        self.phase = Phase.READY

    def from_history(self, image_url: str) -> None:
        """SUBMITTED/READY/FETCHED -> FETCHED: the result is gone, but the request history
        still has the image at ``image_url`` (downloaded instead of paying again)."""
        self._require(Phase.SUBMITTED, Phase.READY, Phase.FETCHED)
        self.history_checked = True
        self.image_url = image_url
        self.phase = Phase.FETCHED

    def saved(self) -> None:
        """FETCHED -> SAVED: the image is on disk and recorded."""
        self._require(Phase.FETCHED)
        self.phase = Phase.SAVED

    def expire(self) -> None:
        """The request is gone (404): forget it; the job goes back to NEW to be submitted again."""
        self._require(Phase.SUBMITTED, Phase.READY, Phase.FETCHED)
        self.request_id = None
        self.resumed = False
        self.sent_at = self.accepted_at = None
        self.polls = 0
        self.last_poll_at = None
        self.last_state = None
        self.queued_until = self.processing_by = self.pending_until = self.done_by = None
        self.inference_time = None
        self.image_url = None
        self.history_checked = False
        self.phase = Phase.NEW

    def fail(self) -> None:
        """-> FAILED (recorded by the caller)."""
        self._require(Phase.NEW, Phase.SUBMITTED, Phase.READY, Phase.FETCHED)
        self.phase = Phase.FAILED

    def abandon(self) -> None:
        """-> ABANDONED: the run stopped; the ledger says where the job was."""
        if not self.phase.final:
            self.phase = Phase.ABANDONED

    # --- what it taught ----------------------------------------------------------------

    def observation(self) -> Observation | None:
        """The latency lesson of a request seen completing in this run (None if resumed)."""
        if self.resumed or self.sent_at is None or self.accepted_at is None or self.done_by is None:
            return None
        return Observation(
            service_class=self.service_class,
            sent_at=self.sent_at,
            accepted_at=self.accepted_at,
            done_by=self.done_by,
            service=self.inference_time,
            pending_until=self.pending_until,
            queued_until=self.queued_until,
            processing_by=self.processing_by,
        )
