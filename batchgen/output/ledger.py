"""The run ledger ``OUT/ledger.jsonl``: its format and its one writer.

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
                   and flushed once the request's rate slot is granted, right before it
                   leaves, so a run killed before the answer came back knows what may
                   have been paid for (and a job still waiting for its slot has no line)
``uncertain``      ``error`` (why), ``code`` (HTTP status or null), ``request_id`` (an id
                   the answer carried that another job holds, else null): the submit of
                   the last ``submitting`` may have been accepted and no usable answer
                   came back; it is never sent again until the request history says
``refused``        ``code`` (HTTP status, or null when the request never left), ``error``: the
                   submit of the last ``submitting`` was not accepted (429, 4xx, no
                   connection); nothing was paid, the job may be submitted again
``submitted``      ``request_id``, ``index``, ``seed``, ``params`` (as sent), ``labels``;
                   written as soon as the API accepted the job, before polling starts;
                   ``recovered: true`` when the request id was found again in the
                   account's request history after a ``submitting`` with no answer
``completed``      ``request_id``, ``seed``, ``inference_time`` (server seconds),
                   ``file`` (path relative to OUT, e.g. ``images/cat.png``), ``sha256``,
                   ``bytes``, ``mtime_ns`` (the file's modification time once in place,
                   nanoseconds: a rerun trusts a file with that size and time without
                   hashing it), and ``usd`` when the API's answer said what it cost
``failed``         ``request_id`` (or null when the submit itself was refused), ``seed``,
                   ``code`` (HTTP status or null), ``error`` (the detail), ``retryable``,
                   ``step`` (where it failed: submit, status, result or download),
                   ``usd`` when the answer said what it cost
``cost``           ``request_id``, ``usd``, ``status``: what the request cost and how it
                   ended, from the request history (written at the end of a run);
                   ``orphan: true`` for a request no job holds (the body of a submit in
                   doubt, found in the history after the job was settled otherwise)
``expired``        ``request_id``: that request is past retention or unknown (404); the
                   job is about to be resubmitted
``history_read``   ``model``, ``since``, ``until`` (ISO-8601 UTC), ``rows``: the account's
                   request history of ``model`` was read (at the end of a run, for the
                   cost) from the newest request back to those created at ``since``, as
                   it stood at ``until``; ``key`` is ``""``. A request of the batch that
                   this read should have shown (created from ``since`` to ``until`` less
                   the history's lag, give or take the clock skew) and did not price is
                   not looked for again by a rerun
``run_finished``   the run's counts
=================  =========================================================================

The API key is never written: the writer is never given it, and should an error text
copied from elsewhere hold it, it is written as ``***`` (:mod:`batchgen.output.jsontext`).
Every line is strict JSON (no ``NaN`` or ``Infinity``).

A job's state is the last of its job events; replaying the file is
:mod:`batchgen.output.replay`, and what a rerun does with each job is
:mod:`batchgen.output.resume`. A half-written last line (the process was killed
mid-write) is cut away by :meth:`LedgerWriter.open` before anything is appended.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePath
from types import TracebackType
from typing import IO, Any, Literal

import anyio

from batchgen.errors import LocalWriteError
from batchgen.output.jsontext import dumps

__all__ = [
    "COST_EVENT",
    "HISTORY_EVENT",
    "JOB_EVENTS",
    "RUN_EVENTS",
    "JobState",
    "cost_field",
    "LedgerWriter",
    "format_ts",
    "parse_ts",
]

JobState = Literal["submitting", "uncertain", "refused", "submitted", "completed", "failed", "expired"]
JOB_EVENTS: frozenset[str] = frozenset(
    {"submitting", "uncertain", "refused", "submitted", "completed", "failed", "expired"}
)
COST_EVENT = "cost"
HISTORY_EVENT = "history_read"
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


def cost_field(usd: float | None) -> dict[str, Any]:
    """The optional ``usd`` field of a ``completed`` / ``failed`` line: what the answer said it cost."""
    return {} if usd is None else {"usd": usd}


def _json_default(value: object) -> object:
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable in a ledger event")


@dataclass(slots=True)
class _Entry:
    """One line handed to :meth:`LedgerWriter.write` and what became of it."""

    record: dict[str, Any]
    data: bytes
    durable: bool = True
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

    def __init__(
        self,
        path: Path,
        file: IO[bytes],
        *,
        clock: Callable[[], float],
        fsync: bool,
        on_write: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Use :meth:`open`; this wraps an already opened append-mode file."""
        self.path = path
        self._on_write = on_write
        self._file = file
        self._clock = clock
        self._fsync = fsync
        self._lock = anyio.Lock()
        self._waiting: list[_Entry] = []  # lines handed to write(), not yet written
        self._closed = False
        self._broken: LocalWriteError | None = None  # the first failure
        self._torn = False  # a failed line could not be cut back off: write nothing more
        self._unsynced = False  # lines written but not yet forced to disk
        self.unrecorded: list[dict[str, Any]] = []

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        fsync: bool = True,
        on_write: Callable[[dict[str, Any]], None] | None = None,
    ) -> LedgerWriter:
        """Open ``path`` for appending: create its directory, repair a torn last line first.

        Open it while holding :func:`~batchgen.output.lock.lock_output`: the repair and the appends assume no
        other writer.

        ``clock`` gives the wall time (epoch seconds) stamped on each event; ``fsync``
        also forces every line to disk (survives a reboot, not just a kill). ``on_write``
        is called with each event once its line is on disk, in file order.
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
        return cls(path, file, clock=clock, fsync=fsync, on_write=on_write)

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

    async def write(self, event: str, key: str, /, *, durable: bool = True, **fields: Any) -> None:
        """Append one event line ``{"event", "key", "ts", **fields}`` and flush it.

        ``durable=False`` hands the line to the operating system without waiting for the
        disk (it survives the process being killed, not a power cut); the next durable
        line, or closing the writer, forces it to disk too. When no other write is under
        way it is written at once, without a thread hop: the intent of a submit uses it,
        and the request leaves right after, on the pace the rate gate set.

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
        # Strict JSON, the key taken out (jsontext.dumps): a line any reader parses.
        line = dumps(record, compact=True, default=_json_default)
        entry = _Entry(record, (line + "\n").encode("utf-8"), durable)
        if not durable and not self._lock.locked() and not self._waiting:
            # Nothing else is being written (that happens only under the lock), so this
            # small append cannot interleave; it is a copy into the page cache.
            self._settle([entry], self._append_batch([entry], sync=False))
            if entry.error is not None:
                raise entry.error
            return
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
        sync = self._fsync and any(entry.durable for entry in batch)
        self._settle(batch, await anyio.to_thread.run_sync(self._append_batch, batch, sync))

    def _append_batch(self, batch: list[_Entry], sync: bool) -> LocalWriteError | None:
        """Append ``batch`` in one write (and one fsync if ``sync``); the error, if it failed."""
        if self._torn:
            return self._broken
        try:
            self._append(b"".join(entry.data for entry in batch), sync)
        except OSError as exc:
            error = LocalWriteError.from_os_error("write the ledger", self.path, exc)
            self._broken = self._broken or error
            return error
        return None

    def _settle(self, batch: list[_Entry], error: LocalWriteError | None) -> None:
        """Record what became of each line of ``batch`` (on the event loop)."""
        for entry in batch:
            entry.done = True
            if error is not None:
                entry.error = error
                self.unrecorded.append(entry.record)
            elif self._on_write is not None:
                self._on_write(entry.record)

    def _append(self, line: bytes, sync: bool) -> None:
        # Whole lines on an unbuffered O_APPEND file: a kill can tear at most this last
        # line, which replay ignores and open() repairs.
        fd = self._file.fileno()
        start = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[self._file.write(view) :]
            if sync:
                os.fsync(fd)
                self._unsynced = False
            else:
                self._unsynced = self._fsync
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
                await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        try:
            if self._unsynced and not self._torn:
                os.fsync(self._file.fileno())
        except OSError:
            pass  # every line is written; only its flush to disk could not be forced
        finally:
            self._file.close()

    async def __aenter__(self) -> LedgerWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

