"""Segmind's v2 async API over an injected ``httpx.AsyncClient``: HTTP -> typed results.

Every HTTP outcome becomes either a small result object or one of the errors in
:mod:`batchgen.errors`; deciding what to do about an error (retry, wait, give up)
belongs to :mod:`batchgen.control.retry`. The client never sleeps and never retries.

The API key goes to the API origin only (scheme, host and port of the base URL) and is
never logged or put in an error message. Whatever ``httpx.AsyncClient`` the caller
passes, even one carrying its own ``x-api-key`` header or set to follow redirects:

- every request, and every hop of a redirect, is checked: ``x-api-key`` is removed from
  any request to another origin (an image CDN, a redirect target);
- redirects are followed here, one hop at a time (never by httpx): an API request
  redirected to another origin stops the run (:class:`FatalApiError`) rather than
  follow it without the key or with it; an image download may be redirected anywhere,
  without the key;
- the base URL must be ``https://``; plain ``http://`` only to a loopback host
  (``localhost``, ``127.0.0.0/8``, ``::1``), unless ``insecure``
  (:func:`~batchgen.api.origin.check_base_url`).

Every answer is read once, within a cap on its decoded size and shape
(:mod:`batchgen.api.answer`); request URLs are built from ids in one place
(:func:`request_id_segment`); image URLs, which the server chose, are checked for where
they lead (:mod:`batchgen.api.hosts`). No error text carries a header's value.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from batchgen.api.answer import (
    ACCEPT_ENCODING,
    MAX_ANSWER_BYTES,
    MAX_RESULT_BYTES,
    Answer,
    Unreadable,
    decoded,
    read_answer,
)
from batchgen.api.hosts import CONNECT_GUARD, ImageHosts
from batchgen.api.key import check_api_key, keep_secret, redact
from batchgen.api.origin import check_base_url, origin
from batchgen.api.prices import Prices
from batchgen.api.retry_after import parse_rate_limit_reset, parse_retry_after
from batchgen.errors import (
    BadRequest,
    FatalApiError,
    ImageInvalid,
    ImageUnavailable,
    InsufficientCredits,
    RateLimited,
    RequestFailed,
    RequestNotFound,
    SubmitUncertain,
    TransientError,
)
from batchgen.output.images import decode_data_uri

__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_BASE_URL",
    "MAX_REDIRECTS",
    "Download",
    "RequestResult",
    "SegmindClient",
    "ServerState",
    "StatusResult",
    "Submitted",
    "request_id_segment",
]

log = logging.getLogger("batchgen")

DEFAULT_BASE_URL = "https://api.segmind.com"
API_KEY_HEADER = "x-api-key"
MAX_REDIRECTS = 5

ServerState = Literal["QUEUED", "PROCESSING", "COMPLETED"]  # what a status answer can say (FAILED raises)
_STATES: tuple[ServerState, ...] = ("QUEUED", "PROCESSING", "COMPLETED")
_TERMINAL = ("COMPLETED", "FAILED")

# A submit that failed with one of these never left this machine: safe to send again.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.ProxyError,
)

# Codes that mean "the network or a gateway let us down", worth another try.
_TRANSIENT_CODES = frozenset({408, 425, 500, 502, 503, 504})

# What a request id may hold to be put in a URL path as is: RFC 3986's unreserved
# characters, starting with a letter or digit (so never "." or ".."). Segmind's are UUIDs.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,199}")


def request_id_segment(request_id: str) -> str:
    """``request_id`` as one URL path segment; :class:`TransientError` when it holds anything
    else than letters, digits and ``._~-`` (a ``/``, ``?``, ``#``, ``..`` would take the key
    to a path the API never meant). The one check every URL built from an id passes."""
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        shown = repr(request_id)[:60]
        raise TransientError(
            f"request id {shown} is not one batchgen puts in a URL (letters, digits and ._~- only)",
            request_id=None,
        )
    return request_id


@dataclass(frozen=True, slots=True)
class Submitted:
    """The answer to a submit: the request id and where to poll and fetch it."""

    request_id: str
    status_url: str
    response_url: str


@dataclass(frozen=True, slots=True)
class StatusResult:
    """The state of a request; ``inference_time`` (server seconds) once it is known."""

    request_id: str
    state: ServerState
    inference_time: float | None = None
    cost: float | None = None  # USD, when the answer's metrics carry it
    remaining_credits: float | None = None


@dataclass(frozen=True, slots=True)
class RequestResult:
    """The full body of a COMPLETED request: the model ``output`` and its metrics."""

    request_id: str
    output: Any
    inference_time: float | None = None
    cost: float | None = None  # USD, when the answer's metrics carry it
    remaining_credits: float | None = None


@dataclass(frozen=True, slots=True)
class Download:
    """An image being downloaded: its claimed content type and a stream of its bytes."""

    content_type: str | None
    chunks: AsyncIterator[bytes]


def _error_text(answer: Answer) -> str:
    """The server's own explanation: ``error`` (what the SDK reads), else ``detail``/``message``."""
    body = answer.body
    if isinstance(body, Mapping):
        for name in ("error", "detail", "message"):
            value = body.get(name)
            if value:
                text = value if isinstance(value, str) else json.dumps(value)[:200]
                return redact(text)
    text = answer.text or answer.problem or ""
    return redact(text) or (answer.reason_phrase or f"HTTP {answer.status_code}")


def _metric(body: Mapping[str, Any], name: str) -> Any:
    """The answer's ``metrics.<name>``, as sent (None when absent)."""
    metrics = body.get("metrics")
    return metrics.get(name) if isinstance(metrics, Mapping) else None


def _figure(value: Any) -> float | None:
    """A finite, non-negative number, or None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def _fault(exc: httpx.HTTPError) -> str:
    """A network fault as a message: its kind, and its text unless that could echo a
    header's value (httpx's "Illegal header value b'...'" would copy the key)."""
    if isinstance(exc, httpx.LocalProtocolError):
        return f"{type(exc).__name__} (a request header is not valid HTTP)"
    text = redact(str(exc))[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SegmindClient:
    """The v2 protocol (submit, status, result, download) over an injected HTTP client.

    ``http`` is owned by the caller, who also decides its transport (the real network,
    an ``httpx.ASGITransport`` on the emulator, or an ``httpx.MockTransport``) and its
    timeouts. ``api_key`` goes in ``x-api-key`` on requests to ``base_url``'s host.
    ``wall_clock`` turns an HTTP-date ``Retry-After`` into seconds (injectable for tests).
    ``allow_private_image_hosts``: image URLs at loopback or private addresses are
    fetched (None: only when the API itself is at one; see :mod:`batchgen.api.hosts`).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        wall_clock: Callable[[], float] = time.time,
        insecure: bool = False,
        allow_private_image_hosts: bool | None = None,
    ) -> None:
        self._http = http
        self.base_url = check_base_url(base_url, insecure=insecure)
        self._origin = origin(self.base_url)
        self._api_key = None if api_key is None else check_api_key(api_key, where="api_key")
        if (default := http.headers.get(API_KEY_HEADER)) is not None:
            keep_secret(default)  # a key the caller's client carries is kept out of every text too
        self._wall_clock = wall_clock
        self.image_hosts = ImageHosts(self.base_url, allow_private=allow_private_image_hosts)
        self.prices = Prices("the API")
        # Counters for the summary: API requests (submits, polls, result fetches, 429s and
        # retries included), status polls among them, and image downloads (not API requests).
        self.requests = 0
        self.polls = 0
        self.downloads = 0

    def __repr__(self) -> str:  # never show the key
        return f"SegmindClient(base_url={self.base_url!r})"

    def _guard(self, request: httpx.Request) -> None:
        """The key on a request to the API origin, and on no other (the caller's client
        may carry it as a default header: it is taken off here)."""
        if origin(request.url) == self._origin:
            if self._api_key:
                request.headers[API_KEY_HEADER] = self._api_key
        else:
            request.headers.pop(API_KEY_HEADER, None)

    async def _exchange(self, method: str, url: str, *, api: bool, **kwargs: Any) -> httpx.Response:
        """Send one request, following redirects here, hop by hop, each hop guarded; the
        answer is streamed (its body not read: read it, or close it).

        ``api``: a request to the API, which may not be redirected to another origin
        (:class:`FatalApiError`). Otherwise an image download: each hop's host is checked
        before it is asked (:mod:`batchgen.api.hosts`), and so is the address it answered
        from (:class:`ImageUnavailable`).
        """
        request = self._http.build_request(method, url, **kwargs)
        for _ in range(MAX_REDIRECTS + 1):
            self._guard(request)
            request.headers["accept-encoding"] = ACCEPT_ENCODING
            if api:
                response = await self._http.send(request, stream=True, follow_redirects=False)
            else:
                response = await self._fetch(request)
            following = response.next_request
            if following is None:
                return response
            await response.aclose()
            if api and origin(following.url) != self._origin:
                target = f"{following.url.scheme}://{following.url.netloc.decode('ascii', 'replace')}"
                raise FatalApiError(
                    f"the API answered {response.status_code} with a redirect to {target}, another host;"
                    " the key is not sent there (if that is the API's new address, use it as the base URL)",
                    status_code=response.status_code,
                )
            request = following
        raise TransientError(f"more than {MAX_REDIRECTS} redirects from {url.split('?', 1)[0]}")

    async def _fetch(self, request: httpx.Request) -> httpx.Response:
        """One hop of an image download, to an image host the rules allow (checked before the
        request, at the connection and on the answer's peer address)."""
        why = self.image_hosts.check_url(request.url)
        guard = self.image_hosts.guard(request.url)
        token = CONNECT_GUARD.set(guard)
        try:
            if why is None:
                response = await self._http.send(request, stream=True, follow_redirects=False)
                why = self.image_hosts.check_peer(response)
                if why is None:
                    return response
                await response.aclose()
        except httpx.ConnectError:
            if guard is None or guard.refused is None:
                raise
            why = guard.refused
        finally:
            CONNECT_GUARD.reset(token)
        refused = f"image URL refused: {why}; not fetched"
        raise ImageUnavailable(refused, detail=refused)

    async def _send(
        self, method: str, url: str, *, request_id: str | None, limit: int = MAX_ANSWER_BYTES, **kwargs: Any
    ) -> Answer:
        self.requests += 1
        try:
            return await read_answer(await self._exchange(method, url, api=True, **kwargs), limit=limit)
        except httpx.TimeoutException as exc:
            raise TransientError(f"timed out: {type(exc).__name__}", request_id=request_id) from None
        except httpx.TransportError as exc:
            raise TransientError(f"connection failed: {_fault(exc)}", request_id=request_id) from None

    def _raise_for(self, answer: Answer, *, on_submit: bool, request_id: str | None) -> None:
        """Turn a non-2xx answer into the matching :mod:`batchgen.errors` exception."""
        code = answer.status_code
        detail = _error_text(answer)
        kw: dict[str, Any] = {"status_code": code, "request_id": request_id, "detail": detail}

        def said(what: str) -> str:
            # "406 insufficient credits", not "406 insufficient credits: insufficient credits".
            return what if detail.strip().lower() in what.lower() else f"{what}: {detail}"

        if code == 400:
            raise BadRequest(said("400 bad request"), **kw)
        if code == 401:
            raise FatalApiError(said("401 unauthorized") + " (check SEGMIND_API_KEY)", **kw)
        if code == 403:
            raise FatalApiError(said("403 forbidden") + " (the key lacks a permission)", **kw)
        if code == 404:
            if on_submit:
                raise FatalApiError(said("404 on submit") + " (unknown model slug?)", **kw)
            raise RequestNotFound(f"404 request {request_id} unknown or expired", **kw)
        if code == 410:
            if on_submit:
                raise FatalApiError(said("410 the model was retired"), **kw)
            raise RequestNotFound(f"410 request {request_id} gone", **kw)
        if code == 406:
            # Segmind's 406 means "insufficient credits" or "invalid content type" (reported
            # by third parties): only the message tells them apart.
            if "content" in detail.lower() and "type" in detail.lower():
                raise FatalApiError(said("406 invalid content type"), **kw)
            raise InsufficientCredits(said("406 insufficient credits"), **kw)
        if code == 422:
            raise RequestFailed(f"request failed: {detail}", **kw)
        if code == 429:
            now = self._wall_clock()
            wait = parse_retry_after(answer.headers.get("retry-after"), now=now)
            if wait is None:
                wait = parse_rate_limit_reset(answer.headers.get("x-rate-limit-reset-at-utc"), now=now)
            raise RateLimited(said("429 rate limited"), retry_after=wait, **kw)
        if code in _TRANSIENT_CODES or code >= 500:
            raise TransientError(f"{code} server error: {detail}", **kw)
        if 400 <= code < 500:
            raise BadRequest(f"{code} rejected: {detail}", **kw)
        raise TransientError(f"unexpected HTTP {code}: {detail}", **kw)

    async def submit(self, model: str, params: Mapping[str, Any]) -> Submitted:
        """``POST /v2/<model>``: queue one request and return its id and URLs.

        A submit has three outcomes. Accepted: the id is returned. Refused: the server
        answered that it did not take it (4xx), or the request never left (no connection):
        the error says which. Uncertain: the request may have reached the server and no
        usable answer came back (:class:`SubmitUncertain`): a timeout or a connection
        closed after sending, a 5xx (a gateway may have passed it on), a 2xx without a
        usable request id (none, one that cannot go in a URL, or an answer over its size
        or depth cap).
        """
        url = f"{self.base_url}/v2/{model.strip('/')}"
        self.requests += 1
        try:
            answer = await read_answer(await self._exchange("POST", url, api=True, json=dict(params)))
        except _NOT_SENT as exc:
            raise TransientError(f"submit not sent: {_fault(exc)}") from None
        except httpx.TransportError as exc:
            raise SubmitUncertain(f"submit sent, no answer: {type(exc).__name__}", answered=False) from None
        body = answer.body
        code = answer.status_code
        if code >= 500:
            detail = _error_text(answer)
            raise SubmitUncertain(
                f"submit answered {code}: {detail}", answered=True, status_code=code, detail=detail
            )
        if not answer.is_success:
            self._raise_for(answer, on_submit=True, request_id=None)
        if not isinstance(body, Mapping):
            why = answer.content_type + (f"; {answer.problem}" if answer.problem else "")
            raise SubmitUncertain(
                f"submit answered {code} without a JSON object ({why})", answered=True, status_code=code
            )
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            keys = sorted(str(k)[:40] for k in body)[:20]
            raise SubmitUncertain(
                f"submit answered {code} without a request_id (keys: {keys})", answered=True, status_code=code
            )
        try:
            request_id_segment(request_id)
        except TransientError as exc:
            raise SubmitUncertain(f"submit answered {code}: {exc}", answered=True, status_code=code) from None
        return Submitted(
            request_id=request_id,
            status_url=self.status_url(request_id),
            response_url=self.response_url(request_id),
        )

    def status_url(self, request_id: str) -> str:
        """Where the state of ``request_id`` is polled (built from the base URL, so a resumed
        run needs nothing but the id from the ledger; :func:`request_id_segment`)."""
        return f"{self.base_url}/v2/requests/{request_id_segment(request_id)}/status"

    def response_url(self, request_id: str) -> str:
        """Where the full body of ``request_id`` is fetched."""
        return f"{self.base_url}/v2/requests/{request_id_segment(request_id)}"

    async def _get_terminal_tolerant(self, url: str, request_id: str, *, limit: int) -> Mapping[str, Any]:
        answer = await self._send("GET", url, request_id=request_id, limit=limit)
        body = answer.body
        # A body announcing COMPLETED or FAILED is authoritative whatever the HTTP code
        # (the API serves FAILED under 422), exactly as the segmind SDK reads it.
        if isinstance(body, Mapping) and body.get("status") in _TERMINAL:
            if body["status"] == "FAILED":
                detail = _error_text(answer)
                raise RequestFailed(
                    f"request failed: {detail}",
                    status_code=answer.status_code,
                    request_id=request_id,
                    detail=detail,
                    cost=self.prices.read(_metric(body, "cost")),
                )
            return body
        if not answer.is_success:
            self._raise_for(answer, on_submit=False, request_id=request_id)
        if not isinstance(body, Mapping):
            why = answer.problem or "not a JSON object"
            raise TransientError(
                f"answer unusable: {why}", status_code=answer.status_code, request_id=request_id
            )
        return body

    async def status(self, request_id: str) -> StatusResult:
        """``GET /v2/requests/<id>/status``; raises :class:`RequestFailed` for FAILED."""
        url = self.status_url(request_id)
        self.polls += 1
        body = await self._get_terminal_tolerant(url, request_id, limit=MAX_ANSWER_BYTES)
        state = body.get("status")
        if state not in _STATES:
            raise TransientError(f"unknown status {repr(state)[:40]}", request_id=request_id)
        return StatusResult(
            request_id=request_id,
            state=state,
            inference_time=_figure(_metric(body, "inference_time")),
            cost=self.prices.read(_metric(body, "cost")),
            remaining_credits=_figure(_metric(body, "remaining_credits")),
        )

    async def result(self, request_id: str) -> RequestResult:
        """``GET /v2/requests/<id>``: the output of a COMPLETED request.

        Raises :class:`RequestFailed` for FAILED and :class:`TransientError` if the request
        is not finished after all (the caller polls again).
        """
        url = self.response_url(request_id)
        body = await self._get_terminal_tolerant(url, request_id, limit=MAX_RESULT_BYTES)
        if body.get("status") != "COMPLETED":
            raise TransientError(f"result asked while {repr(body.get('status'))[:40]}", request_id=request_id)
        return RequestResult(
            request_id=request_id,
            output=body.get("output"),
            inference_time=_figure(_metric(body, "inference_time")),
            cost=self.prices.read(_metric(body, "cost")),
            remaining_credits=_figure(_metric(body, "remaining_credits")),
        )

    @asynccontextmanager
    async def download(self, url: str, *, max_bytes: int | None = None) -> AsyncIterator[Download]:
        """Stream the bytes of an image URL (or the inline bytes of a data URI).

        Use as ``async with client.download(url) as d: async for chunk in d.chunks``.
        The image host's refusals are the job's, never the run's: 403/404/410 (and any
        other 4xx) are :class:`ImageUnavailable` (fetch the result again for a fresh
        URL), 5xx and network faults :class:`TransientError`; so is a URL that leads
        where image URLs may not (:mod:`batchgen.api.hosts`: :class:`ImageUnavailable`,
        never fetched). More than ``max_bytes`` decoded bytes (announced, streamed or in a
        data URI, judged by its length before it is decoded) is :class:`ImageInvalid`: no
        image is that large, and an endless body must not fill the disk or the memory.
        """
        limit = sys.maxsize if max_bytes is None else max_bytes
        if url[:5].lower() == "data:":
            # A malformed data URI raises ImageInvalid, which is retried like a bad download.
            data, media_type = decode_data_uri(url, max_bytes=max_bytes)

            async def inline() -> AsyncIterator[bytes]:
                yield data

            yield Download(content_type=media_type, chunks=inline())
            return
        self.downloads += 1
        try:
            response = await self._exchange("GET", url, api=False)
            try:
                # After redirects: the host that actually answered.
                host = response.url.netloc.decode("ascii", "replace") or "the image host"
                if not response.is_success:
                    code = response.status_code
                    detail = f"{host} answered {code} {response.reason_phrase or ''}".strip()
                    if code in _TRANSIENT_CODES or code >= 500 or code == 429:
                        raise TransientError(f"image download: {detail}", status_code=code)
                    raise ImageUnavailable(f"image download: {detail}", status_code=code, detail=detail)
                announced = response.headers.get("content-length", "")
                if max_bytes is not None and announced.isdigit() and int(announced) > max_bytes:
                    raise ImageInvalid(
                        f"{host} announced {int(announced):,} bytes, over the {max_bytes:,}-byte cap"
                    )
                content_type = response.headers.get("content-type")
                chunks = _guarded(decoded(response, limit=limit, what=f"the image from {host}"))
                yield Download(content_type=content_type, chunks=chunks)
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise TransientError(f"download timed out: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            raise TransientError(f"download failed: {_fault(exc)}") from None


async def _guarded(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """An image body as it streams: past its cap (or not decodable) :class:`ImageInvalid`,
    network faults met while streaming it :class:`TransientError`."""
    try:
        async for chunk in chunks:
            yield chunk
    except Unreadable as exc:
        raise ImageInvalid(f"{exc} (not an image)") from None
    except httpx.TimeoutException as exc:
        raise TransientError(f"download timed out: {type(exc).__name__}") from None
    except httpx.TransportError as exc:
        raise TransientError(f"download broke off: {_fault(exc)}") from None
