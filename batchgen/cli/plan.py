"""``batchgen plan MANIFEST``: the jobs a manifest expands to, as a table or JSON lines, and an estimate."""

from __future__ import annotations

import argparse

from batchgen.cli.options import add_date, add_max_jobs, add_shard
from batchgen.outcome.exits import ExitCode

__all__ = ["configure", "handle"]


def configure(p: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    p.add_argument("manifest", help="YAML, CSV or JSON Lines manifest, or - to read standard input")
    p.add_argument(
        "--jsonl",
        action="store_true",
        help="print each job as one JSON line (a JSON Lines manifest: `run -` reads it back)",
    )
    add_shard(p)
    add_date(p)
    p.add_argument(
        "--limit",
        type=_limit,
        metavar="N",
        help="print the first N jobs (default: 20 in the table, every job with --jsonl)",
    )
    add_max_jobs(p)
    p.add_argument(
        "--rpm", type=float, metavar="N", help="the plan's rate limit, for the time estimate (default 50)"
    )
    p.add_argument(
        "--rpm-counts-polls",
        action="store_true",
        help="status polls and result fetches count against --rpm too (the estimate then counts them)",
    )
    p.add_argument(
        "--price-per-image",
        type=float,
        metavar="USD",
        help="for the cost estimate (default: the price table)",
    )
    p.set_defaults(handler=handle)


def _limit(text: str) -> int:
    """``--limit``: a whole number of jobs, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def handle(args: argparse.Namespace) -> int:
    """Stream the jobs (``--jsonl``), or tabulate the first ``--limit`` and estimate them all."""
    import json
    from collections.abc import Iterator

    from batchgen.cli.printing import plural, print_warnings
    from batchgen.engine.estimate import estimate
    from batchgen.manifest.job import Job
    from batchgen.manifest.pipeline import manifest_jobs
    from batchgen.manifest.template import render_value

    found = manifest_jobs(args.manifest, max_jobs=args.max_jobs, shard=args.shard, date=args.date)
    manifest = found.manifest
    print_warnings(found.warnings)
    if args.jsonl:
        for n, job in enumerate(found):
            if args.limit is not None and n >= args.limit:
                break
            print(json.dumps(job.to_json(), ensure_ascii=False))
        return ExitCode.OK
    limit = 20 if args.limit is None else args.limit
    header = ("#", "key", "seed", "ratio", "mode", "labels", "filename", "prompt")
    rows: list[tuple[str, ...]] = []

    def tabulated() -> Iterator[Job]:
        for job in found:
            if len(rows) < limit:
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

    guess = estimate(
        tabulated(),
        rpm=args.rpm,
        price_per_image=args.price_per_image,
        polls="told" if args.rpm_counts_polls else "unknown",
    )
    total = guess.jobs
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    shown = f"showing {len(rows):,} of " if len(rows) < total else ""
    print(
        f"{shown}{plural(total, 'job')} ({plural(found.duplicates, 'duplicate')} dropped)"
        f"{f' in shard {args.shard}' if args.shard else ''}"
        f" from {manifest.display}, model {manifest.model}, run name {manifest.name}"
    )
    print(f"estimate: {guess.describe().replace(' jobs to submit', ' jobs')}")
    return ExitCode.OK
