"""How long a server asks to be left alone: ``Retry-After`` and ``x-rate-limit-reset-at-utc``."""

from __future__ import annotations

import email.utils
import math
import time
from datetime import UTC, datetime

__all__ = ["parse_rate_limit_reset", "parse_retry_after"]


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT even when it forgets to say so
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def parse_rate_limit_reset(value: str | None, *, now: float) -> float | None:
    """Seconds until ``x-rate-limit-reset-at-utc`` (third parties report Segmind sends it on a
    429, often without ``Retry-After``), or None. Its format is not documented: an ISO-8601
    time (UTC when it names no zone), an HTTP date, or epoch seconds or milliseconds."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    when: float | None = None
    try:
        number = float(text)
    except ValueError:
        try:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            try:
                stamp = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        when = stamp.timestamp()
    else:
        if math.isfinite(number):
            when = number / 1000 if number > 1e11 else number
    if when is None:
        return None
    return max(0.0, when - now)
