"""The account's request history, as Segmind serves it at ``/inference-request/request-history``.

Every accepted request gets a row, kept ``history_ttl`` seconds (7 days by default),
far longer than a result (``ttl``, one hour): its cost (``credits_deduction``), the
body as sent (``request_body``), its state (``PENDING`` / ``COMPLETED`` / ``FAILED``)
and, once completed, a ``generation_url`` that stays downloadable as long as the row.

Query parameters follow the ``segmind`` 1.3.0 SDK: ``page``, ``per_page`` (1-100),
``from_date`` / ``to_date`` (``YYYY-MM-DD``, UTC, inclusive; at most 31 days apart;
default the last 7 days), ``model_name`` (substring), ``status``, ``sort_by``
(``model_created``, ``model_name``, ``credits_deduction``), ``sort_order``. Rows are
per key: a key sees only its own requests. The page envelope (``data``, ``page``,
``per_page``, ``total``, ``total_pages``) is this emulator's choice: Segmind does not
document it, and batchgen reads it defensively.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from batchgen.emulator.jobs import EmulatedJob

__all__ = ["HISTORY_STATUSES", "HistoryQueryError", "HistoryRow", "RequestHistory"]

HISTORY_STATUSES = ("COMPLETED", "FAILED", "PENDING")
_SORTS = ("model_created", "model_name", "credits_deduction")
_MAX_SPAN_DAYS = 31
_DEFAULT_SPAN_DAYS = 7


class HistoryQueryError(ValueError):
    """A query parameter out of range: the answer is a 400 with this message."""


@dataclass(slots=True)
class HistoryRow:
    """One accepted request as the history remembers it."""

    job: EmulatedJob
    api_key: str
    body: dict[str, Any]
    price: float

    def status(self, now: float, ttl: float) -> str:
        """``PENDING`` until it finished; a job that never finished fails at ``ttl``."""
        state = self.job.state(now)
        if state in ("QUEUED", "PROCESSING"):
            if self.job.stalled and now >= self.job.submitted + ttl:
                return "FAILED"
            return "PENDING"
        return state


class RequestHistory:
    """Rows of accepted requests in submission order, forgotten after ``history_ttl``.

    ``wall_origin`` and ``clock_origin`` map the emulator's clock to epoch seconds for
    the rows' timestamps and the date filters.
    """

    def __init__(self, *, wall_origin: float, clock_origin: float) -> None:
        self._wall_origin = wall_origin
        self._clock_origin = clock_origin
        self._rows: dict[str, HistoryRow] = {}
        self._order: deque[str] = deque()
        self._version = 0  # changes whenever a row is added or forgotten
        # The last listing, kept while nothing changed: a client paging through 100,000 rows
        # asks for the same one 1,000 times, and filtering and sorting it each time took
        # 70 ms a page.
        self._listed: tuple[tuple[Any, ...], list[HistoryRow]] | None = None

    def wall(self, clock_time: float) -> float:
        """Epoch seconds of an emulator clock reading."""
        return self._wall_origin + (clock_time - self._clock_origin)

    def add(self, job: EmulatedJob, *, api_key: str, body: dict[str, Any], price: float) -> None:
        self._rows[job.request_id] = HistoryRow(job=job, api_key=api_key, body=body, price=price)
        self._order.append(job.request_id)
        self._version += 1

    def prune(self, *, now: float, history_ttl: float) -> None:
        """Forget rows older than ``history_ttl``."""
        while self._order:
            row = self._rows[self._order[0]]
            if now < row.job.submitted + history_ttl:
                break
            self._order.popleft()
            del self._rows[row.job.request_id]
            self._version += 1

    def get(self, request_id: str, *, api_key: str, now: float, lag: float = 0.0) -> HistoryRow | None:
        """The row of ``request_id`` if this key made it, it is still kept, and it shows
        already (``lag`` seconds after its submit)."""
        row = self._rows.get(request_id)
        if row is None or row.api_key != api_key or now < row.job.submitted + lag:
            return None
        return row

    def public(self, request_id: str) -> HistoryRow | None:
        """The row of ``request_id`` whoever made it (for its ``generation_url``)."""
        return self._rows.get(request_id)

    def query(
        self, params: dict[str, str], *, api_key: str, now: float, ttl: float, lag: float = 0.0
    ) -> tuple[list[HistoryRow], int]:
        """The rows of one page for ``params`` (the query string) and the total count; a
        request shows only ``lag`` seconds after its submit."""
        page = _int(params, "page", 1, low=1)
        per_page = _int(params, "per_page", 20, low=1, high=100)
        today = datetime.fromtimestamp(self.wall(now), tz=UTC).date()
        to_date = _date(params, "to_date", today)
        from_date = _date(params, "from_date", to_date - timedelta(days=_DEFAULT_SPAN_DAYS))
        if from_date > to_date:
            raise HistoryQueryError(f"from_date {from_date} is after to_date {to_date}")
        if (to_date - from_date).days > _MAX_SPAN_DAYS:
            raise HistoryQueryError(f"from_date to to_date spans more than {_MAX_SPAN_DAYS} days")
        status = params.get("status")
        if status is not None and status not in HISTORY_STATUSES:
            raise HistoryQueryError(f"status {status!r} is not one of {', '.join(HISTORY_STATUSES)}")
        sort_by = params.get("sort_by", "model_created")
        if sort_by not in _SORTS:
            raise HistoryQueryError(f"sort_by {sort_by!r} is not one of {', '.join(_SORTS)}")
        order = params.get("sort_order", "desc")
        if order not in ("asc", "desc"):
            raise HistoryQueryError(f"sort_order {order!r} is not asc or desc")
        model = params.get("model_name")
        start = datetime.combine(from_date, datetime.min.time(), tzinfo=UTC).timestamp()
        end = datetime.combine(to_date + timedelta(days=1), datetime.min.time(), tzinfo=UTC).timestamp()
        # Without a status filter the listing changes only with the rows and with which of
        # them show yet (the lag): the same listing is served from what was kept.
        shown = sum(1 for row in self._rows.values() if now >= row.job.submitted + lag) if lag else -1
        query = (api_key, model, start, end, sort_by, order, self._version, shown)
        first = (page - 1) * per_page
        if status is None and self._listed is not None and self._listed[0] == query:
            listed = self._listed[1]
            return listed[first : first + per_page], len(listed)
        rows = [
            row
            for row in self._rows.values()
            if row.api_key == api_key
            and now >= row.job.submitted + lag
            and start <= self.wall(row.job.submitted) < end
            and (model is None or model in row.job.model)
            and (status is None or row.status(now, ttl) == status)
        ]
        sort_key: Any = {
            "model_created": lambda r: r.job.submitted,
            "model_name": lambda r: (r.job.model, r.job.submitted),
            "credits_deduction": lambda r: (r.price, r.job.submitted),
        }[sort_by]
        rows.sort(key=sort_key, reverse=order == "desc")
        if status is None:
            self._listed = (query, rows)
        return rows[first : first + per_page], len(rows)

    def to_json(
        self, row: HistoryRow, *, now: float, ttl: float, base_url: str, extension: str
    ) -> dict[str, Any]:
        """One row as the API shows it."""
        job = row.job
        status = row.status(now, ttl)
        finished_at = job.end if status in ("COMPLETED", "FAILED") and not math.isinf(job.end) else None
        if status == "FAILED" and finished_at is None:
            finished_at = job.submitted + ttl
        error = job.error if job.error is not None else ("timed out" if status == "FAILED" else None)
        return {
            "request_id": job.request_id,
            "model_name": job.model,
            "model_status": status,
            "credits_deduction": row.price,
            "request_body": row.body,
            "generation_url": f"{base_url}/generations/{job.request_id}.{extension}"
            if status == "COMPLETED"
            else None,
            "latency_ms": None if finished_at is None else round((finished_at - job.submitted) * 1000),
            "created_at": _iso(self.wall(job.submitted)),
            "updated_at": _iso(self.wall(finished_at if finished_at is not None else job.submitted)),
            "error": error,
        }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int(params: dict[str, str], name: str, default: int, *, low: int, high: int | None = None) -> int:
    text = params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HistoryQueryError(f"{name} {text!r} is not a whole number") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise HistoryQueryError(f"{name} {value} must be {bound}")
    return value


def _date(params: dict[str, str], name: str, default: date) -> date:
    text = params.get(name)
    if text is None:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise HistoryQueryError(f"{name} {text!r} is not a date (YYYY-MM-DD)") from None
