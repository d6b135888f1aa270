"""The command line: argv -> settings -> one ``anyio.run`` -> exit code.

This is the only place that turns errors into exit codes and messages; nothing
below it prints tracebacks for expected failures.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from batchgen import __version__
from batchgen.cli.logs import LOG_FORMATS
from batchgen.errors import BatchgenError, LocalWriteError, LockedError, ManifestError, UsageError
from batchgen.outcome.summary import ExitCode

if TYPE_CHECKING:
    from batchgen.manifest.shard import Shard

__all__ = ["ExitCode", "main"]


# --- emulator --------------------------------------------------------------------


def _add_emulator(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from batchgen.emulator.config import IMAGE_FAULTS

    p = sub.add_parser("emulator", help="serve a local emulator of the Segmind API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="accept only this key (default: any non-empty key)")
    p.add_argument("--credits", type=int, help="credits, one per accepted submit (default: unlimited)")
    p.add_argument("--rpm", type=int, help="requests per minute per key (default: off)")
    p.add_argument("--rpm-counts-polls", action="store_true", help="status polls count against --rpm")
    p.add_argument("--workers", type=int, default=4, help="jobs processed at once (default 4)")
    p.add_argument("--time-scale", type=float, default=1.0, help="multiply inference times (e.g. 0.001)")
    p.add_argument("--blocked-terms", default="", help="comma-separated terms moderation blocks")
    p.add_argument("--ttl", type=float, default=3600.0, help="seconds results are kept (default 3600)")
    p.add_argument("--fault-rate", type=float, default=0.0, help="fraction answered 500/502/504")
    p.add_argument("--drop-rate", type=float, default=0.0, help="fraction closed without an answer")
    p.add_argument("--fault-seed", type=int, default=0, help="seed for faults (reproducible)")
    p.add_argument("--latency", type=float, default=0.0, metavar="MS", help="added delay per request")
    p.add_argument(
        "--image-fault",
        choices=IMAGE_FAULTS,
        default="none",
        help="how image downloads misbehave: html page, endless or slow body, 403, 410 (default none)",
    )
    p.add_argument(
        "--image-fault-rate", type=float, default=1.0, help="fraction of image downloads hit (default 1)"
    )
    p.add_argument("--retry-after", metavar="VALUE", help="Retry-After sent on every 429 (default: computed)")
    p.add_argument("--stall-rate", type=float, default=0.0, help="fraction of jobs that never finish")
    p.add_argument(
        "--answer-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="hold each accepted submit's answer this long (to kill a client mid-request)",
    )
    p.add_argument("--price", type=float, default=0.04, help="USD each accepted request costs (default 0.04)")
    p.add_argument(
        "--history-ttl",
        type=float,
        default=7 * 24 * 3600.0,
        metavar="SECONDS",
        help="seconds the request history keeps a request (default 7 days)",
    )
    p.add_argument(
        "--history",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the request history (default on)",
    )
    p.add_argument("--image-format", choices=["png", "jpeg"], default="png")
    p.add_argument("--image-size", type=int, default=512, help="long side in pixels (default 512)")
    p.add_argument("--seed", type=int, default=0, help="seed for inference-time draws")
    p.set_defaults(handler=_cmd_emulator)


def _cmd_emulator(args: argparse.Namespace) -> int:
    from batchgen.emulator import EmulatorConfig, serve

    try:
        config = EmulatorConfig(
            api_key=args.api_key,
            credits=args.credits,
            rpm=args.rpm,
            rpm_counts_polls=args.rpm_counts_polls,
            workers=args.workers,
            time_scale=args.time_scale,
            blocked_terms=tuple(t.strip() for t in args.blocked_terms.split(",") if t.strip()),
            ttl=args.ttl,
            fault_rate=args.fault_rate,
            drop_rate=args.drop_rate,
            fault_seed=args.fault_seed,
            latency_ms=args.latency,
            image_fault=args.image_fault,
            image_fault_rate=args.image_fault_rate,
            retry_after=args.retry_after,
            stall_rate=args.stall_rate,
            answer_delay=args.answer_delay,
            price=args.price,
            history_ttl=args.history_ttl,
            history=args.history,
            image_format=args.image_format,
            image_size=args.image_size,
            seed=args.seed,
        )
    except ValueError as exc:  # an out-of-range option: say which, no traceback
        raise UsageError(f"emulator: {exc}") from None
    serve(config, host=args.host, port=args.port)
    return ExitCode.OK


# --- manifests: validate, plan, schema -------------------------------------------


def _add_manifest_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from batchgen.manifest.pipeline import DEFAULT_MAX_JOBS

    cap = f"refuse more jobs than this (default {DEFAULT_MAX_JOBS})"
    p = sub.add_parser("validate", help="check a manifest; print a one-line summary")
    p.add_argument("manifest")
    _add_date(p)
    p.add_argument("--max-jobs", type=int, default=DEFAULT_MAX_JOBS, help=cap)
    p.set_defaults(handler=_cmd_validate)

    p = sub.add_parser("plan", help="show the jobs a manifest expands to")
    p.add_argument("manifest")
    p.add_argument("--jsonl", action="store_true", help="print every job as one JSON line")
    _add_date(p)
    p.add_argument("--limit", type=int, default=20, help="rows in the table (default 20)")
    p.add_argument("--max-jobs", type=int, default=DEFAULT_MAX_JOBS, help=cap)
    p.add_argument(
        "--rpm", type=float, metavar="N", help="the plan's rate limit, for the time estimate (default 50)"
    )
    p.add_argument(
        "--price-per-image",
        type=float,
        metavar="USD",
        help="for the cost estimate (default: the price table)",
    )
    p.set_defaults(handler=_cmd_plan)

    p = sub.add_parser("schema", help="print the JSON Schema of the YAML manifest format")
    p.set_defaults(handler=_cmd_schema)


def _add_date(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shard",
        type=_shard,
        metavar="K/N",
        help="only the jobs of shard K of N (1 <= K <= N, split by job key; each shard its own folder)",
    )
    p.add_argument(
        "--date",
        type=_date,
        metavar="YYYY-MM-DD",
        help="the date {date} stands for in the name, --out and output.filename (default: today, UTC)",
    )


def _shard(text: str) -> Shard:
    from batchgen.manifest.shard import Shard

    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _date(text: str) -> str:
    from batchgen.manifest.dates import run_date

    try:
        return run_date(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _print_warnings(warnings: Sequence[object]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _cmd_validate(args: argparse.Namespace) -> int:
    from batchgen.manifest.pipeline import manifest_jobs

    found = manifest_jobs(args.manifest, max_jobs=args.max_jobs, shard=args.shard, date=args.date)
    counts = found.count()
    _print_warnings(found.warnings)
    in_shard = f" in shard {args.shard}" if args.shard else ""
    print(
        f"{args.manifest}: ok, {_plural(counts.jobs, 'job')}{in_shard}, "
        f"{_plural(counts.duplicates, 'duplicate')} dropped, {_plural(counts.warnings, 'warning')}"
    )
    return ExitCode.OK


def _cmd_plan(args: argparse.Namespace) -> int:
    import json
    from collections.abc import Iterator

    from batchgen.engine.estimate import estimate
    from batchgen.manifest.job import Job
    from batchgen.manifest.pipeline import manifest_jobs
    from batchgen.manifest.template import render_value

    found = manifest_jobs(args.manifest, max_jobs=args.max_jobs, shard=args.shard, date=args.date)
    manifest = found.manifest
    _print_warnings(found.warnings)
    if args.jsonl:
        for job in found:
            print(json.dumps(job.to_json(), ensure_ascii=False))
        return ExitCode.OK
    header = ("#", "key", "seed", "ratio", "mode", "labels", "filename", "prompt")
    rows: list[tuple[str, ...]] = []

    def tabulated() -> Iterator[Job]:
        for job in found:
            if len(rows) < args.limit:
                labels = " ".join(" ".join(f"{k}={render_value(v)}" for k, v in job.labels.items()).split())
                labels = labels if len(labels) <= 40 else labels[:39] + "…"
                prompt = " ".join(job.params.prompt.split())  # one table row per job, even multi-line
                prompt = prompt if len(prompt) <= 60 else prompt[:59] + "…"
                rows.append(
                    (
                        str(job.index),
                        job.short_key,
                        str(job.seed),
                        job.params.aspect_ratio,
                        job.params.mode,
                        labels,
                        job.filename,
                        prompt,
                    )
                )
            yield job

    guess = estimate(tabulated(), rpm=args.rpm, price_per_image=args.price_per_image)
    total = guess.jobs
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    shown = f"showing {len(rows):,} of " if len(rows) < total else ""
    print(
        f"{shown}{_plural(total, 'job')} ({_plural(found.duplicates, 'duplicate')} dropped)"
        f"{f' in shard {args.shard}' if args.shard else ''}"
        f" from {args.manifest}, model {manifest.model}, run name {manifest.name}"
    )
    print(f"estimate: {guess.describe().replace(' jobs to submit', ' jobs')}")
    return ExitCode.OK


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from batchgen.manifest.schema import manifest_schema

    print(json.dumps(manifest_schema(), indent=2))
    return ExitCode.OK


# --- run -------------------------------------------------------------------------


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="generate every image of a manifest (resumable)",
        description="Generate every image of a manifest. Running the same command again resumes: "
        "finished jobs are skipped, jobs in flight are polled, not paid for twice. "
        "The API key is read from SEGMIND_API_KEY.",
    )
    p.add_argument("manifest", help="YAML or CSV manifest")
    p.add_argument(
        "--out", metavar="DIR", help="output directory, {date} filled in (default: output/<manifest name>/)"
    )
    _add_date(p)
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
        "--max-jobs", type=int, metavar="N", help="refuse manifests expanding to more jobs (default 100000)"
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
        "--no-report",
        dest="report",
        action="store_false",
        help="do not write OUT/report.html at the end (default: write it; see batchgen report)",
    )
    p.set_defaults(handler=_cmd_run)


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


def _cmd_run(args: argparse.Namespace) -> int:
    import anyio

    from batchgen.emulator import EmulatorConfig
    from batchgen.engine.runner import EMULATE_TIME_SCALE, emulator_config, run
    from batchgen.engine.settings import RunSettings
    from batchgen.manifest.pipeline import DEFAULT_MAX_JOBS
    from batchgen.outcome.summary import format_summary

    settings = RunSettings(
        concurrency=args.concurrency,
        rpm=args.rpm,
        retry_failed=args.retry_failed,
        rpm_counts_polls=args.rpm_counts_polls,
        grace=args.grace,
        price_per_image=args.price_per_image,
        budget=args.budget,
        halt_failure_rate=args.halt_on_failure_rate,
        halt_min_jobs=args.halt_min_jobs,
        embed=args.embed,
        report=args.report,
    )
    problems = settings.problems()
    if args.max_jobs is not None and args.max_jobs < 1:
        problems.append(f"max jobs {args.max_jobs} must be at least 1")
    if args.time_scale is not None and not args.emulate:
        problems.append(
            "--time-scale applies only with --emulate (batchgen measures a real server's speed itself)"
        )
    if args.time_scale is not None and not args.time_scale > 0:
        problems.append(f"time scale {args.time_scale} must be above 0")
    if problems:
        raise UsageError("; ".join(problems))
    emulate: bool | EmulatorConfig = False
    if args.emulate:
        emulate = emulator_config(args.time_scale or EMULATE_TIME_SCALE)

    async def main() -> int:
        summary = await run(
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
        )
        print(format_summary(summary))
        return summary.exit_code

    return anyio.run(main)


# --- status ----------------------------------------------------------------------


def _add_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="how the run in an output folder is doing (safe while it runs)",
        description="Read OUT/ledger.jsonl (without the run's lock; nothing is written) and say how the "
        "run is doing: jobs by state, failures by reason, jobs in flight against the 1-hour retention, "
        "what a rerun would do, images per minute, the last error.",
    )
    p.add_argument(
        "out",
        metavar="OUT",
        nargs="+",
        help="the output folder of a run (holds ledger.jsonl); several (the shards of a batch) are merged",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--manifest", metavar="PATH", help="the manifest, if not where the last run recorded it")
    p.set_defaults(handler=_cmd_status)


def _cmd_status(args: argparse.Namespace) -> int:
    from pathlib import Path

    from batchgen.outcome.status import format_status, merge_status, read_status, status_json

    try:
        status = merge_status([read_status(Path(out), manifest=args.manifest) for out in args.out])
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    print(status_json(status) if args.json else format_status(status))
    return ExitCode.OK


def _add_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="write OUT/report.html: header, failures, contact sheets, gallery",
        description="Write OUT/report.html, a self-contained page about the run (it opens from disk, "
        "offline), with thumbnails in OUT/thumbs/ and each contact sheet as a PNG in OUT/grids/. "
        "batchgen run writes it at the end of every run unless --no-report.",
    )
    p.add_argument("out", metavar="OUT", help="the output folder of a run (holds ledger.jsonl)")
    p.add_argument("--manifest", metavar="PATH", help="the manifest, if not where the last run recorded it")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from batchgen.report.page import write_report

    try:
        path = write_report(Path(args.out), manifest=args.manifest)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    print(path)
    return ExitCode.OK


# --- entry point -----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchgen",
        description="Batch image generation on Segmind's Bria text-to-image API.",
    )
    parser.add_argument("--version", action="version", version=f"batchgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_status(sub)
    _add_report(sub)
    _add_manifest_commands(sub)
    _add_emulator(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one batchgen command and return its exit code."""
    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    say = _errors_to(args)
    try:
        return int(handler(args))
    except ManifestError as exc:
        for problem in exc.problems:
            say(str(problem))
        noun = "problem" if len(exc.problems) == 1 else "problems"
        say(f"error: {len(exc.problems)} {noun}; nothing was submitted")
        return ExitCode.USAGE
    except (UsageError, LockedError) as exc:
        say(f"error: {exc}")
        return ExitCode.USAGE
    except LocalWriteError as exc:
        say(f"error: {exc}; nothing was submitted")
        return ExitCode.WRITE_FAILED
    except BatchgenError as exc:
        say(f"error: {exc}")
        return ExitCode.FATAL_API
    except KeyboardInterrupt:
        say("interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`batchgen plan --jsonl | head`): not an error. Point
        # stdout at devnull so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK


def _errors_to(args: argparse.Namespace) -> Callable[[str], None]:
    """Where a command's final error goes: ``run`` logs it (timestamp, level, its
    ``--log-format``), so a cron log can date it; other commands print it plainly."""
    if getattr(args, "log_format", None) is None:
        return lambda text: print(text, file=sys.stderr)
    import logging

    from batchgen.cli.logs import configure

    configure(verbosity=args.verbose - args.quiet, fmt=args.log_format)
    log = logging.getLogger("batchgen")
    return lambda text: log.error("%s", text.removeprefix("error: "))
