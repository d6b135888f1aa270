"""How the commands print around their results: counts with their noun, warnings on stderr,
and what happens when stdout cannot take the output."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

__all__ = ["plural", "print_warnings", "stdout_lost"]


def plural(n: int, noun: str) -> str:
    """``1 job``, ``2 jobs``, ``1,000 jobs``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def print_warnings(warnings: Sequence[object]) -> None:
    """Each of a manifest's warnings on stderr, as ``warning: FILE:LINE: where: what``."""
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def stdout_lost(exc: OSError) -> None:
    """stdout refused the output (a full disk, ``> /dev/full``, a terminal that closed, a reader
    that went away): say so on stderr (unless it is gone too, or it was only a closed pipe),
    and point stdout at the null device so the interpreter's last flush does not fail again."""
    if not isinstance(exc, BrokenPipeError):
        with contextlib.suppress(OSError, ValueError):
            print(f"warning: stdout did not take the output: {exc.strerror or exc}", file=sys.stderr)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
