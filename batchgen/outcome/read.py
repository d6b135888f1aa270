"""Read an output folder into a :class:`~batchgen.outcome.status.Status`, without the lock.

:func:`read_status` replays ``OUT/ledger.jsonl`` (and loads the manifest the last run
recorded, to know the jobs not started yet) without taking the output lock and without
writing anything, so it is safe while a run is going: a half-written last line is simply
not counted yet. What a rerun would do with each job is :func:`batchgen.output.resume.decide`
(the one resume rule), counted by its verb. :func:`merge_status` adds up several folders
(the shards of a batch). ``batchgen status`` and ``batchgen report OUT`` read folders
here; the report a run writes at its end takes the run's own state instead.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

from batchgen.errors import BatchgenError
from batchgen.outcome.status import Manifested, Status
from batchgen.output.layout import IMAGES_DIR, LEDGER_NAME, LOCK_NAME
from batchgen.output.replay import LedgerState, RunRecord, replay
from batchgen.output.resume import (
    DEFAULT_MARGIN,
    DEFAULT_RETENTION,
    Submit,
    decide,
    leads_outside,
    rerun_verb,
)

__all__ = ["merge_status", "read_status", "removed_images"]

_TORN = "incomplete last line ignored"


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
    state: LedgerState,
    keep_jobs: bool = False,
    shard: object = None,
    max_jobs: object = None,
) -> Manifested:
    """Load the manifest to learn its jobs' keys (and the jobs); say why not when it cannot be.

    ``shard`` is what the run recorded (``"K/N"``): only that shard's jobs are the run's;
    ``max_jobs`` is the job cap the run recorded (the default cap if none). The jobs are
    streamed, not held: only their keys are kept (the ledger's copy of each, where it has
    one), and ``keep_jobs`` keeps the expansion itself, which gives them again when
    iterated.
    """
    if path is None:
        problem = "no manifest recorded (jobs given from Python or standard input)"
        return Manifested(None, recorded_sha256, problem=problem)
    from batchgen.manifest.pipeline import DEFAULT_MAX_JOBS, manifest_jobs
    from batchgen.manifest.shard import Shard

    if not Path(path).is_file():
        return Manifested(path, recorded_sha256, problem=f"{path} not found (pass --manifest)")
    cap = max_jobs if isinstance(max_jobs, int) and not isinstance(max_jobs, bool) else DEFAULT_MAX_JOBS
    try:
        selected = Shard.parse(shard) if isinstance(shard, str) else None
    except ValueError as exc:
        return Manifested(path, recorded_sha256, problem=f"the recorded shard: {exc}")
    records = state.records
    try:
        found = manifest_jobs(path, max_jobs=cap, shard=selected)
        # The ledger's key object where it has one: 100,000 keys are 11 MB a copy.
        keys = frozenset(record.key if (record := records.get(job.key)) else job.key for job in found)
        manifest = found.manifest
    except BatchgenError as exc:
        return Manifested(path, recorded_sha256, problem=f"{path} does not load: {str(exc).splitlines()[0]}")
    return Manifested(
        path,
        recorded_sha256,
        sha256=manifest.sha256,
        keys=keys,
        name=manifest.name,
        report=dict(manifest.report),
        jobs=found if keep_jobs else None,
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
    (epoch seconds). ``keep_jobs`` keeps the manifest's jobs in ``status.manifest.jobs``
    (an expansion that gives them when iterated: the report places them all); without a
    manifest the ledger's records keep the parameters and labels they were sent with.
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
        state=state,
        keep_jobs=keep_jobs,
        shard=latest.settings.get("shard") if latest else None,
        max_jobs=latest.settings.get("max_jobs") if latest else None,
    )
    if keep_jobs and found.keys is None:
        # No manifest to place the jobs: the report shows them as the ledger recorded them.
        state = replay(ledger, details=True)
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
    for record in status.in_manifest():
        decision = decide(
            record, out_dir=out_dir, now=now, retention=retention, margin=margin, retry_failed=retry_failed
        )
        status.rerun[rerun_verb(decision)] += 1
        if isinstance(decision, Submit) and decision.reason == "file-outside":
            outside.append(record.file or "")
    status.warnings.extend(_outside_warnings(out_dir, outside))
    status.removed_images = removed_images(out_dir, state, found.keys)
    new = len(found.keys - state.keys()) if found.keys is not None else 0
    if new:
        status.rerun["submit"] += new
    return status


def removed_images(out_dir: Path, state: LedgerState, keys: frozenset[str] | None) -> list[str]:
    """Images the ledger records for jobs not in ``keys`` (the manifest's) that are still in
    ``OUT/images`` (not through a symlink out of it), less any that is also a current job's
    image (a new job written to the same name); sorted. None known without the manifest."""
    if keys is None:
        return []
    current = {r.file for k, r in state.records.items() if k in keys and r.file}
    found = {
        r.file
        for k, r in state.records.items()
        if k not in keys
        and r.file
        and r.file not in current
        and (out_dir / r.file).is_file()
        and not leads_outside(out_dir, r.file)
    }
    return sorted(found)


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
        removed_images=[str(s.out_dir / f) for s in statuses for f in s.removed_images],
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
