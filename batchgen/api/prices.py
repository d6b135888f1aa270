"""Costs read from answers: a price is a finite, non-negative number, or it is not one.

``metrics.cost`` in a status or result answer and ``credits_deduction`` in the request
history are the server's words; ``NaN``, ``1e999`` or ``-1000`` must never reach a file
as a cost (``summary.json`` would not be JSON, or a cost would be negative).
"""

from __future__ import annotations

import logging
import math
from typing import Any

__all__ = ["Prices"]

log = logging.getLogger("batchgen")


class Prices:
    """Costs read from answers (``metrics.cost``, the history's ``credits_deduction``): a
    finite, non-negative number (or a string of one), else not a price: ignored, and said
    once per ``source`` (``NaN``, ``1e999`` or ``-1000`` must never reach a file as a cost)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.refused = 0

    def read(self, value: Any) -> float | None:
        """``value`` as USD, or None (absent, or not a price)."""
        if value is None:
            return None
        number: float | None = None
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        if number is not None and math.isfinite(number) and number >= 0:
            return number
        self.refused += 1
        if self.refused == 1:
            log.warning("%s gave a cost that is not a price (%s); ignored", self.source, repr(value)[:40])
        return None
