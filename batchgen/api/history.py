"""The account's request history: find a request again, and learn what each one cost.

Segmind lists every request of a key, in flight ones included, at
``GET {history_url}/inference-request/request-history`` (paged, filtered by date and
model) and one at ``.../request-history/{request_id}``; see ``docs/segmind-api.md``. batchgen
reads it for three things, never in the hot path of a run:

- a submit whose answer never came back (the run was killed between the POST and the
  answer) is found by its body (:func:`match`), so the rerun adopts it instead of paying
  again;
- a request whose result is gone from the API (past retention) may still have its image
  at the row's ``generation_url``;
- ``credits_deduction``, the cost of each request, read in pages at the end of a run.

The page envelope and the timestamp names are not documented, so rows are read
defensively (:func:`parse_row`: a ``credits_deduction`` that is not a price is
ignored). A listing is read newest first and stops at the start of the caller's window,
never paging an account's older past (:meth:`History.scan`). Every call is bounded: a
timeout per request (the body's reading included), each answer read once within
:data:`~batchgen.api.answer.MAX_RESULT_BYTES` decoded and a depth cap
(:mod:`batchgen.api.answer`), a row cap per listing (scaled to the batch), a few tries on
a 429, a 5xx or a broken connection (``Retry-After`` capped). When the history cannot be
read (401/403/404, the network, an answer too large, too deep or not JSON)
:class:`HistoryUnavailable` says why and the caller falls back to what it would have
done without it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from batchgen.api.answer import ACCEPT_ENCODING, MAX_RESULT_BYTES, Answer, Unreadable, parse_json, read_answer
from batchgen.api.client import DEFAULT_BASE_URL, request_id_segment
from batchgen.api.key import check_api_key
from batchgen.api.origin import check_base_url
from batchgen.api.prices import Prices
from batchgen.api.retry_after import parse_retry_after
from batchgen.errors import ApiError, HistoryUnavailable  # this module's error, drawn in errors.py's tree

__all__ = [
    "DEFAULT_HISTORY_URL",
    "History",
    "HistoryRow",
    "HistoryUnavailable",
    "Intent",
    "body_matches",
    "history_url_for",
    "match",
    "parse_row",
]

DEFAULT_HISTORY_URL = "https://api.spotprod.segmind.com"
HISTORY_PATH = "/inference-request/request-history"
PER_PAGE = 100  # the most the API gives per page
# Rows one listing reads beyond twice the requests the caller made in its window: room for
# other work of the same key, without paging an account's whole day.
MAX_ROWS = 20_000
TIMEOUT = 30.0  # seconds, one history request
TRIES = 5  # a 429, a 5xx or a broken connection is tried again, this many times in all
RETRY_AFTER_CAP = 30.0
# Clocks differ: a row may carry a time a little before the ledger's "submitting" line.
CLOCK_SKEW = 300.0

# Answers that mean "no history here for this key", not "try later".
_NO_HISTORY = frozenset({401, 403, 404, 405, 410})

_CREATED_FIELDS = ("created_at", "model_created", "createdAt", "created", "timestamp", "requested_at")
_LIST_FIELDS = ("data", "rows", "results", "items", "requests", "history")


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One request as the history shows it (fields the API did not give are None)."""

    request_id: str
    status: str | None = None  # COMPLETED, FAILED or PENDING
    cost: float | None = None  # USD
    body: Mapping[str, Any] | None = None
    generation_url: str | None = None
    created: float | None = None  # epoch seconds
    model: str | None = None


@dataclass(frozen=True, slots=True)
class Intent:
    """A submit that may have reached the server: the job, the body sent, when."""

    key: str
    body: Mapping[str, Any]
    at: float  # epoch seconds of the ``submitting`` line


def history_url_for(base_url: str) -> str:
    """The history's base URL for an API base URL: Segmind's own host for Segmind's API,
    the same host for anything else (an emulator serves both)."""
    if base_url.rstrip("/") == DEFAULT_BASE_URL:
        return DEFAULT_HISTORY_URL
    return base_url.rstrip("/")


def _epoch(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value / 1000 if value > 1e11 else value)  # milliseconds or seconds
    if isinstance(value, str) and value:
        try:
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return stamp.timestamp()
    return None


def parse_row(obj: Any, *, prices: Prices | None = None) -> HistoryRow | None:
    """A history row from whatever the API sent; None when it has no request id.

    ``credits_deduction`` is read by ``prices`` (a new :class:`~batchgen.api.prices.Prices`
    if None): a value that is not a finite, non-negative number is no cost.
    """
    if not isinstance(obj, Mapping):
        return None
    request_id = obj.get("request_id") or obj.get("requestId") or obj.get("id")
    if not isinstance(request_id, str) or not request_id:
        return None
    body = obj.get("request_body")
    if isinstance(body, str):  # some APIs send the body as a JSON string
        try:
            body = parse_json(body.encode("utf-8", "replace"))
        except Unreadable:
            body = None
    cost = (prices or Prices("the request history")).read(obj.get("credits_deduction"))
    status = obj.get("model_status") or obj.get("status")
    url = obj.get("generation_url")
    created = next((c for c in map(_epoch, (obj.get(f) for f in _CREATED_FIELDS)) if c is not None), None)
    return HistoryRow(
        request_id=request_id,
        status=status.upper() if isinstance(status, str) else None,
        cost=cost,
        body=body if isinstance(body, Mapping) else None,
        generation_url=url if isinstance(url, str) and url else None,
        created=created,
        model=obj.get("model_name") if isinstance(obj.get("model_name"), str) else None,
    )


def _rows_of(page: Any) -> list[Any]:
    """The list of rows in a page, wherever the envelope keeps it."""
    if isinstance(page, list):
        return page
    if isinstance(page, Mapping):
        for name in _LIST_FIELDS:
            value = page.get(name)
            if isinstance(value, list):
                return value
            if isinstance(value, Mapping):  # {"data": {"rows": [...]}}
                inner = _rows_of(value)
                if inner:
                    return inner
    return []


def _same(sent: Any, recorded: Any) -> bool:
    if isinstance(sent, bool) or isinstance(recorded, bool):
        return sent is recorded
    if isinstance(sent, int | float) and isinstance(recorded, int | float):
        return float(sent) == float(recorded)
    return bool(sent == recorded)


def body_matches(sent: Mapping[str, Any], recorded: Mapping[str, Any]) -> bool:
    """Whether a history row's body is the body batchgen sent: every field sent is there
    with the same value (the server may add its defaults; 7 and 7.0 are the same)."""
    return all(name in recorded and _same(value, recorded[name]) for name, value in sent.items())


def _canonical(body: Mapping[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def match(intents: Sequence[Intent], rows: Iterable[HistoryRow], *, known: set[str]) -> dict[str, HistoryRow]:
    """Which request each intent became: job key -> row, for the intents found.

    Rows whose id the ledger already knows (``known``) belong to other submits. Several
    intents with the same body are matched to as many rows, in time order: the earliest
    intent takes the earliest row not before it (less :data:`CLOCK_SKEW`). An intent
    with no row is not there: its submit never reached the server.
    """
    free = sorted(
        (r for r in rows if r.request_id not in known and r.body is not None),
        key=lambda r: (r.created is None, r.created or 0.0),
    )
    by_body: dict[str, list[Intent]] = defaultdict(list)
    for intent in sorted(intents, key=lambda i: i.at):
        by_body[_canonical(intent.body)].append(intent)
    found: dict[str, HistoryRow] = {}
    taken: set[str] = set()
    for group in by_body.values():
        sent = group[0].body
        candidates = [r for r in free if r.body is not None and body_matches(sent, r.body)]
        for intent in group:
            for row in candidates:
                if row.request_id in taken:
                    continue
                if row.created is not None and row.created < intent.at - CLOCK_SKEW:
                    continue
                found[intent.key] = row
                taken.add(row.request_id)
                break
    return found


class History:
    """Read the request history of one key at ``base_url`` over the caller's HTTP client."""

    def __init__(
        self, http: httpx.AsyncClient, base_url: str, *, api_key: str | None, insecure: bool = False
    ) -> None:
        self._http = http
        self.base_url = check_base_url(base_url, insecure=insecure)
        self._api_key = None if api_key is None else check_api_key(api_key, where="api_key")
        self.prices = Prices("the request history")
        self.requests = 0

    def __repr__(self) -> str:  # never show the key
        return f"History(base_url={self.base_url!r})"

    async def _get(self, path: str, params: Mapping[str, Any] | None = None, *, tries: int = TRIES) -> Answer:
        """One GET, read within its caps; tried up to ``tries`` times on a 429, a 5xx or a
        broken connection."""
        url = f"{self.base_url}{path}"
        headers = {"x-api-key": self._api_key} if self._api_key else {}
        host = urlsplit(url).netloc
        for attempt in range(1, tries + 1):
            self.requests += 1
            last = attempt == tries
            # Built and sent here, never redirected: the key goes to this origin only,
            # whatever defaults the caller's client carries.
            request = self._http.build_request("GET", url, params=params)
            request.headers.pop("x-api-key", None)
            request.headers.update(headers)
            request.headers["accept-encoding"] = ACCEPT_ENCODING
            try:
                with anyio.fail_after(TIMEOUT):
                    response = await self._http.send(request, stream=True, follow_redirects=False)
                    if response.is_redirect:
                        await response.aclose()
                        raise HistoryUnavailable(
                            f"{host} answered {response.status_code} with a redirect (not followed)",
                            permanent=True,
                        )
                    answer = await read_answer(response, limit=MAX_RESULT_BYTES)
            except TimeoutError:
                if last:
                    raise HistoryUnavailable(f"{host}: no answer within {TIMEOUT:g} s") from None
                continue
            except httpx.HTTPError as exc:
                if last:
                    raise HistoryUnavailable(f"{host}: {type(exc).__name__}") from None
                await anyio.sleep(min(RETRY_AFTER_CAP, 0.25 * 2.0**attempt))
                continue
            code = answer.status_code
            if last or not (code == 429 or code >= 500):
                return answer
            wait = parse_retry_after(answer.headers.get("retry-after")) if code == 429 else None
            await anyio.sleep(min(RETRY_AFTER_CAP, wait if wait is not None else 0.25 * 2.0**attempt))
        raise AssertionError("unreachable")

    @staticmethod
    def _refused(answer: Answer) -> HistoryUnavailable:
        code = answer.status_code
        return HistoryUnavailable(f"the request history answered {code}", permanent=code in _NO_HISTORY)

    @staticmethod
    def _body(answer: Answer) -> Any:
        """The JSON of a 2xx answer, or :class:`HistoryUnavailable` saying why there is none."""
        if answer.body is None:
            raise HistoryUnavailable(f"an unusable answer: {answer.problem or 'no JSON'}")
        return answer.body

    async def get(self, request_id: str) -> HistoryRow | None:
        """The row of ``request_id``; None when the history does not know it (404)."""
        try:
            segment = request_id_segment(request_id)
        except ApiError as exc:
            raise HistoryUnavailable(str(exc), permanent=True) from None
        answer = await self._get(f"{HISTORY_PATH}/{segment}")
        if answer.status_code == 404:
            # Unknown request, or no history at this host at all: tell them apart by a listing.
            probe = await self._get(HISTORY_PATH, {"page": 1, "per_page": 1})
            if not probe.is_success:
                raise self._refused(probe)
            return None
        if not answer.is_success:
            raise self._refused(answer)
        return parse_row(self._body(answer), prices=self.prices)

    async def rows(
        self,
        *,
        since: float,
        until: float,
        model: str,
        wanted: Collection[str] = (),
        expected: int = 0,
        tries: int = TRIES,
    ) -> list[HistoryRow]:
        """Every row :meth:`scan` reads, oldest first."""
        found = [
            row
            async for row in self.scan(
                since=since, until=until, model=model, wanted=wanted, expected=expected, tries=tries
            )
        ]
        return sorted(found, key=lambda r: (r.created is None, r.created or 0.0))

    async def scan(
        self,
        *,
        since: float,
        until: float,
        model: str,
        wanted: Collection[str] = (),
        expected: int = 0,
        tries: int = TRIES,
    ) -> AsyncIterator[HistoryRow]:
        """The rows of ``model`` created from ``since`` to ``until`` (epoch seconds, each widened
        by the clock skew), newest first, each request once, as the pages come.

        The API filters by whole UTC days only, and one day of a busy key can hold far more
        than a batch, so the listing is read newest first (``sort_order=desc``), in windows
        of at most 31 days from the day of ``until`` back, and stops at the first row created
        before ``since`` (less :data:`CLOCK_SKEW`): the rest of the day, older still, is
        never paged. With ``wanted`` (request ids) it also stops once every one of them has
        been read. A listing that is not newest first (a row newer than the one before it)
        is read to the end of its days instead. ``expected``: the requests the caller knows
        it made in the window; a read raises :class:`HistoryUnavailable` after
        ``MAX_ROWS + 2 * expected`` rows (a key busy with other work at more than twice the
        batch's rate) rather than page on. Each page read is tried ``tries`` times at most.
        """
        floor = since - CLOCK_SKEW
        first = datetime.fromtimestamp(floor, tz=UTC).date()
        stop = datetime.fromtimestamp(until + CLOCK_SKEW, tz=UTC).date()
        cap = MAX_ROWS + 2 * max(0, expected)
        missing = set(wanted)
        seen: set[str] = set()
        read = 0
        newest_first = True
        previous: float | None = None  # created time of the last dated row read
        while stop >= first:
            start = max(first, stop - timedelta(days=30))
            page = 1
            past = False
            while True:
                if read >= cap:
                    raise HistoryUnavailable(
                        f"more than {cap:,} requests of {model} from {_minute(floor)} to {_minute(until)}",
                        permanent=True,
                    )
                answer = await self._get(
                    HISTORY_PATH,
                    {
                        "page": page,
                        "per_page": PER_PAGE,
                        "from_date": start.isoformat(),
                        "to_date": stop.isoformat(),
                        "model_name": model,
                        "sort_by": "model_created",
                        "sort_order": "desc",
                    },
                    tries=tries,
                )
                if not answer.is_success:
                    raise self._refused(answer)
                raw = _rows_of(self._body(answer))
                read += len(raw)
                for row in filter(None, (parse_row(item, prices=self.prices) for item in raw)):
                    if row.created is not None:
                        if previous is not None and row.created > previous:
                            newest_first = False  # not sorted as asked: no early stop on time
                        previous = row.created
                        if row.created < floor:
                            past = True
                            continue
                    if row.request_id in seen:
                        continue  # a row that moved to the next page while it was read
                    seen.add(row.request_id)
                    missing.discard(row.request_id)
                    yield row
                if wanted and not missing:
                    return
                if (past and newest_first) or len(raw) < PER_PAGE:
                    break
                page += 1
            if past and newest_first:
                return
            stop = start - timedelta(days=1)


def _minute(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
