"""``batchgen run MANIFEST``: generate every image of a manifest (resumable), in one ``anyio.run``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from batchgen.cli.logs import LOG_FORMATS
from batchgen.cli.options import add_date, add_shard
from batchgen.errors import UsageError

if TYPE_CHECKING:  # the emulator (Starlette) is imported only when the run uses it
    from batchgen.emulator import EmulatorConfig

__all__ = ["configure", "handle"]


def configure(p: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    from batchgen.engine.reconcile import DEFAULT_HISTORY_LAG
    from batchgen.manifest.pipeline import DEFAULT_MAX_JOBS

    p.description = (
        "Generate every image of a manifest. Running the same command again resumes: "
        "finished jobs are skipped, jobs in flight are polled, not paid for twice. "
        "The API key is read from SEGMIND_API_KEY."
    )
    p.add_argument(
        "manifest", help="YAML, CSV or JSON Lines manifest, or - to read one from standard input (then --out)"
    )
    p.add_argument(
        "--out", metavar="DIR", help="output directory, {date} filled in (default: output/<manifest name>/)"
    )
    add_shard(p)
    add_date(p)
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="API base URL (default: $BATCHGEN_BASE_URL or https://api.segmind.com)",
    )
    p.add_argument("--emulate", action="store_true", help="use a built-in emulator: no key, no network")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a plain http:// --base-url to another machine (the key travels unencrypted)",
    )
    p.add_argument(
        "--allow-private-image-hosts",
        action="store_true",
        help="fetch image URLs at loopback or private addresses (default: only when the API itself is at one;"
        " link-local and cloud metadata addresses are never fetched)",
    )
    p.add_argument(
        "--concurrency",
        type=_concurrency,
        default=None,
        metavar="N|auto",
        help="most jobs in flight at once (default auto: as many as the measured rate and latency need)",
    )
    p.add_argument(
        "--rpm",
        type=float,
        metavar="N",
        help="the plan's rate limit in requests per minute (5 free, 50 Pro); default: found from 429s",
    )
    p.add_argument(
        "--rpm-counts-polls",
        action="store_true",
        help="status polls and result fetches count against --rpm too (default: learned from a 429 on one)",
    )
    p.add_argument(
        "--history-url",
        metavar="URL",
        help="where the request history is read (default: Segmind's for Segmind's API, else --base-url)",
    )
    p.add_argument(
        "--history-lag",
        type=float,
        metavar="SECONDS",
        default=DEFAULT_HISTORY_LAG,
        help="how long the request history may take to show a request: a submit in doubt missing from "
        f"it is submitted again only once older than this (default {DEFAULT_HISTORY_LAG:g}: two hours)",
    )
    p.add_argument(
        "--resubmit-uncertain",
        action="store_true",
        help="submit again the jobs whose earlier submit may have been accepted but is not (yet) in the "
        "request history, accepting that some may be paid twice (default: leave them for a later rerun)",
    )
    p.add_argument(
        "--price-per-image",
        type=float,
        metavar="USD",
        help="price per image for the estimate and --budget (default: bria-text-to-image 0.04)",
    )
    p.add_argument(
        "--budget",
        type=float,
        metavar="USD",
        help="refuse a run estimated above this; stop submitting before spending more (exit 5)",
    )
    p.add_argument("--retry-failed", action="store_true", help="also retry jobs that failed permanently")
    p.add_argument(
        "--halt-on-failure-rate",
        type=float,
        metavar="P",
        help="stop submitting when more than P%% of the jobs this run finished failed (exit 6)",
    )
    p.add_argument(
        "--halt-min-jobs",
        type=int,
        default=20,
        metavar="N",
        help="--halt-on-failure-rate waits until N jobs finished (default 20)",
    )
    p.add_argument(
        "--max-jobs",
        type=int,
        metavar="N",
        help=f"refuse manifests expanding to more jobs (default {DEFAULT_MAX_JOBS})",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long one API request may take (default 30); a submit with no answer by then is in doubt",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="after the first Ctrl-C / SIGTERM, how long jobs in flight may take to finish (default 60)",
    )
    p.add_argument(
        "--time-scale",
        type=float,
        metavar="F",
        help="with --emulate: the built-in emulator's speed (default 0.02, 50x faster than Segmind)",
    )
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, help="progress bar (default: on a terminal)"
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="also log each retry and refetch")
    p.add_argument("-q", "--quiet", action="count", default=0, help="log only warnings and errors")
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="log lines on stderr: text (ISO time, level, message) or json (one object per line)",
    )
    p.add_argument(
        "--no-embed",
        dest="embed",
        action="store_false",
        help="save images byte for byte as downloaded (default: write the parameters into each image)",
    )
    p.add_argument(
        "--notify",
        metavar="URL",
        help="at the end, POST a short JSON message about the outcome to URL (Slack-style webhooks show its"
        " text); default $BATCHGEN_NOTIFY_URL, which keeps the URL, a secret, out of the process list",
    )
    p.add_argument(
        "--no-report",
        dest="report",
        action="store_false",
        help="do not write OUT/report.html at the end (default: write it; see batchgen report)",
    )
    p.set_defaults(handler=handle)


def _concurrency(text: str) -> int | None:
    """``--concurrency``: a positive integer, or ``auto`` (None)."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or 'auto'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1 (or auto)")
    return value


def handle(args: argparse.Namespace) -> int:
    """Check the settings, then run the manifest and print the summary; the summary's exit code."""
    import os

    from batchgen.api.key import read_api_key, redact

    if not args.emulate:
        # First of all, before the HTTP stack is imported: a key that cannot be one is
        # refused at once (exit 2); run() reads it again, the same way.
        read_api_key()

    import anyio

    from batchgen.cli.printing import stdout_lost
    from batchgen.engine.runner import EMULATE_TIME_SCALE, emulator_config, run
    from batchgen.engine.settings import RunSettings, limit_problems
    from batchgen.manifest.pipeline import DEFAULT_MAX_JOBS
    from batchgen.outcome.notify import NOTIFY_URL_ENV
    from batchgen.outcome.summary import Summary, format_summary

    settings = RunSettings(
        concurrency=args.concurrency,
        rpm=args.rpm,
        retry_failed=args.retry_failed,
        rpm_counts_polls=args.rpm_counts_polls,
        grace=args.grace,
        request_timeout=args.request_timeout,
        price_per_image=args.price_per_image,
        budget=args.budget,
        halt_failure_rate=args.halt_on_failure_rate,
        halt_min_jobs=args.halt_min_jobs,
        history_lag=args.history_lag,
        resubmit_uncertain=args.resubmit_uncertain,
        embed=args.embed,
        report=args.report,
    )
    problems = settings.problems()
    problems += limit_problems({"max_jobs": args.max_jobs, "time_scale": args.time_scale})
    if args.time_scale is not None and not args.emulate:
        problems.append(
            "--time-scale applies only with --emulate (batchgen measures a real server's speed itself)"
        )
    if args.manifest == "-" and not args.out:
        problems.append("a manifest read from standard input (-) has no folder of its own: pass --out DIR")
    if problems:
        raise UsageError("; ".join(problems))
    emulate: bool | EmulatorConfig = False
    if args.emulate:
        emulate = emulator_config(args.time_scale or EMULATE_TIME_SCALE)

    async def main() -> Summary:
        return await run(
            args.manifest,
            out_dir=args.out,
            base_url=args.base_url,
            history_url=args.history_url,
            emulate=emulate,
            settings=settings,
            max_jobs=args.max_jobs or DEFAULT_MAX_JOBS,
            progress=args.progress,
            handle_signals=True,
            insecure=args.insecure,
            date=args.date,
            shard=args.shard,
            notify=args.notify or os.environ.get(NOTIFY_URL_ENV) or None,
            allow_private_image_hosts=args.allow_private_image_hosts or None,
        )

    summary = anyio.run(main)
    try:
        print(redact(format_summary(summary)), flush=True)
    except OSError as exc:  # stdout full or gone: the run's outcome is its exit code and summary.json
        stdout_lost(exc)
    return summary.exit_code
