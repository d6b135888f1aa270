"""The run ledger ``OUT/ledger.jsonl``: one writer, replay, the resume rule, the output lock.

Format
------
UTF-8 JSON Lines: one JSON object per line, appended and flushed (and fsync'ed) the
moment the event happens, never batched until the end. Every line has

- ``event``: what happened (below);
- ``key``: the job's key (the sha256 hex of :func:`batchgen.manifest.job.job_key`), or ``""``
  (or a run id) for run-level events;
- ``ts``: when, ISO-8601 UTC with milliseconds, e.g. ``"2026-11-24T03:25:07.412Z"``.

Events and their further fields:

=================  =========================================================================
``run_started``    ``manifest`` (absolute path), ``manifest_sha256``, ``settings``, ``version``
``submitting``     ``index``, ``body`` (the exact JSON body about to be POSTed); written
                   and flushed before the request leaves, so a run killed before the
                   answer came back knows what may have been paid for
``submitted``      ``request_id``, ``index``, ``seed``, ``params`` (as sent), ``labels``;
                   written as soon as the API accepted the job, before polling starts;
                   ``recovered: true`` when the request id was found again in the
                   account's request history after a ``submitting`` with no answer
``completed``      ``request_id``, ``seed``, ``inference_time`` (server seconds),
                   ``file`` (path relative to OUT, e.g. ``images/cat.png``), ``sha256``,
                   ``bytes``
``failed``         ``request_id`` (or null when the submit itself was refused), ``seed``,
                   ``code`` (HTTP status or null), ``error`` (the detail), ``retryable``,
                   ``step`` (where it failed: submit, status, result or download)
``cost``           ``request_id``, ``usd``, ``status``: what the request cost and how it
                   ended, from the request history (written at the end of a run)
``expired``        ``request_id``: that request is past retention or unknown (404); the
                   job is about to be resubmitted
``run_finished``   the run's counts
=================  =========================================================================

The API key is never written: the writer is never given it.

A job's state is the last of its ``submitting`` / ``submitted`` / ``completed`` /
``failed`` / ``expired`` events (``cost`` lines only add a price to a request id); the
run events make :attr:`LedgerState.history`, one :class:`RunRecord` per run. Replay
(:func:`replay`) is tolerant: a half-written last line (the process was killed
mid-write) is ignored, and the next writer truncates it away before appending
(:meth:`LedgerWriter.open`); a corrupt line elsewhere is skipped and reported with its
line number in :attr:`LedgerState.warnings`, never a traceback.

Resume rules (:func:`decide`, the one place they live)
------------------------------------------------------
For each job of the manifest, by its key:

- not in the ledger: submit (``new``);
- ``submitting`` (killed between the POST and its answer): look for the request in the
  account's request history before anything is submitted (``Reconcile``);
- ``completed`` and ``OUT/<file>`` exists with the recorded sha256: skip; a ``file``
  that resolves outside ``OUT/images`` (through a symlink) never counts as done and is
  submitted again (``file-outside``), and replay skips a ``completed`` line whose
  ``file`` is not a plain path under ``images/`` at all;
- ``submitted`` less than ``retention - margin`` seconds ago (1 h - 5 min by default)
  and not finished: poll the same ``request_id`` again, do not resubmit;
- a request that may have made an image that is not saved (``submitted`` longer ago,
  ``expired``, ``completed`` with its file missing or changed, ``failed`` retryably at
  the result or download step): poll its ``request_id`` again (``recover``): the result
  if the server still has it, else the history's ``generation_url``, and only when
  neither gives an image is the job submitted again;
- ``failed`` with ``retryable: false``: skip, unless ``--retry-failed``
  (``retry-failed``); ``failed`` with ``retryable: true`` otherwise: submit again
  (``retry``).

Jobs in the ledger that are no longer in the manifest are left alone and reported
(:meth:`LedgerState.removed`).

Locking
-------
:func:`lock_output` takes an exclusive ``flock`` on ``OUT/.lock`` (which holds the
owner's pid) for the whole run, so a second ``batchgen run`` on the same OUT fails at once
with :class:`~batchgen.errors.LockedError` instead of interleaving ledger lines.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePath, PurePosixPath
from types import TracebackType
from typing import IO, Any, Literal

import anyio

from batchgen.errors import LocalWriteError, LockedError, UsageError
from batchgen.output.images import IMAGES_DIR, file_matches

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_RETENTION",
    "JOB_EVENTS",
    "LEDGER_NAME",
    "LOCK_NAME",
    "RUN_EVENTS",
    "JobRecord",
    "JobState",
    "LedgerState",
    "LedgerWriter",
    "Poll",
    "Reconcile",
    "ResumeDecision",
    "RunRecord",
    "Skip",
    "Submit",
    "check_output",
    "decide",
    "format_ts",
    "lock_output",
    "parse_ts",
    "replay",
]

LEDGER_NAME = "ledger.jsonl"
LOCK_NAME = ".lock"
DEFAULT_RETENTION = 3600.0
DEFAULT_MARGIN = 300.0

JobState = Literal["submitting", "submitted", "completed", "failed", "expired"]
JOB_EVENTS: frozenset[str] = frozenset({"submitting", "submitted", "completed", "failed", "expired"})
COST_EVENT = "cost"
RUN_EVENTS: frozenset[str] = frozenset({"run_started", "run_finished"})


def format_ts(epoch: float) -> str:
    """Epoch seconds as ISO-8601 UTC with milliseconds and a ``Z``."""
    stamp = datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def parse_ts(text: str) -> float:
    """The epoch seconds of a ledger ``ts`` (inverse of :func:`format_ts`)."""
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:  # written by hand without a zone: the ledger is UTC
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


# --- writing ----------------------------------------------------------------------


def _repair_torn_tail(path: Path) -> None:
    """Cut a half-written last line (no trailing newline) off the ledger."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        # Read back just far enough to find the start of the torn line.
        block = 64 * 1024
        end = size
        cut = 0
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                cut = start + newline + 1
                break
            end = start
        f.seek(cut)
        tail = f.read()
        try:
            complete = isinstance(json.loads(tail), dict)
        except (ValueError, RecursionError):
            complete = False
        if complete:
            # Killed between the object and its newline: the event is whole, keep it.
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        else:
            f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())


def _json_default(value: object) -> object:
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable in a ledger event")


@dataclass(slots=True)
class _Entry:
    """One line handed to :meth:`LedgerWriter.write` and what became of it."""

    record: dict[str, Any]
    data: bytes
    done: bool = False
    error: LocalWriteError | None = None


class LedgerWriter:
    """The one writer of a ledger: appends an event per line and flushes it at once.

    Writes are serialised by a lock and shielded from cancellation, so an event that
    was started is written whole even when the caller is cancelled (a ``submitted``
    line must not be lost: that request is paid for). Lines handed in while others are
    being written go out together, in order, with one write and one fsync; each
    :meth:`write` returns once its own line is on disk.

    A write that fails (disk full, file size limit, I/O error) raises
    :class:`~batchgen.errors.LocalWriteError` and whatever part of its line reached the
    file is cut back off, so the ledger stays whole lines; later writes are still tried
    (space may be freed meanwhile). If even the cut fails, every later write is refused
    at once: appending after a torn line would glue an event to half of another. Events
    that could not be written are kept in :attr:`unrecorded`; the request ids of the
    ``submitted`` ones (:meth:`unrecorded_requests`) are paid for and known nowhere else.
    """

    def __init__(self, path: Path, file: IO[bytes], *, clock: Callable[[], float], fsync: bool) -> None:
        """Use :meth:`open`; this wraps an already opened append-mode file."""
        self.path = path
        self._file = file
        self._clock = clock
        self._fsync = fsync
        self._lock = anyio.Lock()
        self._waiting: list[_Entry] = []  # lines handed to write(), not yet written
        self._closed = False
        self._broken: LocalWriteError | None = None  # the first failure
        self._torn = False  # a failed line could not be cut back off: write nothing more
        self.unrecorded: list[dict[str, Any]] = []

    @classmethod
    async def open(
        cls, path: Path, *, clock: Callable[[], float] = time.time, fsync: bool = True
    ) -> LedgerWriter:
        """Open ``path`` for appending: create its directory, repair a torn last line first.

        Open it while holding :func:`lock_output`: the repair and the appends assume no
        other writer.

        ``clock`` gives the wall time (epoch seconds) stamped on each event; ``fsync``
        also forces every line to disk (survives a reboot, not just a kill).
        Raises :class:`~batchgen.errors.LocalWriteError` if the file cannot be prepared.
        """

        def _open() -> IO[bytes]:
            path.parent.mkdir(parents=True, exist_ok=True)
            _repair_torn_tail(path)
            # O_NOFOLLOW: check_output refused a symlink that leaves OUT; one made since
            # is not followed either.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            return os.fdopen(fd, "ab", buffering=0)

        try:
            file = await anyio.to_thread.run_sync(_open)
        except OSError as exc:
            raise LocalWriteError.from_os_error("open the ledger", path, exc) from None
        return cls(path, file, clock=clock, fsync=fsync)

    @property
    def broken(self) -> LocalWriteError | None:
        """The first write that failed, or None if every one succeeded."""
        return self._broken

    def unrecorded_requests(self) -> list[tuple[str, str]]:
        """``(request_id, job key)`` of every accepted request whose ``submitted`` line is missing."""
        return [
            (str(event["request_id"]), str(event["key"]))
            for event in self.unrecorded
            if event["event"] == "submitted" and event.get("request_id")
        ]

    async def write(self, event: str, key: str, /, **fields: Any) -> None:
        """Append one event line ``{"event", "key", "ts", **fields}`` and flush it.

        Raises :class:`~batchgen.errors.LocalWriteError` if it cannot be written (or an
        earlier write could not), keeping the event in :attr:`unrecorded`.
        """
        if self._closed:
            raise RuntimeError(f"ledger {self.path} is closed")
        if "event" in fields or "key" in fields or "ts" in fields:
            raise ValueError("event, key and ts are set by the writer")
        record: dict[str, Any] = {"event": event, "key": key, "ts": format_ts(self._clock())}
        record.update(fields)
        # Serialise before taking the lock so a bad value fails the caller, not the file.
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_json_default)
        entry = _Entry(record, (line + "\n").encode("utf-8"))
        self._waiting.append(entry)
        with anyio.CancelScope(shield=True):
            async with self._lock:
                if not entry.done:
                    await self._write_waiting()
        if entry.error is not None:
            raise entry.error

    async def _write_waiting(self) -> None:
        """Write every line waiting (group commit: one write, one fsync, one thread hop
        for the lines that queued up while the last ones were written). Holds the lock."""
        batch, self._waiting = self._waiting, []
        error: LocalWriteError | None = None
        if self._torn:
            assert self._broken is not None
            error = self._broken
        else:
            try:
                await anyio.to_thread.run_sync(self._append, b"".join(entry.data for entry in batch))
            except OSError as exc:
                error = LocalWriteError.from_os_error("write the ledger", self.path, exc)
                self._broken = self._broken or error
        for entry in batch:
            entry.done = True
            if error is not None:
                entry.error = error
                self.unrecorded.append(entry.record)

    def _append(self, line: bytes) -> None:
        # Whole lines on an unbuffered O_APPEND file: a kill can tear at most this last
        # line, which replay ignores and open() repairs.
        fd = self._file.fileno()
        start = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[self._file.write(view) :]
            if self._fsync:
                os.fsync(fd)
        except OSError:
            # Part of the line may be in the file (a full disk takes what fits): cut it
            # back so the ledger ends on a whole line.
            try:
                os.ftruncate(fd, start)
            except OSError:
                self._torn = True
            raise

    async def aclose(self) -> None:
        """Close the file; further writes raise."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            async with self._lock:
                await anyio.to_thread.run_sync(self._file.close)

    async def __aenter__(self) -> LedgerWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


# --- replay -----------------------------------------------------------------------


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


@dataclass(slots=True)
class LedgerState:
    """The ledger replayed: one record per job key, the runs in order, and what could not be read."""

    records: dict[str, JobRecord] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    history: list[RunRecord] = field(default_factory=list)  # one per ``run_started``, oldest first
    lines: int = 0  # complete lines read
    requests: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (job key, submitted ts)
    costs: dict[str, tuple[float, str | None]] = field(default_factory=dict)  # id -> (USD, status)

    @property
    def request_ids(self) -> set[str]:
        """Every request id the ledger records as accepted."""
        return set(self.requests)

    @property
    def runs(self) -> int:
        """How many runs wrote this ledger."""
        return len(self.history)

    def keys(self) -> set[str]:
        """The keys of every job the ledger knows."""
        return set(self.records)

    def get(self, key: str) -> JobRecord | None:
        """The record of ``key``, or None for a job the ledger has never seen."""
        return self.records.get(key)

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
        else:
            state.warnings.append(f"{where}: cost event without request_id and usd, line skipped")
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
        if "index" in obj:
            record.index = obj["index"]
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
        record.finished_at = ts
        record.file = obj.get("file")
        record.sha256 = obj.get("sha256")
        record.bytes = obj.get("bytes")
        record.inference_time = obj.get("inference_time")
    elif event == "failed":
        record.finished_at = ts
        record.code = obj.get("code")
        record.error = obj.get("error")
        record.retryable = bool(obj.get("retryable", False))
        record.step = obj.get("step")
    else:  # expired
        record.expirations += 1


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
        state.history.append(
            RunRecord(
                started_at=ts,
                manifest=text["manifest"],
                manifest_sha256=text["manifest_sha256"],
                settings=settings if isinstance(settings, dict) else {},
                version=text["version"],
            )
        )
    elif state.history and state.history[-1].finished_at is None:
        run = state.history[-1]
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


# --- the resume rule --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Skip:
    """Nothing to do: the job is done (``completed``) or failed for good (``failed``)."""

    reason: Literal["completed", "failed"] = "completed"


@dataclass(frozen=True, slots=True)
class Poll:
    """Poll ``request_id`` again, do not resubmit: the job is in flight within retention,
    or (``recover``) its request may have made an image that was never saved."""

    request_id: str
    submitted_at: float
    recover: bool = False


@dataclass(frozen=True, slots=True)
class Reconcile:
    """The run was killed between a submit's POST and its answer: find it in the history."""

    body: dict[str, Any]
    intent_at: float


@dataclass(frozen=True, slots=True)
class Submit:
    """Submit the job; ``previous_request_id`` is the request it replaces, if any."""

    reason: Literal["new", "expired", "retry", "retry-failed", "file-missing", "file-changed", "file-outside"]
    previous_request_id: str | None = None


ResumeDecision = Skip | Poll | Reconcile | Submit

# Steps after which the server may hold a finished image that was never saved.
_IMAGE_STEPS = frozenset({"result", "download"})


def decide(
    record: JobRecord | None,
    *,
    out_dir: Path,
    now: float,
    retention: float = DEFAULT_RETENTION,
    margin: float = DEFAULT_MARGIN,
    retry_failed: bool = False,
) -> ResumeDecision:
    """What a rerun does with one job, given its ledger record (see the module docstring).

    ``now`` is the wall clock in epoch seconds (the same clock the ledger stamps with).
    A ``completed`` record is checked against the file on disk (this hashes it).
    """
    if record is None:
        return Submit("new")

    def recover(reason: Literal["expired", "retry", "file-missing", "file-changed"]) -> Poll | Submit:
        if record.request_id and record.submitted_at is not None:
            return Poll(record.request_id, record.submitted_at, recover=True)
        return Submit(reason, record.request_id)

    if record.state == "submitting":
        if record.body is not None and record.intent_at is not None:
            return Reconcile(record.body, record.intent_at)
        return Submit("retry")
    if record.state == "completed":
        if not record.file or not (out_dir / record.file).is_file():
            return recover("file-missing")
        images = (out_dir / IMAGES_DIR).resolve()
        if not (out_dir / record.file).resolve().is_relative_to(images):
            # images/x is a symlink that leads out of the output folder: not our image.
            return Submit("file-outside", record.request_id)
        if record.sha256 is None or not file_matches(out_dir, record.file, record.sha256):
            return recover("file-changed")
        return Skip("completed")
    if record.state == "submitted":
        if (
            record.request_id
            and record.submitted_at is not None
            and now - record.submitted_at < retention - margin
        ):
            return Poll(record.request_id, record.submitted_at)
        return recover("expired")
    if record.state == "expired":
        return recover("expired")
    # failed
    if record.retryable:
        if record.step in _IMAGE_STEPS:
            return recover("retry")
        return Submit("retry", record.request_id)
    if retry_failed:
        return Submit("retry-failed", record.request_id)
    return Skip("failed")


# --- the output lock --------------------------------------------------------------


@contextmanager
def lock_output(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``OUT/.lock`` for the block; :class:`LockedError` if taken.

    The lock is ``flock``-based, so it dies with its process: a run killed with SIGKILL
    leaves no stale lock behind. The file holds the owner's pid for the error message.
    """
    lock_path = out_dir / LOCK_NAME
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # Never through a symlink: the lock file is truncated and written.
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{lock_path} is a symlink; batchgen writes nothing through it") from None
        raise UsageError(f"cannot use {out_dir} as the output directory: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise LockedError(f"another batchgen run is using {out_dir} (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield
        finally:
            # Leave the file in place (unlinking a lock file races with the next taker).
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# --- the output folder ------------------------------------------------------------


def check_output(out_dir: Path, folders: Collection[str] = ()) -> Path:
    """The output folder resolved, once it is checked that nothing written leaves it.

    OUT itself may be a symlink (the user chose where it points); inside it, ``images/``,
    the ledger and, for each of ``folders`` (the folders of the jobs' files, relative to
    ``images/``) that exists already, that folder must resolve inside OUT. Otherwise a
    :class:`~batchgen.errors.UsageError` names the symlink: images would be written, and
    the ledger appended, somewhere the user never named. Call it holding :func:`lock_output`.
    """
    root = out_dir.resolve()
    images = root / IMAGES_DIR
    checks = [(images, root), (root / LEDGER_NAME, root)]
    prefixes: set[PurePosixPath] = set()
    for folder in folders:
        parts = PurePosixPath(folder).parts
        prefixes.update(PurePosixPath(*parts[: i + 1]) for i in range(len(parts)))
    checks.extend((images / prefix, images) for prefix in sorted(prefixes))
    for path, inside in checks:
        if not os.path.lexists(path):
            continue
        try:
            target = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            raise UsageError(f"cannot resolve {out_dir / path.relative_to(root)}: {exc}") from None
        shown = out_dir / path.relative_to(root)
        if not target.is_relative_to(inside.resolve()):
            raise UsageError(
                f"{shown} leads to {target}, outside {out_dir}; batchgen writes nothing through it"
                " (replace the symlink with a folder, or pass that folder as --out)"
            )
        if inside == images and not target.is_dir():
            raise UsageError(f"{shown} is not a folder, but the manifest's filenames put images in it")
    if os.path.lexists(images) and not images.is_dir():
        raise UsageError(f"{out_dir / IMAGES_DIR} is not a folder")
    ledger = root / LEDGER_NAME
    if os.path.lexists(ledger) and not ledger.is_file():
        raise UsageError(f"{out_dir / LEDGER_NAME} is not a regular file")
    return root
