"""``batchgen tidy OUT``: set aside the images of jobs no longer in the manifest."""

from __future__ import annotations

import argparse

from batchgen.cli.options import out_folder
from batchgen.errors import UsageError
from batchgen.outcome.exits import ExitCode

__all__ = ["configure", "handle"]


def configure(p: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    p.description = (
        "Move the images of jobs that are in OUT's ledger but no longer in the manifest (a job "
        "edited or removed leaves its image behind) from OUT/images/ to OUT/removed/<UTC time>/, "
        "keeping their paths. Nothing is deleted unless --delete. `batchgen status OUT` lists them."
    )
    p.add_argument(
        "out", metavar="OUT", type=out_folder, help="the output folder of a run (holds ledger.jsonl)"
    )
    p.add_argument("--manifest", metavar="PATH", help="the manifest, if not where the last run recorded it")
    p.add_argument("--dry-run", action="store_true", help="only list the images that would be moved")
    p.add_argument("--delete", action="store_true", help="delete them instead of moving them aside")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """List, move or delete the images; print what was done."""
    import time
    from pathlib import Path

    from batchgen.outcome.read import read_status
    from batchgen.output.aside import set_aside
    from batchgen.output.layout import LEDGER_NAME
    from batchgen.output.lock import lock_output

    out = Path(args.out)
    if not out.is_dir():
        raise UsageError(f"{out}: no such folder")
    if not (out / LEDGER_NAME).is_file():
        # Before the lock, which would leave its file in a folder that is not a run's.
        raise UsageError(f"{out}: not the output folder of a run (no {LEDGER_NAME})")
    # Held while the images are found and moved: no run writes the folder meanwhile.
    with lock_output(out):
        try:
            status = read_status(out, manifest=args.manifest)
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from None
        if status.manifest.keys is None:
            raise UsageError(
                f"cannot tell which images are no longer in the manifest: {status.manifest.problem}"
            )
        files = status.removed_images
        if not files:
            print(f"{out}: no image of a job no longer in the manifest is left under images/; nothing to do")
            return ExitCode.OK
        if args.dry_run:
            print(f"{len(files)} images of jobs no longer in the manifest (--dry-run: nothing moved):")
        else:
            target = set_aside(out, files, now=time.time(), delete=args.delete)
            done = "deleted" if target is None else f"moved to {out / target.relative_to(out.resolve())}/"
            print(f"{len(files)} images of jobs no longer in the manifest {done}:")
        for file in files:
            print(f"  {file}")
    return ExitCode.OK
