"""``batchgen report OUT``: write OUT/report.html, the self-contained page about a run."""

from __future__ import annotations

import argparse

from batchgen.cli.options import out_folder
from batchgen.errors import UsageError
from batchgen.outcome.exits import ExitCode

__all__ = ["configure", "handle"]


def configure(p: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    p.description = (
        "Write OUT/report.html, a self-contained page about the run (it opens from disk, "
        "offline), with thumbnails in OUT/thumbs/ and each contact sheet as a PNG in OUT/grids/. "
        "batchgen run writes it at the end of every run unless --no-report."
    )
    p.add_argument(
        "out", metavar="OUT", type=out_folder, help="the output folder of a run (holds ledger.jsonl)"
    )
    p.add_argument("--manifest", metavar="PATH", help="the manifest, if not where the last run recorded it")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Write the page and print its path."""
    from pathlib import Path

    from batchgen.cli.printing import print_warnings
    from batchgen.outcome.read import read_status
    from batchgen.report.page import write_report

    try:
        status = read_status(Path(args.out), manifest=args.manifest, keep_jobs=True)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:  # a ledger or manifest this user may not read
        raise UsageError(f"cannot read {exc.filename or args.out}: {exc.strerror or exc}") from None
    print_warnings(status.warnings)  # the page shows them too
    # A folder that refuses the page, its thumbnails or grids: LocalWriteError, exit 4.
    print(write_report(status))
    return ExitCode.OK
