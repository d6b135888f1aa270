"""What an output folder says about its run, read-only: ``batchgen status`` and the report's figures.

:func:`read_status` replays ``OUT/ledger.jsonl`` (and loads the manifest the last run
recorded, to know the jobs not started yet) without taking the output lock and without
writing anything, so it is safe while a run is going: a half-written last line is simply
not counted yet. Every figure is derived here from the ledger, never stored:

- jobs by state: completed (image on disk as recorded), failed (by reason: HTTP code
  and the server's detail, permanent or retryable), in flight (submitted, not finished;
  with their age against the API's 1-hour retention), expired (about to be resubmitted),
  not started (in the manifest, never submitted; known only when the manifest is);
- what a rerun would do with each job, by :func:`batchgen.output.resume.decide` (the one
  resume rule): skip, repoll, resubmit, retry, submit;
- the runs, whether one is going now (the pid in ``OUT/.lock`` is alive and its run has
  no ``run_finished``), images per minute of the latest run, the last error;
- for the report: wall time, images per minute, inference p50 / p95, requests per image
  and 429s over every run.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.errors import BatchgenError
from batchgen.manifest.job import Job
from batchgen.outcome.summary import format_duration, percentile
from batchgen.output.layout import IMAGES_DIR, LEDGER_NAME, LOCK_NAME
from batchgen.output.ledger import format_ts
from batchgen.output.replay import JobRecord, LedgerState, RunRecord, replay
from batchgen.output.resume import DEFAULT_MARGIN, DEFAULT_RETENTION, RerunVerb, Submit, decide, rerun_verb

__all__ = ["FailureReason", "Manifested", "Status", "format_status", "merge_status", "read_status"]

_TORN = "incomplete last line ignored"


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
    report: Mapping[str, str] = field(default_factory=dict)  # its ``report: {rows, columns}``
    jobs: tuple[Job, ...] | None = None  # every job, when asked for (the report places them all)

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

    # --- jobs by state ----------------------------------------------------------------

    def _in_manifest(self) -> list[JobRecord]:
        keys = self.manifest.keys
        return [r for r in self.state.records.values() if keys is None or r.key in keys]

    @property
    def total(self) -> int | None:
        """Jobs of the manifest, when it is known."""
        return len(self.manifest.keys) if self.manifest.keys is not None else None

    @property
    def completed(self) -> int:
        """Jobs whose last event is ``completed``."""
        return sum(1 for r in self._in_manifest() if r.state == "completed")

    @property
    def failed(self) -> list[JobRecord]:
        """Jobs whose last event is ``failed``."""
        return [r for r in self._in_manifest() if r.state == "failed"]

    @property
    def in_flight(self) -> list[JobRecord]:
        """Jobs submitted and not finished, oldest first."""
        flying = [r for r in self._in_manifest() if r.state == "submitted"]
        return sorted(flying, key=lambda r: r.submitted_at or 0.0)

    @property
    def expired(self) -> int:
        """Jobs whose request expired (404) and that were not submitted again yet."""
        return sum(1 for r in self._in_manifest() if r.state == "expired")

    @property
    def not_started(self) -> int | None:
        """Jobs of the manifest the ledger has never seen (None when the manifest is unknown)."""
        keys = self.manifest.keys
        return None if keys is None else len(keys - self.state.keys())

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
        seconds = self.run_seconds(run)
        return self.images_in(run) * 60 / seconds if seconds > 0 else None

    @property
    def wall_time(self) -> float:
        """Wall time of every run added up."""
        return sum(self.run_seconds(run) for run in self.runs)

    @property
    def inference_times(self) -> list[float]:
        """Server inference seconds of every completed image."""
        return [
            r.inference_time
            for r in self._in_manifest()
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
        seconds = self.wall_time
        return self.completed * 60 / seconds if seconds > 0 else None

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
        made = self._summed("completed")
        return self.requests / made if made else None

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
                "expired": self.expired,
                "not_started": self.not_started,
                "removed": self.removed,
            },
            "failures": [
                {"code": f.code, "error": f.error, "retryable": f.retryable, "jobs": f.count}
                for f in self.failure_reasons()
            ],
            "in_flight": {
                "oldest_age": round(self.now - (in_flight[0].submitted_at or self.now), 1)
                if in_flight
                else None,
                "past_retention": sum(1 for r in in_flight if self._past(r)),
                "retention": self.retention,
            },
            "rerun": dict(self.rerun),
            "images_per_minute": _round(self.images_per_minute),
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

    def _past(self, record: JobRecord) -> bool:
        age = self.now - (record.submitted_at or self.now)
        return age >= self.retention - self.margin


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# --- reading ----------------------------------------------------------------------------


def _running_pid(out_dir: Path, latest: RunRecord | None) -> int | None:
    """The pid of the run holding OUT, without touching the lock: its pid file, alive, unfinished run."""
    if latest is None or latest.finished_at is not None:
        return None
    try:
        text = (out_dir / LOCK_NAME).read_text("ascii").strip()
        pid = int(text)
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return pid


def _manifest(
    path: str | None,
    recorded_sha256: str | None,
    *,
    keep_jobs: bool = False,
    shard: object = None,
    max_jobs: object = None,
) -> Manifested:
    """Load the manifest to learn its jobs' keys (and the jobs); say why not when it cannot be.

    ``shard`` is what the run recorded (``"K/N"``): only that shard's jobs are the run's;
    ``max_jobs`` is the job cap the run recorded (the default cap if none).
    """
    if path is None:
        return Manifested(None, recorded_sha256, problem="no manifest recorded (jobs given from Python)")
    from batchgen.manifest.pipeline import DEFAULT_MAX_JOBS, manifest_jobs
    from batchgen.manifest.shard import Shard

    if not Path(path).is_file():
        return Manifested(path, recorded_sha256, problem=f"{path} not found (pass --manifest)")
    cap = max_jobs if isinstance(max_jobs, int) and not isinstance(max_jobs, bool) else DEFAULT_MAX_JOBS
    try:
        selected = Shard.parse(shard) if isinstance(shard, str) else None
    except ValueError as exc:
        return Manifested(path, recorded_sha256, problem=f"the recorded shard: {exc}")
    try:
        found = manifest_jobs(path, max_jobs=cap, shard=selected)
        jobs = tuple(found)
        manifest = found.manifest
    except BatchgenError as exc:
        return Manifested(path, recorded_sha256, problem=f"{path} does not load: {str(exc).splitlines()[0]}")
    return Manifested(
        path,
        recorded_sha256,
        sha256=manifest.sha256,
        keys=frozenset(job.key for job in jobs),
        name=manifest.name,
        report=dict(manifest.report),
        jobs=jobs if keep_jobs else None,
    )


def read_status(
    out_dir: Path,
    *,
    manifest: str | None = None,
    now: float | None = None,
    retention: float = DEFAULT_RETENTION,
    margin: float = DEFAULT_MARGIN,
    retry_failed: bool = False,
    keep_jobs: bool = False,
) -> Status:
    """The status of the run in ``out_dir``, read without the lock.

    ``manifest`` overrides the path the last run recorded. ``now`` is the wall clock
    (epoch seconds). ``keep_jobs`` keeps the manifest's jobs in ``status.manifest.jobs``.
    Raises FileNotFoundError when ``out_dir`` has no ledger.
    """
    ledger = out_dir / LEDGER_NAME
    if not ledger.is_file():
        raise FileNotFoundError(f"{ledger}: no ledger (is {out_dir} the output folder of a run?)")
    now = time.time() if now is None else now
    state = replay(ledger)
    latest = state.runs[-1] if state.runs else None
    pid = _running_pid(out_dir, latest)
    recorded = latest.manifest if latest else None
    found = _manifest(
        manifest or recorded,
        latest.manifest_sha256 if latest else None,
        keep_jobs=keep_jobs,
        shard=latest.settings.get("shard") if latest else None,
        max_jobs=latest.settings.get("max_jobs") if latest else None,
    )
    status = Status(out_dir, now, state, found, running_pid=pid, retention=retention, margin=margin)
    # A run appending right now may have half a line out: that is not damage.
    status.warnings = [w for w in state.warnings if not (pid is not None and _TORN in w)]
    if found.problem:
        status.warnings.append(f"manifest: {found.problem}; jobs not started are not counted")
    elif found.changed:
        status.warnings.append(
            "the manifest changed since the last run started: counts are for it as it is now"
        )
    outside: list[str] = []
    for record in status._in_manifest():
        decision = decide(
            record, out_dir=out_dir, now=now, retention=retention, margin=margin, retry_failed=retry_failed
        )
        status.rerun[rerun_verb(decision)] += 1
        if isinstance(decision, Submit) and decision.reason == "file-outside":
            outside.append(record.file or "")
    status.warnings.extend(_outside_warnings(out_dir, outside))
    new = len(found.keys - state.keys()) if found.keys is not None else 0
    if new:
        status.rerun["submit"] += new
    return status


def merge_status(statuses: list[Status]) -> Status:
    """Several output folders as one (the shards of a batch): jobs, failures, runs, requests
    and what a rerun would do, added up; a key in two folders counts once (the later run's).

    Figures of time (images per minute of "the latest run") are over the union of the
    runs: the latest to start, counting images any folder made while it ran.
    """
    if len(statuses) == 1:
        return statuses[0]
    first = statuses[0]
    state = LedgerState()
    keys: set[str] | None = set()
    warnings: list[str] = []
    rerun: Counter[str] = Counter()
    for status in statuses:
        state.records.update(status.state.records)
        state.runs.extend(status.state.runs)
        state.lines += status.state.lines
        state.requests.update(status.state.requests)
        state.costs.update(status.state.costs)
        rerun.update(status.rerun)
        warnings.extend(f"{status.out_dir}: {w}" for w in status.warnings)
        keys = None if keys is None or status.manifest.keys is None else keys | status.manifest.keys
    state.runs.sort(key=lambda run: run.started_at)
    paths = {s.manifest.path for s in statuses}
    sha = {s.manifest.recorded_sha256 for s in statuses}
    if len(sha) > 1:
        warnings.append("the folders were run from different manifests (or versions of one)")
    manifest = Manifested(
        first.manifest.path if len(paths) == 1 else None,
        first.manifest.recorded_sha256 if len(sha) == 1 else None,
        sha256=first.manifest.sha256,
        keys=frozenset(keys) if keys is not None else None,
        problem=next((s.manifest.problem for s in statuses if s.manifest.problem), None),
        name=first.manifest.name,
        report=first.manifest.report,
    )
    running = next((s.running_pid for s in statuses if s.running_pid is not None), None)
    return Status(
        Path(f"{len(statuses)} folders"),
        max(s.now for s in statuses),
        state,
        manifest,
        running_pid=running,
        retention=first.retention,
        margin=first.margin,
        rerun=rerun,
        warnings=warnings,
        folders=[s.out_dir for s in statuses],
    )


_NAMED = 10  # files named one by one in a warning; the rest are counted


def _outside_warnings(out_dir: Path, files: list[str]) -> list[str]:
    """Say which recorded images lead outside ``OUT/images`` (a symlink): not counted as done."""
    warnings = [
        f"{file}: leads outside {out_dir / IMAGES_DIR} (a symlink?): not this run's image;"
        " a rerun makes it again"
        for file in sorted(files)[:_NAMED]
    ]
    if len(files) > _NAMED:
        warnings.append(f"... and {len(files) - _NAMED} more images that lead outside {out_dir / IMAGES_DIR}")
    return warnings


# --- printing -----------------------------------------------------------------------------

_RERUN_WORDS: tuple[tuple[RerunVerb, str], ...] = (
    ("skip", "skip {} done"),
    ("repoll", "repoll {} in flight"),
    ("reconcile", "look up {} whose submit answer was lost in the request history"),
    ("recover", "fetch {} images not saved from their requests (result or history) before paying again"),
    ("resubmit", "resubmit {} (expired, or image missing or not in the folder)"),
    ("retry", "retry {} failed"),
    ("skip failed", "skip {} failed permanently (--retry-failed retries them)"),
    ("submit", "submit {} not started"),
)


def format_status(status: Status) -> str:
    """The text ``batchgen status`` prints."""
    s = status
    latest = s.latest
    lines: list[str] = []
    if s.folders:
        lines.append(f"{len(s.folders)} folders, merged: {', '.join(map(str, s.folders))}")
    if latest is None:
        lines.append(f"{s.out_dir}: no run has started yet")
    elif s.running_pid is not None:
        lines.append(
            f"{s.out_dir}: run in progress (pid {s.running_pid}), started "
            f"{format_duration(s.now - latest.started_at)} ago; {len(s.runs)} run(s) in the ledger"
        )
    elif latest.finished_at is None:
        lines.append(
            f"{s.out_dir}: the last run (started {format_duration(s.now - latest.started_at)} ago) "
            "ended without finishing (killed?); rerun the same command to go on"
        )
    else:
        lines.append(
            f"{s.out_dir}: not running; last run finished {format_duration(s.now - latest.finished_at)} ago"
            f" after {format_duration(s.run_seconds(latest))}; {len(s.runs)} run(s) in the ledger"
        )
    m = s.manifest
    if m.path:
        sha = (m.recorded_sha256 or "?")[:12]
        lines.append(f"manifest: {m.path} (sha256 {sha}{', changed since' if m.changed else ''})")
    total = s.total
    lines.append(f"jobs: {total if total is not None else 'unknown'}")
    in_flight = s.in_flight
    failed = s.failed
    permanent = sum(1 for r in failed if not r.retryable)
    lines.append(f"  completed    {s.completed}")
    lines.append(
        f"  failed       {len(failed)}"
        + (f" ({permanent} permanent, {len(failed) - permanent} retryable)" if failed else "")
    )
    for reason in s.failure_reasons()[:10]:
        code = reason.code if reason.code is not None else "-"
        kind = "retryable" if reason.retryable else "permanent"
        lines.append(f"    {reason.count} x {code} {kind}: {_one_line(reason.error)}")
    if len(s.failure_reasons()) > 10:
        lines.append(f"    ... {len(s.failure_reasons()) - 10} more reasons (--json lists all)")
    flight = f"  in flight    {len(in_flight)}"
    if in_flight:
        oldest = s.now - (in_flight[0].submitted_at or s.now)
        past = sum(1 for r in in_flight if s._past(r))
        flight += (
            f" (oldest submitted {format_duration(oldest)} ago; results are kept "
            f"{format_duration(s.retention)} after submission"
            + (
                f"; {past} past {format_duration(s.retention - s.margin)}: "
                "a rerun asks their requests, then the history, before paying again"
                if past
                else ""
            )
            + ")"
        )
    lines.append(flight)
    if s.expired:
        lines.append(f"  expired      {s.expired} (resubmitted next)")
    not_started = s.not_started
    lines.append(f"  not started  {not_started if not_started is not None else 'unknown'}")
    if s.removed:
        lines.append(f"  {s.removed} jobs in the ledger are no longer in the manifest (left alone)")
    ipm = s.images_per_minute
    if latest is not None:
        which = "this run" if s.running_pid is not None else "last run"
        lines.append(f"images/min ({which}): {'n/a' if ipm is None else f'{ipm:.1f}'}")
    last = s.last_error
    if last is not None:
        code = last.code if last.code is not None else "-"
        lines.append(
            f"last error: {format_duration(s.now - (last.finished_at or s.now))} ago, job {last.key[:12]}: "
            f"{code} {_one_line(last.error or 'unknown error')}"
        )
    if s.last_stop:
        lines.append(f"last run stopped: {s.last_stop}")
    plan = ", ".join(words.format(s.rerun[k]) for k, words in _RERUN_WORDS if s.rerun.get(k))
    prefix = "if this run stopped now, a rerun would" if s.running_pid is not None else "a rerun would"
    lines.append(f"{prefix}: {plan or 'do nothing'}")
    lines.extend(f"warning: {w}" for w in s.warnings)
    return "\n".join(lines)


def _one_line(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def status_json(status: Status) -> str:
    """``batchgen status --json``: one JSON object."""
    return json.dumps(status.to_json(), ensure_ascii=False, indent=2)
