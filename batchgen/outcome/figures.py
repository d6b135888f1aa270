"""The figures a run is measured by, and how they are printed: one definition of each.

The end-of-run :class:`~batchgen.outcome.summary.Summary` (from the run's counters) and
``batchgen status`` / the report (:class:`~batchgen.outcome.status.Status`, from the
ledger) measure the same things over different spans; both compute them here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["format_duration", "format_number", "per_image", "per_minute", "percentile", "rounded"]


def per_minute(count: int, seconds: float) -> float | None:
    """``count`` per minute of ``seconds`` (images per minute); None when no time passed."""
    return count * 60 / seconds if seconds > 0 else None


def per_image(count: int, images: int) -> float | None:
    """``count`` per image made (requests per image, polls per image); None when none was made."""
    return count / images if images else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values`` with linear interpolation; None if empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rounded(value: float | None, digits: int) -> float | None:
    """``value`` rounded to ``digits`` decimals as JSON carries it; None stays None."""
    return None if value is None else round(value, digits)


def format_duration(seconds: float) -> str:
    """``83.4`` -> ``"1m 23s"``; under a minute with one decimal (``"4.2s"``)."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def format_number(value: float | None, fmt: str, unit: str = "") -> str:
    """A figure for people: ``value`` in ``fmt`` with ``unit``, or ``n/a`` when it is unknown."""
    return "n/a" if value is None else f"{value:{fmt}}{unit}"
