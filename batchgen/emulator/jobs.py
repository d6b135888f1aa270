"""The emulated job queue: FIFO over W workers, computed as a schedule at submit time.

There are no background worker tasks (httpx's ASGITransport runs no lifespan and no
long-lived task group). Instead each job's start and end are fixed when it is
submitted, as in a discrete-event simulation of a FIFO queue with W servers:
``start = max(submitted, earliest time a worker is free)``, ``end = start + duration``.
Its state at any time follows from the clock, so the model behaves the same in
process, under uvicorn, and under a test's fake clock.

The time scale and the number of workers may change while jobs are scheduled; a
schedule once fixed never moves. A new time scale applies to jobs submitted after
the change. Growing the pool adds workers free at once, so jobs submitted next may
start before jobs queued earlier (which keep their times); shrinking it removes the
workers that become free last.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from batchgen.manifest.params import BriaParams

__all__ = [
    "INFERENCE_SECONDS",
    "MODERATION_SECONDS",
    "STATES",
    "EmulatedJob",
    "InferenceTimes",
    "JobQueue",
    "State",
    "params_key",
]

State = Literal["QUEUED", "PROCESSING", "COMPLETED", "FAILED"]
STATES: tuple[State, ...] = ("QUEUED", "PROCESSING", "COMPLETED", "FAILED")

# Mean unscaled inference seconds per mode at the default 40 steps. base: about 22 s,
# as on Segmind's page for Bria 3.2; fast (Bria 2.3 fast) is a distilled model, a few
# seconds; hd (Bria 2.2 HD) renders at a higher resolution and is slower than base.
INFERENCE_SECONDS: dict[str, float] = {"base": 22.0, "fast": 6.0, "hd": 35.0}
# Spread of the lognormal draw (the standard deviation of the underlying normal):
# about +-25 % around the mean, with a longer right tail as real queues show.
INFERENCE_SIGMA = 0.25
# A prompt blocked by moderation fails after the check, long before any rendering.
MODERATION_SECONDS = 1.0
_DEFAULT_STEPS = 40


def params_key(model: str, params: BriaParams) -> str:
    """A canonical text of one request: equal for requests that ask for the same thing."""
    return json.dumps([model, params.to_api()], sort_keys=True, separators=(",", ":"))


class InferenceTimes:
    """Seeded draws of unscaled inference seconds per mode (lognormal, mean as documented)."""

    def __init__(self, *, seed: int) -> None:
        self._random = random.Random(seed)

    def draw(self, params: BriaParams) -> float:
        """Seconds one job computes: lognormal around its mode's mean, scaled by steps."""
        mean = INFERENCE_SECONDS[params.mode] * params.steps_num / _DEFAULT_STEPS
        # E[lognormal(mu, s)] = exp(mu + s^2 / 2); choose mu so the mean is `mean`.
        mu = math.log(mean) - INFERENCE_SIGMA**2 / 2
        return self._random.lognormvariate(mu, INFERENCE_SIGMA)


@dataclass(frozen=True, slots=True)
class EmulatedJob:
    """One accepted request and its fixed schedule (times in clock seconds).

    A stalled job has ``end`` infinite: once started it stays PROCESSING.
    """

    request_id: str
    model: str
    params: BriaParams
    key: str
    submitted: float
    start: float
    end: float
    error: str | None

    def state(self, now: float) -> State:
        """Where the job is at time ``now``."""
        if now < self.start:
            return "QUEUED"
        if now < self.end:
            return "PROCESSING"
        return "FAILED" if self.error is not None else "COMPLETED"

    @property
    def inference_time(self) -> float:
        """Scaled seconds the job spent on a worker (infinite for a stalled job)."""
        return self.end - self.start

    @property
    def stalled(self) -> bool:
        """Whether the job never finishes."""
        return self.end == math.inf


class JobQueue:
    """Accepted jobs, their FIFO schedule over ``workers``, and retention."""

    def __init__(self, *, workers: int, time_scale: float, seed: int) -> None:
        self._free_at = [float("-inf")] * workers  # min-heap: when each worker is next free
        # Multiplies the inference seconds of jobs submitted from now on.
        self.time_scale = time_scale
        self._times = InferenceTimes(seed=seed)
        self._jobs: dict[str, EmulatedJob] = {}
        # Submission order; submitted times only grow, so expiry pops from the left.
        self._order: deque[str] = deque()
        # Min-heap of the start times of jobs not known to have started. (Start times
        # do not always grow with submission order: a pool grown at run time lets a
        # later job start before earlier ones.)
        self._waiting: list[float] = []
        # Hashes, not the texts: a long benchmark submits many jobs and only needs "seen?".
        self._seen_keys: set[int] = set()
        self.peak_queue_depth = 0
        self.duplicate_submits = 0
        self.expired = 0

    def submit(
        self, model: str, params: BriaParams, *, now: float, error: str | None, stalled: bool = False
    ) -> EmulatedJob:
        """Accept one job at ``now``; ``error`` set means it ends FAILED with that detail.

        A ``stalled`` job never finishes, but its worker is freed after the time the
        job would have taken (as if the server lost the result), so stalls do not
        shrink the pool.
        """
        seconds = MODERATION_SECONDS if error is not None else self._times.draw(params)
        free = heapq.heappop(self._free_at)
        start = max(now, free)
        end = start + seconds * self.time_scale
        heapq.heappush(self._free_at, end)
        if stalled:
            end = math.inf
        key = params_key(model, params)
        digest = hash(key)
        if digest in self._seen_keys:
            self.duplicate_submits += 1
        self._seen_keys.add(digest)
        job = EmulatedJob(
            request_id=str(uuid.uuid4()),
            model=model,
            params=params,
            key=key,
            submitted=now,
            start=start,
            end=end,
            error=error,
        )
        self._jobs[job.request_id] = job
        self._order.append(job.request_id)
        while self._waiting and self._waiting[0] <= now:
            heapq.heappop(self._waiting)
        if start > now:
            heapq.heappush(self._waiting, start)
        self.peak_queue_depth = max(self.peak_queue_depth, len(self._waiting))
        return job

    @property
    def workers(self) -> int:
        """How many workers jobs are scheduled on."""
        return len(self._free_at)

    def resize(self, workers: int, *, now: float) -> None:
        """Use ``workers`` workers for jobs submitted from ``now`` on.

        New workers are free at ``now``; removed ones are those that become free
        last. Jobs already scheduled keep their start and end.
        """
        if workers > len(self._free_at):
            for _ in range(workers - len(self._free_at)):
                heapq.heappush(self._free_at, now)
        else:
            self._free_at = heapq.nsmallest(workers, self._free_at)  # sorted, so a heap

    def get(self, request_id: str, *, now: float, ttl: float) -> EmulatedJob | None:
        """The job with this id, or None when unknown or older than ``ttl``."""
        job = self._jobs.get(request_id)
        if job is None or now >= job.submitted + ttl:
            return None
        return job

    def expire(self, *, now: float, ttl: float) -> None:
        """Forget jobs older than ``ttl`` so memory stays bounded on long runs."""
        while self._order:
            job = self._jobs[self._order[0]]
            if now < job.submitted + ttl:
                break
            self._order.popleft()
            del self._jobs[job.request_id]
            self.expired += 1

    def live(self, *, now: float, ttl: float) -> Iterator[EmulatedJob]:
        """Every job still retained at ``now``."""
        self.expire(now=now, ttl=ttl)
        return iter(list(self._jobs.values()))

    def counts(self, *, now: float, ttl: float) -> dict[str, int]:
        """Jobs per state at ``now`` (every state present), plus ``EXPIRED``."""
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        for job in self.live(now=now, ttl=ttl):
            counts[job.state(now)] += 1
        counts["EXPIRED"] = self.expired
        return counts
