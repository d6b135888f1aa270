"""The run's date, which ``{date}`` stands for in the run name, ``--out`` and filenames.

Never in prompts: a job's key must not change with the day, so a rerun the next day
still resumes the same jobs.
"""

from __future__ import annotations

import datetime
import re
import time

__all__ = ["run_date"]

_DATE = re.compile(r"\d{4}-\d\d-\d\d")


def run_date(text: str | None = None, *, now: float | None = None) -> str:
    """The run's date for ``{date}``: ``text`` if it is a real ``YYYY-MM-DD`` date (else
    :class:`ValueError`), or the UTC date at ``now`` (default: now)."""
    if text is not None:
        if not _DATE.fullmatch(text):
            raise ValueError(f"date {text!r} is not YYYY-MM-DD")
        try:
            return datetime.date.fromisoformat(text).isoformat()
        except ValueError as exc:  # 2026-02-30
            raise ValueError(f"date {text!r}: {exc}") from None
    moment = datetime.datetime.fromtimestamp(time.time() if now is None else now, tz=datetime.UTC)
    return moment.date().isoformat()
