"""``batchgen validate MANIFEST``: check a manifest and print one line of counts."""

from __future__ import annotations

import argparse

from batchgen.cli.options import add_date, add_max_jobs, add_shard
from batchgen.outcome.exits import ExitCode

__all__ = ["configure", "handle"]


def configure(p: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    p.add_argument("manifest", help="YAML, CSV or JSON Lines manifest, or - to read standard input")
    add_shard(p)
    add_date(p)
    add_max_jobs(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Expand the manifest fully (every duplicate and clash found); print the warnings, then the counts."""
    from batchgen.cli.printing import plural, print_warnings
    from batchgen.manifest.pipeline import manifest_jobs

    found = manifest_jobs(args.manifest, max_jobs=args.max_jobs, shard=args.shard, date=args.date)
    counts = found.count()
    print_warnings(found.warnings)
    in_shard = f" in shard {args.shard}" if args.shard else ""
    print(
        f"{found.manifest.display}: ok, {plural(counts.jobs, 'job')}{in_shard}, "
        f"{plural(counts.duplicates, 'duplicate')} dropped, {plural(counts.warnings, 'warning')}"
    )
    return ExitCode.OK
