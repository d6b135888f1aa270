"""The end of a run: ``summary.json``, the notification, ``report.html``, and the accepted
requests the ledger could not record. Each is a warning when it fails, never the run's
failure: the images and the ledger are what matter."""

from __future__ import annotations

import logging
import os
import threading
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from batchgen.engine.settings import RunSettings
from batchgen.engine.signals import on_signal
from batchgen.manifest.job import Job
from batchgen.manifest.model import Manifest
from batchgen.outcome.status import run_status
from batchgen.outcome.summary import Summary, summary_json
from batchgen.output.jsontext import dumps
from batchgen.output.layout import SUMMARY_JSON
from batchgen.output.ledger import LedgerWriter
from batchgen.output.replay import LedgerState
from batchgen.output.temporary import temporary_path

__all__ = ["report_unrecorded", "tell_outcome", "write_report_at_end"]

log = logging.getLogger("batchgen")


async def tell_outcome(
    root: Path,
    summary: Summary,
    *,
    notify: str | None,
    manifest: Manifest | None,
    facts: dict[str, Any],
    started_at: float,
    finished_at: float,
    watch_signals: bool,
) -> None:
    """OUT/summary.json, then the notification (``notify``), then summary.json again if the
    notification failed, so that the file records it.

    The file comes first because the notification names it: a hook that reads it at once
    finds it. Rewritten whole (atomically), it then says what became of the notification.
    """
    write = partial(_write_summary, root, summary, started_at=started_at, finished_at=finished_at, **facts)
    await anyio.to_thread.run_sync(write)
    if notify is None:
        return
    warned = len(summary.warnings)
    await _notify(notify, summary, manifest=manifest, facts=facts, watch_signals=watch_signals)
    if len(summary.warnings) > warned:
        await anyio.to_thread.run_sync(write)


def _write_summary(root: Path, summary: Summary, **fields: Any) -> None:
    """OUT/summary.json, atomically (a temporary file, fsync'ed, renamed over): a reader
    sees the previous whole file or the new one, never half of one."""
    path = root / SUMMARY_JSON
    temporary = temporary_path(path)
    text = dumps(summary_json(summary, **fields), indent=2) + "\n"
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as exc:  # the ledger holds the truth; say why the file is missing
        temporary.unlink(missing_ok=True)
        log.warning("%s not written: %s", path, exc)
        summary.warnings.append(f"{path} not written ({exc.strerror or exc})")


def report_unrecorded(writer: LedgerWriter, summary: Summary) -> None:
    """Put the accepted requests the ledger could not record on stderr: they are paid for,
    and a rerun can only find them in the request history."""
    lost = writer.unrecorded_requests()
    summary.unrecorded = [request_id for request_id, _ in lost]
    if not lost:
        return
    log.error(
        "the ledger %s could not record %d accepted requests; they are paid for, keep their ids:",
        writer.path,
        len(lost),
    )
    for request_id, key in lost:
        log.error("unrecorded request %s (job %s)", request_id, key[:12])


async def _notify(
    url: str, summary: Summary, *, manifest: Manifest | None, facts: dict[str, Any], watch_signals: bool
) -> None:
    """Tell ``url`` the outcome (:mod:`batchgen.outcome.notify`); a failure is a warning."""
    from batchgen.outcome.notify import message, send, where

    text = message(
        summary,
        name=manifest.name if manifest else summary.out_dir.name,
        manifest=facts["manifest"],
        shard=facts["shard"],
    )
    failed: str | None = "a signal stopped it"
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            if watch_signals:
                tg.start_soon(on_signal, scope.cancel, "not waiting for the notification")
            failed = await send(url, text)
            tg.cancel_scope.cancel()
    if failed is None:
        log.info("notified %s of the outcome", where(url))
    else:
        log.warning("notification to %s not delivered: %s", where(url), failed)
        summary.warnings.append(f"notification to {where(url)} not delivered: {failed}")


async def write_report_at_end(
    out: Path,
    summary: Summary,
    *,
    state: LedgerState,
    jobs: list[Job],
    manifest: Manifest | None,
    now: float,
    settings: RunSettings,
    watch_signals: bool,
) -> None:
    """OUT/report.html at the end of a run, from what the run holds (``state`` kept current
    by the ledger writer, the jobs): nothing is read back. A failure to write it is a
    warning, not the run's; so is a Ctrl-C / SIGTERM while it is written (with
    ``watch_signals``), which stops it: the summary then says how to make it."""
    from batchgen.report.page import ReportStopped, write_report

    stop = threading.Event()

    def failed(exc: Exception) -> None:  # the images and the ledger are what matter; say why, go on
        log.warning("report not written: %s: %s", type(exc).__name__, exc)
        summary.warnings.append(f"report not written ({exc}); run `batchgen report {out}`")

    try:
        status = run_status(
            out,
            state=state,
            jobs=jobs,
            manifest=manifest,
            now=now,
            retention=settings.retention,
            margin=settings.margin,
        )
    except Exception as exc:
        failed(exc)
        return
    if summary.interrupted:
        log.info("writing the report of what is done so far (Ctrl-C again to skip it)")
    async with anyio.create_task_group() as tg:
        if watch_signals:
            tg.start_soon(on_signal, stop.set, "not writing the report")
        try:
            summary.report_path = await anyio.to_thread.run_sync(
                partial(write_report, status, stop=stop.is_set), abandon_on_cancel=True
            )
        except ReportStopped:
            summary.warnings.append(f"report not written (stopped by a signal); run `batchgen report {out}`")
        except Exception as exc:
            failed(exc)
        finally:
            tg.cancel_scope.cancel()
