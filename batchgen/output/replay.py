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
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
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
    params: dict[str, Any] | None = None
    labels: dict[str, Any] | None = None
    file: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    inference_time: float | None = None
    code: int | None = None
    error: str | None = None
    retryable: bool | None = None
    step: str | None = None  # where a ``failed`` job failed
    body: dict[str, Any] | None = None  # the body of the last ``submitting``
    doubt: str | None = None  # ``uncertain``: why its submit's outcome is not known
    intent_at: float | None = None  # epoch seconds of the last ``submitting``
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
    orphans: dict[str, str] = field(default_factory=dict)  # paid, held by no job: id -> the job key of its body
    history_reads: list[HistoryRead] = field(default_factory=list)  # the history as far as runs read it

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

    def removed(self, manifest_keys: Iterable[str]) -> list[JobRecord]:
        """Records of jobs no longer in the manifest (left alone, only reported), by index."""
        keep = set(manifest_keys)
        gone = [r for k, r in self.records.items() if k not in keep]
        return sorted(gone, key=lambda r: (r.index is None, r.index or 0, r.key))


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
    if not isinstance(file, str):
        return False
    path = PurePosixPath(file)
    return (
        not path.is_absolute()
        and "\\" not in file
        and "\0" not in file
        and len(path.parts) >= 2
        and path.parts[0] == IMAGES_DIR
        and ".." not in path.parts
    )


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
            state.costs[request_id] = (float(usd), status if isinstance(status, str) else None)
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
        record = state.records[key] = JobRecord(key=key, state=event)
    record.state = event
    if event == "submitting":
        record.body = obj.get("body")
        record.intent_at = ts
        record.doubt = None
        if "index" in obj:
            record.index = obj["index"]
        return
    if event == "refused":
        # The last submit was answered with a refusal (or never left): nothing in doubt.
        record.doubt = None
        return
    if event == "uncertain":
        # The submit of the last ``submitting`` line got no usable answer: it may be paid.
        error = obj.get("error")
        record.doubt = error if isinstance(error, str) else "no usable answer"
        return
    if obj.get("request_id") is not None or event != "failed":
        record.request_id = obj.get("request_id", record.request_id)
    if event == "submitted" and isinstance(record.request_id, str):
        state.requests[record.request_id] = (key, ts)
    if "seed" in obj:
        record.seed = obj["seed"]
    if "index" in obj:
        record.index = obj["index"]
    if event == "submitted":
        record.submitted_at = ts
        record.attempts += 1
        record.params = obj.get("params", record.params)
        record.labels = obj.get("labels", record.labels)
        # A new attempt: the outcome of an earlier one no longer describes the job.
        record.finished_at = None
        record.file = record.sha256 = None
        record.bytes = None
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
        record.inference_time = obj.get("inference_time")
    elif event == "failed":
        _answered_cost(state, record.request_id, obj.get("usd"), "FAILED")
        record.finished_at = ts
        record.code = obj.get("code")
        record.error = obj.get("error")
        record.retryable = bool(obj.get("retryable", False))
        record.step = obj.get("step")
    else:  # expired
        record.expirations += 1


def _answered_cost(state: LedgerState, request_id: str | None, usd: object, status: str) -> None:
    """A ``completed`` / ``failed`` line's ``usd``: what the API's answer said the request cost."""
    if request_id is not None and isinstance(usd, int | float) and not isinstance(usd, bool):
        state.costs.setdefault(request_id, (float(usd), status))


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


def replay(path: Path) -> LedgerState:
    """Read a ledger into a :class:`LedgerState`; a missing file is an empty ledger.

    Never raises on bad content: a half-written last line is ignored, any other line
    that is not a JSON object (or not a valid event) is skipped and reported in
    ``warnings`` as ``PATH:LINE: what``. A ledger that exists but cannot be read is a
    :class:`~batchgen.errors.UsageError`.
    """
    state = LedgerState()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return state
    except OSError as exc:
        # Not an empty ledger: reading it as one would resubmit (and pay for) every job.
        raise UsageError(f"cannot read the ledger {path}: {exc.strerror or exc}") from None
    if not data:
        return state
    torn = not data.endswith(b"\n")
    lines = data.split(b"\n")
    if not torn:
        lines.pop()  # the empty string after the final newline
    for number, raw in enumerate(lines, start=1):
        last = number == len(lines)
        where = f"{path}:{number}"
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested thousands deep, not ours
            obj = None
        if torn and last:
            if isinstance(obj, dict):
                # The object is whole; only its newline was lost. Keep the event.
                state.lines += 1
                _apply(state, where, obj)
            else:
                state.warnings.append(
                    f"{where}: incomplete last line ignored (a run was killed while writing it)"
                )
            continue
        if not isinstance(obj, dict):
            state.warnings.append(f"{where}: not a JSON object, line skipped")
            continue
        state.lines += 1
        _apply(state, where, obj)
    return state

