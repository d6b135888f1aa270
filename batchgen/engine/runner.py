"""The Python entry point: run a manifest (or jobs) to completion and return the summary.

:func:`run` is what ``batchgen run`` calls inside its one ``anyio.run``, and what code
that embeds batchgen (an Airflow task, a notebook) awaits directly. It loads and
expands the manifest, takes the output lock, replays the ledger, builds the HTTP client
unless one is given, drives the :class:`~batchgen.engine.scheduler.Scheduler`, shows progress,
and returns a :class:`~batchgen.outcome.summary.Summary`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx

from batchgen import __version__
from batchgen.api import wire
from batchgen.api.client import DEFAULT_BASE_URL, SegmindClient
from batchgen.api.history import History, history_url_for
from batchgen.api.key import API_KEY_ENV, read_api_key
from batchgen.api.origin import check_base_url
from batchgen.engine.finish import report_unrecorded, tell_outcome, write_report_at_end
from batchgen.engine.progress import Progress
from batchgen.engine.scheduler import Scheduler
from batchgen.engine.settings import RunSettings
from batchgen.engine.signals import watch_signals
from batchgen.errors import LocalWriteError, UsageError
from batchgen.manifest.dates import run_date
from batchgen.manifest.job import Job
from batchgen.manifest.model import Manifest
from batchgen.manifest.pipeline import DEFAULT_MAX_JOBS, manifest_jobs
from batchgen.manifest.shard import Shard
from batchgen.outcome.notify import check_notify_url
from batchgen.outcome.summary import Summary, outcome_fields, outcome_line
from batchgen.output.folder import check_output
from batchgen.output.images import remove_stale_parts
from batchgen.output.layout import IMAGES_DIR, LEDGER_NAME, SUMMARY_JSON
from batchgen.output.ledger import LedgerWriter
from batchgen.output.lock import lock_output
from batchgen.output.owner import check_owner
from batchgen.output.replay import replay
from batchgen.output.temporary import remove_stale_temporaries

if TYPE_CHECKING:  # the emulator (Starlette) is imported only when a run uses it
    from batchgen.emulator import EmulatorConfig

__all__ = [
    "BASE_URL_ENV",
    "EMULATE_TIME_SCALE",
    "default_out_dir",
    "emulator_config",
    "run",
]

log = logging.getLogger("batchgen")

BASE_URL_ENV = "BATCHGEN_BASE_URL"
# ``--emulate`` runs the in-process emulator this much faster than the real API, so the
# demo manifest finishes in about a second yet still shows queueing and polling. The run
# itself is not told: it measures the emulator as it would measure Segmind.
EMULATE_TIME_SCALE = 0.02
_EMULATOR_URL = "http://emulator.local"
# The signals that stop a run gently: Ctrl-C, a service manager's SIGTERM, and SIGHUP
# (the terminal closed, the ssh session dropped), which would otherwise kill it outright.


def emulator_config(time_scale: float = EMULATE_TIME_SCALE) -> EmulatorConfig:
    """The in-process emulator ``--emulate`` runs against, its clock ``time_scale`` x real time."""
    from batchgen.emulator import EmulatorConfig

    return EmulatorConfig(time_scale=time_scale, workers=8)


def default_out_dir(manifest: Manifest, shard: Shard | None = None) -> Path:
    """``output/<manifest name>/`` under the current directory (``output/<name>-shard-K-of-N/``
    for a shard); never ``output/..`` or above."""
    name = manifest.name
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        # load_manifest never gives such a name; a Manifest built in code might.
        raise UsageError(f"the run name {name!r} is not a folder name; pass an output directory")
    return Path("output") / (name + (shard.suffix if shard else ""))


def _resolve_jobs(
    source: str | os.PathLike[str] | Manifest | Iterable[Job],
    *,
    max_jobs: int,
    date: str,
    shard: Shard | None,
) -> tuple[Manifest | None, list[Job]]:
    """The manifest (if any) and every job, fully expanded before anything is submitted."""
    if isinstance(source, str | os.PathLike | Manifest):
        found = manifest_jobs(source, max_jobs=max_jobs, shard=shard, date=date)
        # Expanding fully first finds duplicate keys and filename clashes (exit 2)
        # before a single request is paid for.
        jobs = list(found)
        if shard is not None:
            log.info("shard %s: %d of the manifest's %d jobs", shard, len(jobs), found.total)
        if found.duplicates:
            log.info("%d duplicate jobs in the manifest are run once", found.duplicates)
        for problem in found.warnings:
            log.warning("%s", problem)
        return found.manifest, jobs
    jobs = list(source if shard is None else shard.select(source))
    if len(jobs) > max_jobs:
        raise UsageError(f"{len(jobs):,} jobs is more than the limit of {max_jobs:,}; raise max_jobs")
    return None, jobs


@asynccontextmanager
async def _http_client(
    client: httpx.AsyncClient | None, *, emulate: EmulatorConfig | None, request_timeout: float
) -> AsyncIterator[httpx.AsyncClient]:
    """The caller's client as is, or one this run builds (and closes), its timeouts the
    run's (``request_timeout`` bounds every request whatever the client; this only keeps
    httpx's own from cutting a request shorter)."""
    if client is not None:
        yield client
        return
    if emulate is not None:
        from batchgen.emulator import create_app

        transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=create_app(emulate))
    else:
        # Limits go to the transport: a client given a transport ignores its own.
        transport = wire.transport(limits=wire.LIMITS)
    timeout = httpx.Timeout(request_timeout, connect=min(10.0, request_timeout))
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as built:
        yield built


async def run(
    source: str | os.PathLike[str] | Manifest | Iterable[Job],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    client: httpx.AsyncClient | None = None,
    base_url: str | None = None,
    emulate: bool | EmulatorConfig = False,
    settings: RunSettings | None = None,
    max_jobs: int = DEFAULT_MAX_JOBS,
    progress: bool | None = None,
    progress_interval: float = 10.0,
    handle_signals: bool = False,
    insecure: bool = False,
    wall_clock: Callable[[], float] = time.time,
    history_url: str | None = None,
    date: str | None = None,
    shard: Shard | str | None = None,
    notify: str | None = None,
    allow_private_image_hosts: bool | None = None,
) -> Summary:
    """Run every job of ``source`` not already done in ``out_dir``; return the summary.

    ``source`` is a manifest path, a loaded :class:`~batchgen.manifest.model.Manifest`, or an
    iterable of :class:`~batchgen.manifest.job.Job` (then ``out_dir`` is required). ``out_dir``
    defaults to ``output/<manifest name>/``; images go to ``OUT/images/`` and the ledger
    to ``OUT/ledger.jsonl``. Running it again resumes (see :mod:`batchgen.output.ledger`).

    The API key is read from ``SEGMIND_API_KEY`` (required unless ``emulate`` or a
    ``client`` is given: a caller's client may carry its own ``x-api-key`` header), first
    of all: a key that cannot be one is refused before the manifest is read
    (:mod:`batchgen.api.key`).
    ``base_url`` defaults to ``BATCHGEN_BASE_URL`` or https://api.segmind.com; it must be
    https (plain http only to a loopback host, unless ``insecure``). ``history_url``,
    where the account's request history is read (to find lost submits again, fetch
    images past retention, and price the run), defaults to Segmind's history host for
    Segmind's API and to ``base_url`` for anything else; the same rule applies to it.
    ``client`` is used as is and not closed; without one, a client is built for this
    run. Either way the key is sent to the API and history origins only (see
    :mod:`batchgen.api.client`).
    ``emulate`` (True or an :class:`~batchgen.emulator.EmulatorConfig`) runs against an
    in-process emulator instead: no key, no network.

    ``date`` (``YYYY-MM-DD``, default the UTC date at the start) fills ``{date}`` in the
    manifest's name, its ``output.filename`` and ``out_dir``. ``shard`` (a
    :class:`~batchgen.manifest.shard.Shard` or ``"K/N"``) runs only the jobs of that shard; the
    default ``out_dir`` is then ``output/<name>-shard-K-of-N/``.

    ``allow_private_image_hosts``: fetch image URLs at loopback or private addresses (None:
    only when the API itself is at one); link-local and cloud metadata addresses are never
    fetched (:mod:`batchgen.api.hosts`).

    ``notify``: a webhook URL told the outcome at the end in one short JSON POST
    (:mod:`batchgen.outcome.notify`: bounded, never fatal, the URL never logged or written).

    ``progress``: a tqdm bar (True), log lines every ``progress_interval`` s (False), or
    a bar only when stderr is a terminal (None). ``handle_signals`` installs the Ctrl-C /
    SIGTERM handling of the command line (only from the main thread).

    Raises :class:`~batchgen.errors.ManifestError`, :class:`~batchgen.errors.UsageError`
    or :class:`~batchgen.errors.LockedError` before anything is submitted, and
    :class:`~batchgen.errors.LocalWriteError` if the ledger cannot be written before the
    first submit; API conditions, and a write that fails later (``write_error``, the
    ``unrecorded`` request ids), are reported in the summary, not raised. The process
    exit code for the outcome is ``summary.exit_code``.
    """
    started = anyio.current_time()
    started_wall = wall_clock()
    key = None if emulate is not False else read_api_key()
    try:
        day = run_date(date, now=started_wall)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if isinstance(shard, str):
        try:
            shard = Shard.parse(shard)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    manifest, jobs = _resolve_jobs(source, max_jobs=max_jobs, date=day, shard=shard)
    if out_dir is None:
        if manifest is None:
            raise UsageError("out_dir is required when running jobs without a manifest")
        out_dir = default_out_dir(manifest, shard)
    elif not os.fspath(out_dir).strip():  # Path("") is the current folder: everything would land there
        raise UsageError("--out / out_dir is empty: name a folder (--out . for the current one)")
    # {date} in the folder: each day its own output, a rerun the same day resumes it.
    out = Path(os.fspath(out_dir).replace("{date}", day))

    emulation: EmulatorConfig | None = None
    if emulate is not False and client is not None:
        raise UsageError("pass either a client or emulate, not both")
    if emulate is not False:
        emulation = emulator_config() if emulate is True else emulate
        base_url = _EMULATOR_URL
        api_key: str | None = "emulated"
    else:
        api_key = key
        if api_key is None and client is None:
            raise UsageError(f"set {API_KEY_ENV} to your Segmind API key (or use --emulate to run offline)")
        # Checked before anything is written: plain http to another host is refused here.
        base_url = check_base_url(
            base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL, insecure=insecure, warn=True
        )
        if history_url is not None:
            history_url = check_base_url(history_url, insecure=insecure, name="history URL")
    settings = settings or RunSettings()
    problems = settings.problems()
    if problems:
        raise UsageError("; ".join(problems))
    if notify is not None:
        notify = check_notify_url(notify, insecure=insecure)

    ledger_path = out / LEDGER_NAME
    summary = Summary(total=len(jobs), out_dir=out, images_dir=out / IMAGES_DIR, ledger_path=ledger_path)
    summary.emulated = emulation is not None
    with lock_output(out):
        # From here on every file goes under the resolved, checked folder.
        root = check_output(out, {posixpath.dirname(job.filename) for job in jobs})
        ledger_existed = (root / LEDGER_NAME).exists()
        state = replay(root / LEDGER_NAME)
        # Another shard's or manifest's folder is refused before anything in it changes.
        check_owner(
            state,
            out,
            manifest=manifest.recorded_path if manifest else None,
            manifest_sha256=manifest.sha256 if manifest else None,
            shard=str(shard) if shard else None,
            keys=(job.key for job in jobs),
        )
        # A summary.json is always this run's: none while it runs.
        try:
            (root / SUMMARY_JSON).unlink(missing_ok=True)
        except OSError as exc:
            raise LocalWriteError.from_os_error("remove the old", root / SUMMARY_JSON, exc) from None
        try:
            stale = await anyio.to_thread.run_sync(remove_stale_parts, root)
            stale += await anyio.to_thread.run_sync(remove_stale_temporaries, root)
        except OSError as exc:
            raise LocalWriteError.from_os_error("remove old .part and .tmp files under", root, exc) from None
        if stale:
            log.info("removed %d unfinished files (.part, .tmp) left by an earlier run", len(stale))
        summary.warnings.extend(state.warnings)
        removed = state.removed(job.key for job in jobs)
        summary.removed = len(removed)
        if removed:
            log.info(
                "%d jobs in the ledger are no longer in the manifest; their images stay"
                " (batchgen status lists them, batchgen tidy sets them aside)",
                len(removed),
            )
        # The writer folds each line it writes into `state`: the end-of-run report takes
        # the state from memory instead of reading the ledger back.
        fold = state.apply if settings.report else None
        writer = await LedgerWriter.open(root / LEDGER_NAME, clock=wall_clock, on_write=fold)
        facts = {
            "batchgen": __version__,
            "manifest": manifest.recorded_path if manifest else None,
            "manifest_sha256": manifest.sha256 if manifest else None,
            "out": root,
            "shard": str(shard) if shard else None,
        }
        async with (
            writer,
            _http_client(client, emulate=emulation, request_timeout=settings.request_timeout) as http,
        ):
            # The in-process emulator's made-up http host never reaches a network.
            plain_ok = insecure or emulation is not None
            api = SegmindClient(
                http,
                base_url=base_url,
                api_key=api_key,
                insecure=plain_ok,
                allow_private_image_hosts=allow_private_image_hosts,
            )
            history = History(
                http, history_url or history_url_for(base_url), api_key=api_key, insecure=plain_ok
            )
            bar: Progress | None = None

            def on_change() -> None:
                if bar is not None:
                    bar.update()

            scheduler = Scheduler(
                api,
                writer,
                out_dir=root,
                settings=settings,
                summary=summary,
                wall_clock=wall_clock,
                on_change=on_change,
                history=history,
                manifest_sha256=manifest.sha256 if manifest else None,
            )
            tty = sys.stderr.isatty() if progress is None else progress
            bar = Progress(
                scheduler.counts, lambda: scheduler.rate.refused, tty=tty, interval=progress_interval
            )
            # summary.json and the notification: at the end, or at a refusal before the start.
            tell = partial(
                tell_outcome,
                root,
                summary,
                notify=notify,
                manifest=manifest,
                facts=facts,
                started_at=started_wall,
                watch_signals=handle_signals,
            )
            try:
                await scheduler.prepare(jobs, state)  # an estimate over --budget is refused here
            except UsageError as exc:
                # Refused before a line is written: the ledger stays as it was (none if
                # there was none), and summary.json says refused, not an earlier run's 0.
                summary.refused = str(exc)
                summary.not_run = summary.total - summary.done - summary.skipped_failed
                await writer.aclose()
                if not ledger_existed:
                    with contextlib.suppress(OSError):
                        (root / LEDGER_NAME).unlink()
                await tell(finished_at=wall_clock())
                raise
            await writer.write(
                "run_started",
                "",
                # Absolute, so `batchgen status` finds it from any working directory.
                manifest=facts["manifest"],
                manifest_sha256=facts["manifest_sha256"],
                settings={
                    **settings.to_json(),
                    "base_url": base_url,
                    "jobs": len(jobs),
                    "max_jobs": max_jobs,  # the cap `batchgen status` applies to this run's manifest
                    "shard": facts["shard"],
                },
                version=__version__,
            )
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(bar.tick)
                    if handle_signals:
                        tg.start_soon(partial(watch_signals, grace=settings.grace), scheduler, summary)
                    try:
                        await scheduler.run(jobs, state)
                    finally:
                        tg.cancel_scope.cancel()
            finally:
                bar.close()
                summary.wall_time = anyio.current_time() - started
                try:
                    await writer.write("run_finished", "", **summary.counts())
                except LocalWriteError as exc:
                    summary.write_error = summary.write_error or str(exc)
                report_unrecorded(writer, summary)
        if settings.report and summary.write_error:
            # Writing more to a folder that refused a write would only fail again.
            summary.warnings.append(
                f"report not written; once the folder takes writes, run `batchgen report {out}`"
            )
        elif settings.report:
            # Interrupted too: the page is about what is done so far (a signal now skips it).
            await write_report_at_end(
                out,
                summary,
                state=state,
                jobs=jobs,
                manifest=manifest,
                now=wall_clock(),
                settings=settings,
                watch_signals=handle_signals,
            )
        await tell(finished_at=wall_clock())
    # The last line of the run's log (what a Python caller that set up logging sees last).
    log.info(
        "finished: %s",
        outcome_line(summary),
        extra={"fields": {"outcome": outcome_fields(summary)}},
    )
    return summary
