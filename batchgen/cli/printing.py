"""How the manifest commands print around their results: counts with their noun, warnings on stderr."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["plural", "print_warnings"]


def plural(n: int, noun: str) -> str:
    """``1 job``, ``2 jobs``, ``1,000 jobs``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def print_warnings(warnings: Sequence[object]) -> None:
    """Each of a manifest's warnings on stderr, as ``warning: FILE:LINE: where: what``."""
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
