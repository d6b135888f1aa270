"""The end-of-run summary: the figures a run reports and how they are printed.

The scheduler fills a :class:`Summary` from its own counters; every ratio (images per
minute, percentiles, requests and polls per image) is derived here, never stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.outcome.exits import EXIT_MEANINGS, ExitCode, outcome_exit_code
from batchgen.outcome.figures import (
    format_duration,
    format_number,
    per_image,
    per_minute,
    percentile,
    rounded,
)
from batchgen.output.ledger import format_ts

__all__ = [
    "FIGURES",
    "Figure",
    "Summary",
    "format_summary",
    "outcome_fields",
    "outcome_line",
    "summary_json",
]


@dataclass(slots=True)
class Summary:
    """What one ``batchgen run`` did; counts are jobs unless named otherwise.

    ``completed`` are images produced by this run; ``skipped`` were already complete
    (file verified); ``skipped_failed`` failed permanently in an earlier run and were
    not retried; ``failed`` failed in this run; ``not_run`` were never finished because
    the run stopped early (interrupt, fatal API error, out of credits, ``--max-jobs``);
    ``resubmitted`` were submitted again (expired, retried or file lost); ``removed``
    are in the ledger but no longer in the manifest. ``requests`` counts every HTTP
    request sent to the API (submits, status polls, result fetches, retries and 429s
    included; image downloads are not), ``polls`` the status polls, ``rate_limited``
    the 429 answers. ``peak_in_flight`` is the most jobs submitted and not finished at
    once; ``learned_rpm`` the account's limit as found from 429s (None when none came)
    and ``polls_counted`` whether polls were paced as counting against it.
    """

    total: int
    out_dir: Path
    images_dir: Path
    ledger_path: Path
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    skipped_failed: int = 0
    not_run: int = 0
    resubmitted: int = 0
    removed: int = 0
    submits: int = 0
    requests: int = 0
    polls: int = 0
    rate_limited: int = 0
    peak_in_flight: int = 0
    learned_rpm: float | None = None
    polls_counted: bool = False
    wall_time: float = 0.0
    inference_times: list[float] = field(default_factory=list)
    recovered: int = 0  # submits in doubt (lost answers, a killed run's) found in the request history
    unreconciled: int = 0  # submits in doubt sent again unchecked (--resubmit-uncertain)
    uncertain: int = 0  # jobs whose submit may have been paid, not known at the end (not resubmitted)
    uncertain_why: str | None = None  # why the first of them is not known
    orphans: int = 0  # requests paid but held by no job (found in the history; in cost_usd)
    orphan_usd: float = 0.0
    remaining_credits: float | None = None  # as the API's answers last said
    from_history: int = 0  # images fetched from the history's generation_url (result gone)
    cost_usd: float | None = None  # the batch's cost so far (every request in the ledger)
    cost_failed_usd: float | None = None  # of which requests that FAILED
    cost_unknown: int = 0  # requests not priced (yet): accepted ones, and submits in doubt not settled
    estimated_cost: float | None = None  # before the run: jobs to submit x price per image
    budget_reached: bool = False
    refused: str | None = None  # why the run was refused before it sent anything (over --budget)
    emulated: bool = False  # run against the emulator: its cost and times are not Segmind's
    failure_rate_halted: bool = False  # --halt-on-failure-rate stopped the submits
    interrupted: bool = False
    fatal: str | None = None  # why the run stopped (401/403/404 on submit, 406), if it did
    write_error: str | None = None  # a file under OUT could not be written: the run halted
    unrecorded: list[str] = field(default_factory=list)  # accepted request ids the ledger lacks
    warnings: list[str] = field(default_factory=list)  # e.g. ledger lines that were skipped
    report_path: Path | None = None  # OUT/report.html, once written
    first_error: dict[str, Any] | None = None  # {at, key, code, error} of this run's first error
    last_error: dict[str, Any] | None = None  # ... and of its last

    def error(self, message: str, *, at: float, key: str | None = None, code: int | None = None) -> None:
        """Note an error of this run (a failed job, a fatal condition, a failed write)."""
        seen = {"at": format_ts(at), "key": key, "code": code, "error": message}
        if self.first_error is None:
            self.first_error = seen
        self.last_error = seen

    @property
    def done(self) -> int:
        """Jobs whose image exists now: completed by this run or skipped as complete."""
        return self.completed + self.skipped

    @property
    def all_done(self) -> bool:
        """Whether every job of the manifest has its image."""
        return self.done == self.total

    @property
    def images_per_minute(self) -> float | None:
        """Images produced by this run per minute of wall time."""
        return per_minute(self.completed, self.wall_time)

    @property
    def inference_p50(self) -> float | None:
        """Median server inference time (s) of this run's images."""
        return percentile(self.inference_times, 50)

    @property
    def inference_p95(self) -> float | None:
        """95th percentile server inference time (s) of this run's images."""
        return percentile(self.inference_times, 95)

    @property
    def requests_per_image(self) -> float | None:
        """API requests per image produced by this run."""
        return per_image(self.requests, self.completed)

    @property
    def polls_per_image(self) -> float | None:
        """Status polls per image produced by this run."""
        return per_image(self.polls, self.completed)

    @property
    def exit_code(self) -> int:
        """The process exit code this outcome calls for (:func:`.exits.outcome_exit_code`)."""
        return outcome_exit_code(self)

    def counts(self) -> dict[str, Any]:
        """The figures for the ledger's ``run_finished`` event (JSON-ready)."""
        return {figure.name: figure.value(self) for figure in FIGURES if figure.ledger}


@dataclass(frozen=True, slots=True)
class Figure:
    """One figure of a run's outcome, and where it is written.

    ``name`` is the :class:`Summary` attribute (or property) and its key in the ledger's
    ``run_finished`` when ``ledger``; ``json`` its place in ``summary.json`` (a dotted
    path for a nested object), None when it is not there; ``digits`` rounds it wherever
    it is written.
    """

    name: str
    json: str | None
    ledger: bool = True
    digits: int | None = None

    def value(self, summary: Summary) -> Any:
        """The figure of ``summary``, rounded as written."""
        value = getattr(summary, self.name)
        return value if self.digits is None else rounded(value, self.digits)


# The one list of a run's figures: run_finished records them in this order, summary.json
# places them in this order. Derived figures (ledger=False) are computed from the rest.
FIGURES: tuple[Figure, ...] = (
    Figure("total", "jobs.total"),
    Figure("done", "jobs.done", ledger=False),
    Figure("completed", "jobs.completed"),
    Figure("skipped", "jobs.skipped"),
    Figure("failed", "jobs.failed"),
    Figure("skipped_failed", "jobs.skipped_failed"),
    Figure("not_run", "jobs.not_run"),
    Figure("resubmitted", "jobs.resubmitted"),
    Figure("removed", "jobs.removed"),
    Figure("uncertain", "jobs.not_known_whether_paid"),
    Figure("wall_time", "wall_time_s", digits=3),
    Figure("images_per_minute", "images_per_minute", ledger=False, digits=2),
    Figure("requests", "requests"),
    Figure("submits", "submits"),
    Figure("polls", "polls"),
    Figure("requests_per_image", "requests_per_image", ledger=False, digits=2),
    Figure("rate_limited", "rate_limited"),
    Figure("learned_rpm", "learned_rpm", digits=2),
    Figure("inference_p50", "inference_p50_s", ledger=False, digits=3),
    Figure("inference_p95", "inference_p95_s", ledger=False, digits=3),
    Figure("cost_usd", "cost.usd"),
    Figure("cost_failed_usd", "cost.failed_usd"),
    Figure("cost_unknown", "cost.unpriced_requests"),
    Figure("estimated_cost", "cost.estimated_usd", ledger=False, digits=4),
    Figure("orphans", "cost.orphan_requests"),
    Figure("orphan_usd", "cost.orphan_usd", digits=6),
    Figure("remaining_credits", "cost.remaining_credits"),
    Figure("recovered", "submits_in_doubt.found_in_history"),
    Figure("unreconciled", "submits_in_doubt.sent_again_unchecked"),
    Figure("uncertain_why", "submits_in_doubt.why_not_known", ledger=False),
    Figure("emulated", "emulated", ledger=False),
    Figure("refused", "stopped.refused", ledger=False),
    Figure("interrupted", "stopped.interrupted"),
    Figure("fatal", "stopped.fatal"),
    Figure("write_error", "stopped.write_error"),
    Figure("budget_reached", "stopped.budget_reached"),
    Figure("failure_rate_halted", "stopped.failure_rate_halted"),
    Figure("peak_in_flight", None),
    Figure("polls_counted", None),
    Figure("from_history", None),
)


def summary_json(
    summary: Summary, *, started_at: float, finished_at: float, out: Path | None = None, **run: Any
) -> dict[str, Any]:
    """``OUT/summary.json``: the outcome of one run for schedulers and dashboards.

    ``run`` adds fields that describe the run rather than its outcome (manifest, shard).
    """
    s = summary
    code = s.exit_code
    data: dict[str, Any] = {
        "format": 1,
        **run,
        "out": str(out or s.out_dir),
        "started_at": format_ts(started_at),
        "finished_at": format_ts(finished_at),
        "exit_code": code,
        "exit_name": ExitCode(code).name.lower(),
        "exit_meaning": EXIT_MEANINGS[code],
    }
    for figure in FIGURES:
        if figure.json is not None:
            *groups, name = figure.json.split(".")
            place = data
            for group in groups:
                place = place.setdefault(group, {})
            place[name] = figure.value(s)
    data.update(
        {
            "first_error": s.first_error,
            "last_error": s.last_error,
            "unrecorded_requests": list(s.unrecorded),
            "warnings": list(s.warnings),
            "images": str(s.images_dir),
            "ledger": str(s.ledger_path),
            "report": None if s.report_path is None else str(s.report_path),
        }
    )
    return data


def outcome_fields(summary: Summary) -> dict[str, Any]:
    """The outcome in a few JSON fields: the run's last log line (``--log-format json``) and
    a notification carry them (``summary.json`` has everything)."""
    s = summary
    code = s.exit_code
    return {
        "exit_code": code,
        "exit_name": ExitCode(code).name.lower(),
        "jobs": {
            "total": s.total,
            "done": s.done,
            "failed": s.failed + s.skipped_failed,
            "not_run": s.not_run,
        },
        "cost_usd": s.cost_usd,
        "emulated": s.emulated,
        "wall_time_s": rounded(s.wall_time, 3),
        "refused": s.refused,
        "report": None if s.report_path is None else str(s.report_path),
    }


def outcome_line(summary: Summary, name: str | None = None) -> str:
    """The outcome in one line: the run's last log line, and a notification's text.

    ``nightly: exit 1 (jobs_failed): 13 of 14 jobs done, 1 failed, 0 not finished;
    0.56 USD; 6m 41s; report output/nightly/report.html``.
    """
    s = summary
    code = s.exit_code
    text = f"{name}: " if name else ""
    text += f"exit {code} ({ExitCode(code).name.lower()}): "
    if s.refused:
        return text + f"refused, nothing was sent: {s.refused}"
    text += f"{s.done} of {s.total} jobs done, {s.failed + s.skipped_failed} failed, {s.not_run} not finished"
    if s.cost_usd is not None:
        text += f"; {s.cost_usd:.2f} USD" + (" (emulated, not paid)" if s.emulated else "")
    text += f"; {format_duration(s.wall_time)}"
    if s.report_path is not None:
        text += f"; report {s.report_path}"
    return text


def format_summary(summary: Summary) -> str:
    """The multi-line summary printed at the end of a run."""
    s = summary
    lines = [
        f"{s.done}/{s.total} jobs done: {s.completed} completed, {s.skipped} skipped (already done), "
        f"{s.failed + s.skipped_failed} failed, {s.resubmitted} resubmitted",
    ]
    if s.skipped_failed:
        lines.append(
            f"  {s.skipped_failed} failed in an earlier run and were not retried (use --retry-failed)"
        )
    if s.not_run:
        lines.append(f"  {s.not_run} not finished (the run stopped early)")
    num = format_number
    speed = f"wall time {format_duration(s.wall_time)}, {num(s.images_per_minute, '.1f')} images/min"
    lines.append(speed + (" (emulated: the emulator's speed, not Segmind's)" if s.emulated else ""))
    lines.append(
        f"inference time p50 {num(s.inference_p50, '.1f', 's')}, p95 {num(s.inference_p95, '.1f', 's')}"
    )
    lines.append(
        f"requests/image {num(s.requests_per_image, '.2f')}, polls/image {num(s.polls_per_image, '.2f')}, "
        f"429s {s.rate_limited} ({s.submits} submits, {s.requests} requests), "
        f"peak in flight {s.peak_in_flight}"
    )
    if s.learned_rpm is not None:
        counted = "all requests" if s.polls_counted else "submits"
        lines.append(f"rate limit found: about {s.learned_rpm:.0f} {counted} per minute")
    if s.cost_usd is not None:
        # Requests that may have been paid and are not priced: the figure is a floor.
        floor = "at least " if s.cost_unknown else ""
        cost = f"cost of the batch so far {floor}{s.cost_usd:.2f} USD"
        if s.remaining_credits is not None:
            cost += f" ({s.remaining_credits:g} credits left)"
        if s.emulated:
            cost += " (emulated: at list price, nothing was paid)"
        if s.cost_failed_usd:
            cost += f" ({s.cost_failed_usd:.2f} USD on requests that failed)"
        if s.cost_unknown:
            cost += f"; {s.cost_unknown} requests not priced yet (a submit in doubt counts: it may be paid)"
        lines.append(cost)
    if s.recovered or s.unreconciled or s.from_history:
        lines.append(
            f"not paid twice: {s.recovered} submits in doubt found in the request history, "
            f"{s.from_history} images fetched from it; {s.unreconciled} submits sent again unchecked"
        )
    if s.uncertain:
        lines.append(
            f"not known whether paid: {s.uncertain} jobs whose submit got no usable answer and is not"
            f" in the request history (yet); not submitted again: {s.uncertain_why}"
        )
        lines.append(
            "  rerun later to settle them, or pass --resubmit-uncertain to submit them again"
            " (accepting that some may be paid twice)"
        )
    if s.orphans:
        lines.append(
            f"paid twice: {s.orphans} requests ({s.orphan_usd:.2f} USD) with the body of a submit in doubt"
            " are held by no job (counted in the cost above; the ledger's cost lines marked orphan)"
        )
    if s.budget_reached:
        lines.append("budget reached: submitted nothing more (raise --budget and rerun to go on)")
    if s.failure_rate_halted:
        lines.append(
            "halted: too many jobs failed (--halt-on-failure-rate); see the ledger's failed lines, then rerun"
        )
    if s.fatal:
        lines.append(f"stopped: {s.fatal}")
    if s.write_error:
        lines.append(f"stopped: {s.write_error}; once it can write (space, permissions), rerun to finish")
    if s.unrecorded:
        lines.append(
            f"{len(s.unrecorded)} accepted requests are not in the ledger (their ids are on stderr);"
            " the rerun submits those jobs again"
        )
    if s.interrupted:
        lines.append("interrupted: rerun the same command to finish the batch")
    for warning in s.warnings:
        lines.append(f"warning: {warning}")
    lines.append(f"images: {s.images_dir}")
    lines.append(f"ledger: {s.ledger_path}")
    if s.report_path is not None:
        lines.append(f"report: {s.report_path}")
    return "\n".join(lines)
