"""Options several commands share: ``--shard``, ``--date``, the manifest commands' ``--max-jobs``,
and the OUT folder of ``report``, ``status`` and ``tidy``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchgen.manifest.shard import Shard

__all__ = ["add_date", "add_max_jobs", "add_shard", "out_folder"]


def add_shard(p: argparse.ArgumentParser) -> None:
    """``--shard K/N``: only the jobs of one shard (``args.shard``: a Shard or None)."""
    p.add_argument(
        "--shard",
        type=_shard,
        metavar="K/N",
        help="only the jobs of shard K of N (1 <= K <= N, split by job key; each shard its own folder)",
    )


def add_date(p: argparse.ArgumentParser) -> None:
    """``--date YYYY-MM-DD``: what ``{date}`` stands for (``args.date``: checked text or None)."""
    p.add_argument(
        "--date",
        type=_date,
        metavar="YYYY-MM-DD",
        help="the date {date} stands for in the name, --out and output.filename (default: today, UTC)",
    )


def add_max_jobs(p: argparse.ArgumentParser) -> None:
    """``--max-jobs N`` of ``validate`` and ``plan``: the job cap, its default filled in."""
    from batchgen.manifest.pipeline import DEFAULT_MAX_JOBS

    p.add_argument(
        "--max-jobs",
        type=int,
        default=DEFAULT_MAX_JOBS,
        help=f"refuse more jobs than this (default {DEFAULT_MAX_JOBS})",
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


def out_folder(text: str) -> str:
    """An OUT argument (argparse ``type``): refused when empty, as ``run --out ''`` is: an
    unset shell variable (``batchgen report "$OUT"``) would otherwise mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: name a run's output folder (. for the current one)")
    return text
