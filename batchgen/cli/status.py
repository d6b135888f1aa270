"""``batchgen status OUT...``: how the run in an output folder is doing, read without its lock."""

from __future__ import annotations

import argparse

from batchgen.cli.options import out_folder
from batchgen.errors import UsageError
from batchgen.outcome.exits import ExitCode

__all__ = ["configure", "handle"]


def configure(p: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    p.description = (
        "Read OUT/ledger.jsonl (without the run's lock; nothing is written) and say how the "
        "run is doing: jobs by state, failures by reason, jobs in flight against the 1-hour retention, "
        "what a rerun would do, images per minute, the last error."
    )
    p.add_argument(
        "out",
        metavar="OUT",
        type=out_folder,
        nargs="+",
        help="the output folder of a run (holds ledger.jsonl); several (the shards of a batch) are merged",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--manifest", metavar="PATH", help="the manifest, if not where the last run recorded it")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print the status of every folder, merged, as text or JSON."""
    from pathlib import Path

    from batchgen.outcome.read import merge_status, read_status
    from batchgen.outcome.status import status_json
    from batchgen.outcome.status_text import format_status

    try:
        status = merge_status([read_status(Path(out), manifest=args.manifest) for out in args.out])
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    print(status_json(status) if args.json else format_status(status))
    return ExitCode.OK
