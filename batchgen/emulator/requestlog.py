"""The per-request log behind ``GET /_emulator/requests``: server-side timings for benchmarks.

One small record per accepted submit (v2 or v1), in submission order, holding the
job's fixed schedule and what clients asked about it since. Handlers update a record
in O(1) (a dict lookup and a field write). Only the last ``REQUEST_LOG_CAP`` submits
are kept, so memory stays bounded on long runs (about 250 bytes a record). Records
outlive the job's retention: a job that expired (404) keeps its record.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from batchgen.emulator.jobs import EmulatedJob

__all__ = ["REQUEST_LOG_CAP", "RequestLog", "RequestRecord"]

REQUEST_LOG_CAP = 200_000


@dataclass(slots=True)
class RequestRecord:
    """What happened to one accepted request; times are emulator clock seconds.

    ``status_polls``, ``result_fetches`` and ``downloads`` count requests for this job
    that got past the gateway (not refused 401/429, not an injected fault or drop):
    status and result answers of any kind (a 404 after expiry included), and image
    requests answered with its image or an image fault. ``first_completed_at`` is when
    a status or result answer (or the sync v1 answer) first told a client the job was
    COMPLETED or FAILED.
    """

    request_id: str
    mode: str
    steps_num: int
    submitted: float
    start: float
    end: float  # infinite for a stalled job
    status_polls: int = 0
    result_fetches: int = 0
    first_completed_at: float | None = None
    downloads: int = 0

    def told_done(self, now: float) -> None:
        """Note that an answer at ``now`` reported the job finished (the first one counts)."""
        if self.first_completed_at is None:
            self.first_completed_at = now

    def to_json(self) -> dict[str, Any]:
        """The record as ``GET /_emulator/requests`` lists it (``end`` null if stalled)."""
        finished = not math.isinf(self.end)
        return {
            "request_id": self.request_id,
            "mode": self.mode,
            "steps_num": self.steps_num,
            "submitted": self.submitted,
            "start": self.start,
            "end": self.end if finished else None,
            "inference_time": self.end - self.start if finished else None,
            "status_polls": self.status_polls,
            "result_fetches": self.result_fetches,
            "first_completed_at": self.first_completed_at,
            "downloads": self.downloads,
        }


class RequestLog:
    """Records of the last ``cap`` accepted submits, by request id, in submission order."""

    def __init__(self, *, cap: int = REQUEST_LOG_CAP) -> None:
        self._cap = cap
        self._records: dict[str, RequestRecord] = {}
        # Eviction order. (Popping a dict's oldest key repeatedly is not O(1) in CPython:
        # iteration has to skip the deleted entries at the front.)
        self._order: deque[str] = deque()

    def add(self, job: EmulatedJob) -> RequestRecord:
        """Start the record of a job just accepted, dropping the oldest beyond the cap."""
        record = RequestRecord(
            request_id=job.request_id,
            mode=job.params.mode,
            steps_num=job.params.steps_num,
            submitted=job.submitted,
            start=job.start,
            end=job.end,
        )
        if len(self._order) >= self._cap:
            del self._records[self._order.popleft()]
        self._records[job.request_id] = record
        self._order.append(job.request_id)
        return record

    def get(self, request_id: str) -> RequestRecord | None:
        """The record of this request, or None if it was never accepted or has been dropped."""
        return self._records.get(request_id)

    def __len__(self) -> int:
        return len(self._records)

    def to_json(self) -> list[dict[str, Any]]:
        """Every record kept, oldest first."""
        return [record.to_json() for record in self._records.values()]
