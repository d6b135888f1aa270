"""The emulated per-key rate limit: a sliding window of 60 seconds."""

from __future__ import annotations

import math
from collections import deque

__all__ = ["WINDOW_SECONDS", "SlidingWindow"]

WINDOW_SECONDS = 60.0


class SlidingWindow:
    """At most ``limit`` requests per key in any 60 s; the ones refused are not counted."""

    def __init__(self) -> None:
        self._seen: dict[str, deque[float]] = {}

    def acquire(self, key: str, *, limit: int, now: float) -> int | None:
        """Count one request of ``key`` at ``now``; None if allowed, else whole seconds to wait."""
        times = self._seen.setdefault(key, deque())
        while times and times[0] <= now - WINDOW_SECONDS:
            times.popleft()
        if len(times) < limit:
            times.append(now)
            return None
        # A slot frees when the oldest request of the full window leaves it.
        oldest = times[len(times) - limit]
        return max(1, math.ceil(oldest + WINDOW_SECONDS - now))
