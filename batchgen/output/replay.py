"""Replay ``OUT/ledger.jsonl`` into what it says about each job and each run.

A job's state is the last of its ``submitting`` / ``submitted`` / ``completed`` /
``failed`` / ``expired`` events (``cost`` lines only add a price to a request id); the
run events make :attr:`LedgerState.runs`, one :class:`RunRecord` per run. Replay
(:func:`replay`) is tolerant: a half-written last line (the process was killed
mid-write) is ignored, and the next writer truncates it away before appending
(:meth:`~batchgen.output.ledger.LedgerWriter.open`); a corrupt line elsewhere is skipped
and reported with its line number in :attr:`LedgerState.warnings`, never a traceback.

Jobs in the ledger that are no longer in the manifest are left alone and reported
(:meth:`LedgerState.removed`).

Memory: a 100,000-job ledger is about 130 MB of text, so replay streams it a line at a
time and keeps per job only what the resume rule, ``batchgen status`` and the report
read: the body of a submit only while that submit is in doubt, the parameters and
labels only when asked for (``details``: a report whose manifest cannot be loaded), and
every repeated string (states, steps, error details, prices) once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.errors import UsageError
from batchgen.output.layout import IMAGES_DIR
from batchgen.output.ledger import COST_EVENT, HISTORY_EVENT, JOB_EVENTS, RUN_EVENTS, JobState, parse_ts

__all__ = ["HistoryRead", "JobRecord", "LedgerState", "RunRecord", "replay"]


@dataclass(slots=True)
class JobRecord:
    """What the ledger says about one job: its last state and the facts recorded so far."""

    key: str
    state: JobState
    index: int | None = None
    request_id: str | None = None
    submitted_at: float | None = None  # epoch seconds of the last ``submitted``
    finished_at: float | None = None  # epoch seconds of ``completed`` / ``failed``
    seed: int | None = None
    params: dict[str, Any] | None = None  # as sent; kept only by a replay with ``details``
    labels: dict[str, Any] | None = None  # kept only by a replay with ``details``
    file: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    mtime_ns: int | None = None  # the file's modification time when ``completed`` was written
    inference_time: float | None = None
    code: int | None = None
    error: str | None = None
    retryable: bool | None = None
    step: str | None = None  # where a ``failed`` job failed
    # The last ``submitting``'s body and time, while its submit is in doubt (the last event
    # is ``submitting`` or ``uncertain``): what the request history is searched for.
    body: dict[str, Any] | None = None
    doubt: str | None = None  # ``uncertain``: why its submit's outcome is not known
    intent_at: float | None = None
    attempts: int = 0  # number of ``submitted`` events: > 1 means it was resubmitted
    expirations: int = 0  # number of ``expired`` events


@dataclass(slots=True)
class RunRecord:
    """One run that wrote the ledger: its ``run_started`` line and, once it ended, ``run_finished``."""

    started_at: float
    manifest: str | None = None
    manifest_sha256: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    finished_at: float | None = None
    counts: dict[str, Any] | None = None  # the ``run_finished`` figures


@dataclass(frozen=True, slots=True)
class HistoryRead:
    """A ``history_read`` line: the request history of ``model`` was read back to requests
    created at ``since``, as it stood at ``until`` (epoch seconds)."""

    model: str
    since: float
    until: float


@dataclass(slots=True)
class LedgerState:
    """The ledger replayed: one record per job key, the runs in order, and what could not be read."""

    records: dict[str, JobRecord] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)  # one per ``run_started``, oldest first
    lines: int = 0  # complete lines read
    requests: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (job key, submitted ts)
    costs: dict[str, tuple[float, str | None]] = field(default_factory=dict)  # id -> (USD, status)
    orphans: dict[str, str] = field(
        default_factory=dict
    )  # paid, held by no job: id -> the job key of its body
    history_reads: list[HistoryRead] = field(default_factory=list)  # the history as far as runs read it
    details: bool = False  # keep each job's parameters and labels (see replay)
    _strings: dict[Any, Any] = field(default_factory=dict, repr=False)  # one copy of each repeated value

    @property
    def request_ids(self) -> set[str]:
        """Every request id the ledger records as accepted."""
        return set(self.requests)

    def orphan_costs(self) -> dict[str, float]:
        """USD of each orphan request recorded (paid, held by no job)."""
        return {rid: self.costs[rid][0] for rid in self.orphans if rid in self.costs}

    def keys(self) -> set[str]:
        """The keys of every job the ledger knows."""
        return set(self.records)

    def get(self, key: str) -> JobRecord | None:
        """The record of ``key``, or None for a job the ledger has never seen."""
        return self.records.get(key)

    def apply(self, event: dict[str, Any], *, where: str = "this run") -> None:
        """Fold one more line's event into the state, as replay does (the writer's
        ``on_write`` keeps a run's state current without reading the file back)."""
        self.lines += 1
        _apply(self, where, event)

    def shared(self, value: Any) -> Any:
        """``value``, or the equal value seen before: states, steps, error details and prices
        repeat across thousands of jobs, and each copy would cost its bytes again."""
        if len(self._strings) >= _SHARED_MAX:
            return value
        return self._strings.setdefault(value, value)

    def removed(self, manifest_keys: Iterable[str]) -> list[JobRecord]:
        """Records of jobs no longer in the manifest (left alone, only reported), by index."""
        keep = set(manifest_keys)
        gone = [r for k, r in self.records.items() if k not in keep]
        return sorted(gone, key=lambda r: (r.index is None, r.index or 0, r.key))


_SHARED_MAX = 4096  # distinct repeated values kept (error details, prices); more are not shared

# Types of the job-event fields replay relies on (null is always allowed).
_FIELD_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "request_id": (str, "a string"),
    "index": (int, "an integer"),
    "seed": (int, "an integer"),
    "params": (dict, "an object"),
    "labels": (dict, "an object"),
    "file": (str, "a string"),
    "sha256": (str, "a string"),
    "bytes": (int, "an integer"),
    "mtime_ns": (int, "an integer"),
    "inference_time": ((int, float), "a number"),
    "code": (int, "an integer"),
    "error": (str, "a string"),
    "retryable": (bool, "true or false"),
    "body": (dict, "an object"),
    "step": (str, "a string"),
    "usd": ((int, float), "a number"),
}


def _has_type(value: object, expected: type | tuple[type, ...]) -> bool:
    # JSON true/false load as bool, which is an int subclass: never let them count as numbers.
    if isinstance(value, bool):
        return expected is bool
    return isinstance(value, expected)


def _inside_images(file: object) -> bool:
    """Whether a ledger ``file`` is a plain relative path under ``images/`` (no ``..``)."""
    if not isinstance(file, str) or file.startswith("/") or "\\" in file or "\0" in file:
        return False
    # The parts PurePosixPath would see (empty and "." ones dropped), without building one:
    # this runs for every completed line, 100,000 of them in a big ledger.
    parts = [part for part in file.split("/") if part and part != "."]
    return len(parts) >= 2 and parts[0] == IMAGES_DIR and ".." not in parts


# Each job state once (a record holds the constant, not the copy each line's JSON made).
_STATES: dict[str, JobState] = {name: name for name in JOB_EVENTS}  # type: ignore[misc]


def _apply(state: LedgerState, where: str, obj: dict[str, Any]) -> None:
    """Fold one event into ``state``; a malformed event becomes a warning."""
    event = obj.get("event")
    if event in RUN_EVENTS:
        _apply_run(state, where, event, obj)
        return
    if event == COST_EVENT:
        request_id, usd = obj.get("request_id"), obj.get("usd")
        if isinstance(request_id, str) and isinstance(usd, int | float) and not isinstance(usd, bool):
            status = obj.get("status")
            state.costs[request_id] = state.shared((float(usd), status if isinstance(status, str) else None))
            key = obj.get("key")
            if obj.get("orphan") is True and isinstance(key, str):
                state.orphans[request_id] = key
        else:
            state.warnings.append(f"{where}: cost event without request_id and usd, line skipped")
        return
    if event == HISTORY_EVENT:
        _apply_history_read(state, where, obj)
        return
    if event not in JOB_EVENTS:
        state.warnings.append(f"{where}: unknown event {event!r}, line skipped")
        return
    key = obj.get("key")
    if not isinstance(key, str) or not key:
        state.warnings.append(f"{where}: {event} event without a job key, line skipped")
        return
    try:
        ts = parse_ts(obj["ts"])
    except (KeyError, TypeError, ValueError):
        state.warnings.append(f"{where}: {event} event without a valid ts, line skipped")
        return
    for name, value in obj.items():
        expected = _FIELD_TYPES.get(name)
        if expected is not None and value is not None and not _has_type(value, expected[0]):
            state.warnings.append(f"{where}: {event} field {name!r} should be {expected[1]}, line skipped")
            return
    if event == "completed" and not _inside_images(obj.get("file")):
        # Only batchgen writes the ledger, and only paths it made; anything else (an edited
        # or planted line) must not make a job count as done.
        state.warnings.append(
            f"{where}: completed file {obj.get('file')!r} is not a path inside {IMAGES_DIR}/, line skipped"
        )
        return
    record = state.records.get(key)
    if record is None:
        record = state.records[key] = JobRecord(key=key, state=_STATES[event])
    record.state = _STATES[event]
    if event == "submitting":
        record.body = obj.get("body")
        record.intent_at = ts
        record.doubt = None
        if "index" in obj:
            record.index = obj["index"]
        return
    if event == "uncertain":
        # The submit of the last ``submitting`` line got no usable answer: it may be paid.
        error = obj.get("error")
        record.doubt = state.shared(error) if isinstance(error, str) else "no usable answer"
        return
    # No submit of this job is in doubt any more: what the history would be searched for goes.
    record.body = record.intent_at = record.doubt = None
    if event == "refused":
        # The last submit was answered with a refusal (or never left): nothing in doubt.
        return
    if obj.get("request_id") is not None or event != "failed":
        record.request_id = obj.get("request_id", record.request_id)
    if event == "submitted" and isinstance(record.request_id, str):
        state.requests[record.request_id] = (record.key, ts)
    if "seed" in obj:
        record.seed = obj["seed"]
    if "index" in obj:
        record.index = obj["index"]
    if event == "submitted":
        record.submitted_at = ts
        record.attempts += 1
        if state.details:
            record.params = obj.get("params", record.params)
            record.labels = obj.get("labels", record.labels)
        # A new attempt: the outcome of an earlier one no longer describes the job.
        record.finished_at = None
        record.file = record.sha256 = None
        record.bytes = record.mtime_ns = None
        record.inference_time = None
        record.code = None
        record.error = None
        record.retryable = None
    elif event == "completed":
        _answered_cost(state, record.request_id, obj.get("usd"), "COMPLETED")
        record.finished_at = ts
        record.file = obj.get("file")
        record.sha256 = obj.get("sha256")
        record.bytes = obj.get("bytes")
        record.mtime_ns = obj.get("mtime_ns")
        record.inference_time = obj.get("inference_time")
    elif event == "failed":
        _answered_cost(state, record.request_id, obj.get("usd"), "FAILED")
        record.finished_at = ts
        record.code = obj.get("code")
        error = obj.get("error")
        record.error = state.shared(error) if isinstance(error, str) else None
        record.retryable = bool(obj.get("retryable", False))
        step = obj.get("step")
        record.step = state.shared(step) if isinstance(step, str) else None
    else:  # expired
        record.expirations += 1


def _answered_cost(state: LedgerState, request_id: str | None, usd: object, status: str) -> None:
    """A ``completed`` / ``failed`` line's ``usd``: what the API's answer said the request cost."""
    if request_id is not None and isinstance(usd, int | float) and not isinstance(usd, bool):
        state.costs.setdefault(request_id, state.shared((float(usd), status)))


def _apply_history_read(state: LedgerState, where: str, obj: dict[str, Any]) -> None:
    """Fold a ``history_read`` event: how far a run read the request history of one model."""
    model = obj.get("model")
    try:
        since, until = parse_ts(obj["since"]), parse_ts(obj["until"])
    except (KeyError, TypeError, ValueError):
        model = None
    if not isinstance(model, str):
        state.warnings.append(f"{where}: history_read event without model, since and until, line skipped")
        return
    state.history_reads.append(HistoryRead(model, since, until))


def _apply_run(state: LedgerState, where: str, event: str, obj: dict[str, Any]) -> None:
    """Fold a ``run_started`` / ``run_finished`` event into the run history."""
    try:
        ts = parse_ts(obj["ts"])
    except (KeyError, TypeError, ValueError):
        state.warnings.append(f"{where}: {event} event without a valid ts, line skipped")
        return
    if event == "run_started":
        settings = obj.get("settings")
        text = {
            k: v if isinstance(v := obj.get(k), str) else None
            for k in ("manifest", "manifest_sha256", "version")
        }
        state.runs.append(
            RunRecord(
                started_at=ts,
                manifest=text["manifest"],
                manifest_sha256=text["manifest_sha256"],
                settings=settings if isinstance(settings, dict) else {},
                version=text["version"],
            )
        )
    elif state.runs and state.runs[-1].finished_at is None:
        run = state.runs[-1]
        run.finished_at = ts
        run.counts = {k: v for k, v in obj.items() if k not in ("event", "key", "ts")}


def replay(path: Path, *, details: bool = False) -> LedgerState:
    """Read a ledger into a :class:`LedgerState`; a missing file is an empty ledger.

    Never raises on bad content: a half-written last line is ignored, any other line
    that is not a JSON object (or not a valid event) is skipped and reported in
    ``warnings`` as ``PATH:LINE: what``. A ledger that exists but cannot be read is a
    :class:`~batchgen.errors.UsageError`. The file is read a line at a time; ``details``
    also keeps each job's parameters and labels (:attr:`JobRecord.params`), which only a
    report without its manifest needs.
    """
    state = LedgerState(details=details)
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return state
    except OSError as exc:
        # Not an empty ledger: reading it as one would resubmit (and pay for) every job.
        raise UsageError(f"cannot read the ledger {path}: {exc.strerror or exc}") from None
    name = str(path)
    with file:
        number = 0
        try:
            for raw in file:
                number += 1
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except (ValueError, RecursionError):  # RecursionError: nested thousands deep, not ours
                    obj = None
                if not raw.endswith(b"\n"):  # the last line, torn unless its object is whole
                    if isinstance(obj, dict):
                        # The object is whole; only its newline was lost. Keep the event.
                        state.lines += 1
                        _apply(state, f"{name}:{number}", obj)
                    else:
                        state.warnings.append(
                            f"{name}:{number}: incomplete last line ignored"
                            " (a run was killed while writing it)"
                        )
                    continue
                if not isinstance(obj, dict):
                    state.warnings.append(f"{name}:{number}: not a JSON object, line skipped")
                    continue
                state.lines += 1
                _apply(state, f"{name}:{number}", obj)
        except OSError as exc:
            raise UsageError(f"cannot read the ledger {path}: {exc.strerror or exc}") from None
    return state
