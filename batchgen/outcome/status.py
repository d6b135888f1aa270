"""What an output folder says about its run: :class:`Status`, every figure derived from the ledger.

A :class:`Status` holds the replayed ledger (:class:`~batchgen.output.replay.LedgerState`),
the manifest behind the run as far as it could be found (:class:`Manifested`) and what a
rerun would do with each job; every figure is derived from those, never stored:

- jobs by state: completed, failed (by reason: HTTP code and the server's detail,
  permanent or retryable), in flight (submitted, not finished; with their age against
  the API's 1-hour retention), expired (about to be resubmitted), not started (in the
  manifest, never submitted; known only when the manifest is);
- jobs no longer in the manifest, and their images still in the folder;
- the runs, whether one is going now, images per minute of the latest run, the last error;
- for the report: wall time, images per minute, inference p50 / p95, requests per image
  and 429s over every run.

Reading a folder into one is :mod:`batchgen.outcome.read`; a run at its end makes its own
from what it holds (:func:`run_status`); the text ``batchgen status``
prints is :mod:`batchgen.outcome.status_text`; :meth:`Status.to_json` is its JSON form.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchgen.manifest.job import Job
from batchgen.outcome.figures import per_image, per_minute, percentile, rounded
from batchgen.output.jsontext import dumps
from batchgen.output.ledger import format_ts
from batchgen.output.replay import JobRecord, LedgerState, RunRecord
from batchgen.output.resume import DEFAULT_MARGIN, DEFAULT_RETENTION

if TYPE_CHECKING:
    from batchgen.manifest.model import Manifest

__all__ = ["FailureReason", "Manifested", "Status", "run_status", "status_json"]


@dataclass(frozen=True, slots=True)
class FailureReason:
    """Failed jobs that share a code, a detail and whether a rerun retries them."""

    code: int | None
    error: str
    retryable: bool
    count: int


@dataclass(frozen=True, slots=True)
class Manifested:
    """The manifest behind a run, as far as it could be found."""

    path: str | None  # as the last run recorded it (or as given)
    recorded_sha256: str | None
    sha256: str | None = None  # of the file now, if it could be loaded
    keys: frozenset[str] | None = None  # its jobs' keys, if it could be loaded
    problem: str | None = None  # why it could not be, if it could not
    name: str | None = None  # the run name
    report: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # its ``report: {rows, columns}``
    # Every job, when asked for (the report places them all): the run's own list, or the
    # manifest's expansion, which gives them again each time it is iterated.
    jobs: Iterable[Job] | None = None

    @property
    def changed(self) -> bool:
        """Whether the file differs from what the last run read."""
        return (
            self.sha256 is not None
            and self.recorded_sha256 is not None
            and self.sha256 != self.recorded_sha256
        )


@dataclass(slots=True)
class Status:
    """An output folder's run, as its ledger tells it at ``now`` (epoch seconds)."""

    out_dir: Path
    now: float
    state: LedgerState
    manifest: Manifested
    running_pid: int | None = None  # the pid of the run going now, if one is
    retention: float = DEFAULT_RETENTION
    margin: float = DEFAULT_MARGIN
    rerun: Counter[str] = field(default_factory=Counter)  # what a rerun would do, by action
    warnings: list[str] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)  # when merged: every folder read
    # Images (relative to OUT; paths when merged) of jobs no longer in the manifest, still
    # under images/: what `batchgen tidy` sets aside. Found when the folder is read.
    removed_images: list[str] = field(default_factory=list)

    # --- jobs by state ----------------------------------------------------------------

    def in_manifest(self) -> list[JobRecord]:
        """The ledger's records of the manifest's jobs (all of them when the manifest is unknown)."""
        keys = self.manifest.keys
        return [r for r in self.state.records.values() if keys is None or r.key in keys]

    @property
    def total(self) -> int | None:
        """Jobs of the manifest, when it is known."""
        return len(self.manifest.keys) if self.manifest.keys is not None else None

    @property
    def completed(self) -> int:
        """Jobs whose last event is ``completed``."""
        return sum(1 for r in self.in_manifest() if r.state == "completed")

    @property
    def failed(self) -> list[JobRecord]:
        """Jobs whose last event is ``failed``."""
        return [r for r in self.in_manifest() if r.state == "failed"]

    @property
    def in_flight(self) -> list[JobRecord]:
        """Jobs submitted and not finished, oldest first."""
        flying = [r for r in self.in_manifest() if r.state == "submitted"]
        return sorted(flying, key=lambda r: r.submitted_at or 0.0)

    @property
    def in_doubt(self) -> list[JobRecord]:
        """Jobs whose last submit may have been paid, not known: sent with no usable answer
        (``uncertain``), or with no answer recorded at all (``submitting``: the run was
        killed, or it is being sent right now)."""
        return [r for r in self.in_manifest() if r.state in ("submitting", "uncertain")]

    @property
    def expired(self) -> int:
        """Jobs whose request expired (404) and that were not submitted again yet."""
        return sum(1 for r in self.in_manifest() if r.state == "expired")

    @property
    def not_started(self) -> int | None:
        """Jobs of the manifest never accepted: the ledger has never seen them, or their submit
        was refused (None when the manifest is unknown)."""
        keys = self.manifest.keys
        if keys is None:
            return None
        refused = sum(1 for r in self.in_manifest() if r.state == "refused")
        return len(keys - self.state.keys()) + refused

    @property
    def removed(self) -> int:
        """Jobs in the ledger that the manifest no longer has."""
        keys = self.manifest.keys
        return 0 if keys is None else len(self.state.keys() - keys)

    def failure_reasons(self) -> list[FailureReason]:
        """Failed jobs grouped by (code, detail, retryable), most frequent first."""
        groups = Counter((r.code, r.error or "unknown error", bool(r.retryable)) for r in self.failed)
        return [FailureReason(c, e, rt, n) for (c, e, rt), n in groups.most_common()]

    # --- runs and speed -----------------------------------------------------------------

    @property
    def runs(self) -> list[RunRecord]:
        """Every run that wrote the ledger, oldest first."""
        return self.state.runs

    @property
    def latest(self) -> RunRecord | None:
        """The latest run (the one going, if any)."""
        return self.state.runs[-1] if self.state.runs else None

    def run_seconds(self, run: RunRecord) -> float:
        """A run's wall time so far (until now if it has not finished)."""
        if run.counts and isinstance(run.counts.get("wall_time"), int | float):
            return float(run.counts["wall_time"])
        end = run.finished_at if run.finished_at is not None else self.now
        return max(0.0, end - run.started_at)

    def images_in(self, run: RunRecord, until: float | None = None) -> int:
        """Images the ledger records as completed during ``run``."""
        end = until if until is not None else (run.finished_at if run.finished_at is not None else self.now)
        return sum(
            1
            for r in self.state.records.values()
            if r.state == "completed" and r.finished_at is not None and run.started_at <= r.finished_at <= end
        )

    @property
    def images_per_minute(self) -> float | None:
        """Images per minute of the latest run, so far."""
        run = self.latest
        if run is None:
            return None
        return per_minute(self.images_in(run), self.run_seconds(run))

    @property
    def wall_time(self) -> float:
        """Wall time of every run added up."""
        return sum(self.run_seconds(run) for run in self.runs)

    @property
    def inference_times(self) -> list[float]:
        """Server inference seconds of every completed image."""
        return [
            r.inference_time
            for r in self.in_manifest()
            if r.state == "completed" and r.inference_time is not None
        ]

    @property
    def inference_p50(self) -> float | None:
        """Median server inference time (s) of the completed images."""
        return percentile(self.inference_times, 50)

    @property
    def inference_p95(self) -> float | None:
        """95th percentile server inference time (s) of the completed images."""
        return percentile(self.inference_times, 95)

    @property
    def overall_images_per_minute(self) -> float | None:
        """Images made per minute of wall time, over every run."""
        return per_minute(self.completed, self.wall_time)

    def _summed(self, name: str) -> int:
        return sum(int(v) for run in self.runs if run.counts and isinstance(v := run.counts.get(name), int))

    @property
    def requests(self) -> int:
        """API requests of every finished run."""
        return self._summed("requests")

    @property
    def rate_limited(self) -> int:
        """429 answers over every finished run."""
        return self._summed("rate_limited")

    @property
    def requests_per_image(self) -> float | None:
        """API requests per image made, over the finished runs."""
        return per_image(self.requests, self._summed("completed"))

    @property
    def last_error(self) -> JobRecord | None:
        """The job that failed last."""
        failed = [r for r in self.failed if r.finished_at is not None]
        return max(failed, key=lambda r: r.finished_at or 0.0) if failed else None

    @property
    def last_stop(self) -> str | None:
        """Why the latest run stopped early (401/403/404, 406, a signal), if it did."""
        run = self.latest
        if run is None or not run.counts:
            return None
        if run.counts.get("fatal"):
            return str(run.counts["fatal"])
        return "interrupted" if run.counts.get("interrupted") else None

    def to_json(self) -> dict[str, Any]:
        """Everything ``batchgen status --json`` prints."""
        latest = self.latest
        in_flight = self.in_flight
        last = self.last_error
        return {
            "out": str(self.out_dir),
            "folders": [str(f) for f in self.folders] or [str(self.out_dir)],
            "now": format_ts(self.now),
            "running": self.running_pid is not None,
            "pid": self.running_pid,
            "runs": len(self.runs),
            "run_started": format_ts(latest.started_at) if latest else None,
            "run_finished": format_ts(latest.finished_at) if latest and latest.finished_at else None,
            "manifest": self.manifest.path,
            "manifest_sha256": self.manifest.recorded_sha256,
            "manifest_changed": self.manifest.changed,
            "manifest_problem": self.manifest.problem,
            "jobs": {
                "total": self.total,
                "completed": self.completed,
                "failed": len(self.failed),
                "in_flight": len(in_flight),
                "not_known_whether_paid": len(self.in_doubt),
                "expired": self.expired,
                "not_started": self.not_started,
                "removed": self.removed,
            },
            "removed_images": list(self.removed_images),
            "failures": [
                {"code": f.code, "error": f.error, "retryable": f.retryable, "jobs": f.count}
                for f in self.failure_reasons()
            ],
            "in_flight": {
                "oldest_age": round(self.now - (in_flight[0].submitted_at or self.now), 1)
                if in_flight
                else None,
                "past_retention": sum(1 for r in in_flight if self.past_retention(r)),
                "retention": self.retention,
            },
            "rerun": dict(self.rerun),
            "images_per_minute": rounded(self.images_per_minute, 2),
            "last_error": None
            if last is None
            else {
                "key": last.key,
                "ts": format_ts(last.finished_at or 0.0),
                "code": last.code,
                "error": last.error,
                "retryable": bool(last.retryable),
            },
            "last_stop": self.last_stop,
            "warnings": self.warnings,
        }

    def past_retention(self, record: JobRecord) -> bool:
        """Whether a job in flight is past ``retention - margin``: a rerun recovers it, not repolls."""
        age = self.now - (record.submitted_at or self.now)
        return age >= self.retention - self.margin


def run_status(
    out_dir: Path,
    *,
    state: LedgerState,
    jobs: Sequence[Job],
    manifest: Manifest | None,
    now: float,
    retention: float = DEFAULT_RETENTION,
    margin: float = DEFAULT_MARGIN,
) -> Status:
    """A run's :class:`Status` at its end, from what it holds: nothing is read from disk.

    ``state`` is the ledger the run replayed, kept current by its writer (its own
    ``run_started`` and every line since folded in), so it says what
    :func:`~batchgen.outcome.read.read_status` would read back; ``jobs`` are the run's
    jobs (its shard's, for a shard), ``manifest`` the one they came from, if any.
    """
    latest = state.runs[-1] if state.runs else None
    found = Manifested(
        latest.manifest if latest else None,
        latest.manifest_sha256 if latest else None,
        sha256=manifest.sha256 if manifest else None,
        keys=frozenset(job.key for job in jobs),
        name=manifest.name if manifest else None,
        report=dict(manifest.report) if manifest else {},
        jobs=jobs,
    )
    status = Status(out_dir, now, state, found, retention=retention, margin=margin)
    status.warnings = list(state.warnings)
    return status


def status_json(status: Status) -> str:
    """``batchgen status --json``: one JSON object (strict JSON, :mod:`batchgen.output.jsontext`)."""
    return dumps(status.to_json(), indent=2)
