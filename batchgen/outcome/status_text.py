"""The text ``batchgen status`` prints: where the run is, jobs by state, what a rerun would do."""

from __future__ import annotations

from batchgen.outcome.figures import format_duration
from batchgen.outcome.status import Status
from batchgen.output.resume import RerunVerb

__all__ = ["format_status"]

_LISTED = 10  # images of removed jobs named one by one

# How the plan line says each verb of the resume rule (output/resume.py RERUN_VERBS).
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
        past = sum(1 for r in in_flight if s.past_retention(r))
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
    doubts = s.in_doubt
    if doubts:
        why = next((r.doubt for r in doubts if r.doubt), None) or "no answer recorded"
        lines.append(
            f"  not known whether paid  {len(doubts)} (their submit got no usable answer; a rerun looks"
            f" for them in the request history before paying again; e.g. {_one_line(why, 100)})"
        )
    if s.expired:
        lines.append(f"  expired      {s.expired} (resubmitted next)")
    not_started = s.not_started
    lines.append(f"  not started  {not_started if not_started is not None else 'unknown'}")
    if s.removed:
        lines.append(f"  {s.removed} jobs in the ledger are no longer in the manifest (left alone)")
    if s.removed_images:
        tidy = "batchgen tidy FOLDER" if s.folders else f"batchgen tidy {s.out_dir}"
        lines.append(
            f"  {len(s.removed_images)} images of jobs no longer in the manifest are still in images/"
            f" ({tidy} moves them to removed/):"
        )
        lines.extend(f"    {file}" for file in s.removed_images[:_LISTED])
        if len(s.removed_images) > _LISTED:
            lines.append(f"    ... and {len(s.removed_images) - _LISTED} more (--json lists all)")
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
