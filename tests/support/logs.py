"""Reading batchgen's stderr in tests: log lines without their timestamp and level."""

from __future__ import annotations

import re

__all__ = ["unlogged"]

_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def unlogged(text: str) -> list[str]:
    """The lines of ``batchgen run``'s stderr without their timestamp and level."""
    return [_LOG_PREFIX.sub("", line) for line in text.splitlines()]
