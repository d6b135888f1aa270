"""The Segmind v2 client against odd server answers (httpx.MockTransport)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from batchgen.api.client import SegmindClient
from batchgen.api.image_urls import find_image_urls
from batchgen.api.origin import check_base_url
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
    UsageError,
)

BASE = "https://api.example.test"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
SUBMIT_OK = {
    "request_id": "r-1",
    "status": "QUEUED",
    "status_url": f"{BASE}/v2/requests/r-1/status",
    "response_url": f"{BASE}/v2/requests/r-1",
}

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler, *, key: str | None = "secret-key", now: float = 0.0) -> SegmindClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return SegmindClient(http, base_url=BASE, api_key=key, wall_clock=lambda: now)


def answer(code: int, body: Any = None, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(code, json=body, headers=headers)

    return handler


# --- submit ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_submit_posts_params_with_key_and_returns_ids() -> None:
    """Submit POSTs the JSON params to /v2/<model> with x-api-key and returns the three ids."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=SUBMIT_OK)

    client = make_client(handler)
    sub = await client.submit("bria-text-to-image", {"prompt": "a cat", "seed": 7})
    assert sub.request_id == "r-1"
    assert sub.status_url.endswith("/v2/requests/r-1/status")
    assert sub.response_url.endswith("/v2/requests/r-1")
    assert seen[0].method == "POST"
    assert seen[0].url.path == "/v2/bria-text-to-image"
    assert seen[0].headers["x-api-key"] == "secret-key"
    assert json.loads(seen[0].content) == {"prompt": "a cat", "seed": 7}
    assert "secret-key" not in repr(client)


@pytest.mark.anyio
async def test_submit_without_request_id_is_uncertain() -> None:
    """A 2xx submit answer without request_id fails loudly (as the SDK does), as an uncertain
    submit: the server answered, and may have accepted the request."""
    client = make_client(answer(200, {"status": "QUEUED"}))
    with pytest.raises(SubmitUncertain, match="request_id") as info:
        await client.submit("bria-text-to-image", {"prompt": "x"})
    assert info.value.answered and info.value.status_code == 200


@pytest.mark.anyio
async def test_submit_answered_with_an_html_page_is_uncertain() -> None:
    """A 200 HTML page (a proxy, a maintenance page) is not a refusal: the submit may have passed."""
    client = make_client(
        lambda r: httpx.Response(200, text="<html>maintenance</html>", headers={"content-type": "text/html"})
    )
    with pytest.raises(SubmitUncertain, match="text/html"):
        await client.submit("bria-text-to-image", {"prompt": "x"})


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (400, BadRequest),
        (401, FatalApiError),
        (403, FatalApiError),
        (404, FatalApiError),
        (406, InsufficientCredits),
        (408, TransientError),
        (410, FatalApiError),
        (429, RateLimited),
        (500, SubmitUncertain),
        (502, SubmitUncertain),
        (504, SubmitUncertain),
        (503, SubmitUncertain),
        (418, BadRequest),
    ],
)
@pytest.mark.anyio
async def test_submit_status_codes_map_to_errors(code: int, error: type[Exception]) -> None:
    """Every HTTP error code of a submit maps to its typed error, carrying code and server detail."""
    client = make_client(answer(code, {"error": f"boom {code}"}))
    with pytest.raises(error) as info:
        await client.submit("bria-text-to-image", {"prompt": "x"})
    assert getattr(info.value, "status_code", None) == code
    assert getattr(info.value, "detail", None) == f"boom {code}"


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("dropped")]
)
@pytest.mark.anyio
async def test_transport_errors_of_a_poll_are_transient(exc: Exception) -> None:
    """Connection failures, timeouts and dropped connections of a poll become TransientError."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    client = make_client(handler)
    with pytest.raises(TransientError):
        await client.status("r-1")


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.ConnectError("refused"), TransientError),
        (httpx.ConnectTimeout("no route"), TransientError),
        (httpx.PoolTimeout("pool full"), TransientError),
        (httpx.ReadTimeout("slow"), SubmitUncertain),
        (httpx.WriteError("reset"), SubmitUncertain),
        (httpx.RemoteProtocolError("dropped"), SubmitUncertain),
        (httpx.ReadError("reset"), SubmitUncertain),
    ],
)
@pytest.mark.anyio
async def test_a_submit_that_never_left_is_refused_one_that_may_have_is_uncertain(
    exc: Exception, error: type[Exception]
) -> None:
    """No connection: the POST never left (safe to send again). A timeout or a drop after
    sending: the server may have accepted it (uncertain, no HTTP answer)."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    client = make_client(handler)
    with pytest.raises(error) as info:
        await client.submit("bria-text-to-image", {"prompt": "x"})
    if isinstance(info.value, SubmitUncertain):
        assert not info.value.answered


@pytest.mark.parametrize(
    ("message", "error"),
    [("insufficient credits", InsufficientCredits), ("invalid content type", FatalApiError)],
)
@pytest.mark.anyio
async def test_406_is_told_apart_by_its_message(message: str, error: type[Exception]) -> None:
    """Segmind's 406 means no credits or a wrong content type: only the message tells."""
    client = make_client(answer(406, {"error": message}))
    with pytest.raises(error, match=message):
        await client.submit("bria-text-to-image", {"prompt": "x"})


@pytest.mark.anyio
async def test_a_429_without_retry_after_honours_the_reset_header() -> None:
    """No Retry-After but x-rate-limit-reset-at-utc 12 s ahead: the wait is 12 s."""
    reset = datetime.fromtimestamp(1_000_012, tz=UTC).isoformat().replace("+00:00", "Z")
    client = make_client(
        answer(429, {"error": "rate_limit_exceeded"}, {"x-rate-limit-reset-at-utc": reset}), now=1_000_000
    )
    with pytest.raises(RateLimited) as info:
        await client.submit("bria-text-to-image", {"prompt": "x"})
    assert info.value.retry_after == pytest.approx(12.0)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2001-09-09T01:46:52Z", 12.0),
        ("2001-09-09T01:46:52", 12.0),
        ("Sun, 09 Sep 2001 01:46:52 GMT", 12.0),
        ("1000000012", 12.0),
        ("1000000012000", 12.0),
        ("2001-09-09T01:46:30Z", 0.0),
        ("soon", None),
        ("nan", None),
        ("", None),
    ],
)
def test_rate_limit_reset_formats(value: str, seconds: float | None) -> None:
    """The reset time is read as ISO-8601, an HTTP date or epoch seconds/ms; nonsense is ignored."""
    assert parse_rate_limit_reset(value, now=1_000_000_000 + 0.0) == (
        None if seconds is None else pytest.approx(seconds)
    )


@pytest.mark.anyio
async def test_error_without_json_body_keeps_the_text() -> None:
    """A non-JSON error page (a gateway's HTML) still yields a short detail and the right type."""
    client = make_client(lambda r: httpx.Response(502, text="Bad Gateway from nginx"))
    with pytest.raises(TransientError) as info:
        await client.status("r-1")
    assert info.value.detail == "Bad Gateway from nginx"


# --- status and result ------------------------------------------------------------


@pytest.mark.anyio
async def test_status_reads_state_and_inference_time() -> None:
    """Status returns the state and metrics.inference_time, and polls the URL built from the id."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json={"status": "COMPLETED", "metrics": {"inference_time": 13.06}})

    st = await make_client(handler).status("abc")
    assert (st.state, st.inference_time) == ("COMPLETED", 13.06)
    assert seen == ["/v2/requests/abc/status"]


@pytest.mark.anyio
async def test_status_queued_has_no_inference_time() -> None:
    """An empty metrics object gives no inference time."""
    st = await make_client(answer(200, {"status": "QUEUED", "metrics": {}})).status("abc")
    assert (st.state, st.inference_time) == ("QUEUED", None)


@pytest.mark.parametrize("code", [200, 422, 500])
@pytest.mark.anyio
async def test_failed_body_is_authoritative_whatever_the_code(code: int) -> None:
    """A body announcing FAILED raises RequestFailed with the server's error, under any HTTP code."""
    body = {"status": "FAILED", "error": "prompt blocked by moderation", "request_id": "abc"}
    client = make_client(answer(code, body))
    with pytest.raises(RequestFailed) as info:
        await client.status("abc")
    assert info.value.detail == "prompt blocked by moderation"
    assert info.value.request_id == "abc"
    with pytest.raises(RequestFailed):
        await client.result("abc")


@pytest.mark.anyio
async def test_completed_body_under_error_code_is_a_result() -> None:
    """A COMPLETED body is a result even if served with a non-2xx code."""
    body = {"status": "COMPLETED", "output": "https://cdn.test/a.png", "metrics": {"inference_time": 2}}
    res = await make_client(answer(500, body)).result("abc")
    assert res.output == "https://cdn.test/a.png"
    assert res.inference_time == 2.0


@pytest.mark.anyio
async def test_422_without_body_is_request_failed() -> None:
    """A bare 422 (no FAILED body) is still a permanent RequestFailed."""
    with pytest.raises(RequestFailed):
        await make_client(answer(422, {"error": "nope"})).status("abc")


@pytest.mark.anyio
async def test_404_on_a_request_is_not_found() -> None:
    """404 on status or result means the request expired or is unknown: RequestNotFound, not fatal."""
    client = make_client(answer(404, {"error": "not found"}))
    with pytest.raises(RequestNotFound):
        await client.status("gone")
    with pytest.raises(RequestNotFound):
        await client.result("gone")


@pytest.mark.anyio
async def test_unknown_state_and_unfinished_result_are_transient() -> None:
    """An unknown status value, or a result fetched before COMPLETED, is retried, not trusted."""
    with pytest.raises(TransientError, match="unknown status"):
        await make_client(answer(200, {"status": "WEIRD"})).status("a")
    with pytest.raises(TransientError, match="PROCESSING"):
        await make_client(answer(200, {"status": "PROCESSING"})).result("a")


# --- Retry-After -----------------------------------------------------------------


def test_retry_after_seconds_and_dates() -> None:
    """Retry-After is read as delta-seconds or an HTTP date; junk and negatives are safe."""
    now = datetime(2026, 11, 24, 3, 0, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2026, 11, 24, 3, 0, 30, tzinfo=UTC), usegmt=True)
    earlier = format_datetime(datetime(2026, 11, 24, 2, 0, 0, tzinfo=UTC), usegmt=True)
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(" 1.5 ", now=now) == 1.5
    assert parse_retry_after(later, now=now) == 30.0
    assert parse_retry_after(earlier, now=now) == 0.0
    assert parse_retry_after("-3", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after("", now=now) is None
    assert parse_retry_after(None, now=now) is None


@pytest.mark.anyio
async def test_429_carries_retry_after_from_header() -> None:
    """A 429 raises RateLimited with the parsed Retry-After, in seconds or from a date."""
    now = datetime(2026, 11, 24, 3, 0, 0, tzinfo=UTC).timestamp()
    date = format_datetime(datetime(2026, 11, 24, 3, 0, 12, tzinfo=UTC), usegmt=True)
    for header, expected in (("5", 5.0), (date, 12.0)):
        client = make_client(answer(429, {"error": "slow down"}, {"Retry-After": header}), now=now)
        with pytest.raises(RateLimited) as info:
            await client.status("a")
        assert info.value.retry_after == expected
    with pytest.raises(RateLimited) as info:
        await make_client(answer(429, {"error": "slow down"})).submit("m", {})
    assert info.value.retry_after is None


# --- output shapes ---------------------------------------------------------------

URL = "https://images.segmind.com/generations/abc.jpeg"
DATA_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (URL, [URL]),
        (
            [URL, "https://images.segmind.com/generations/def.png"],
            [URL, "https://images.segmind.com/generations/def.png"],
        ),
        ({"image": URL, "seed": 5}, [URL]),
        ({"result": [{"urls": [URL]}], "status_url": "https://api.x/v2/requests/1/status"}, [URL]),
        (json.dumps({"result": {"image_url": URL}, "request_id": "x"}), [URL]),
        (json.dumps(URL), [URL]),
        (json.dumps([URL]), [URL]),
        (DATA_URI, [DATA_URI]),
        ({"image": DATA_URI}, [DATA_URI]),
        (
            base64.b64encode(PNG).decode(),
            ["data:application/octet-stream;base64," + base64.b64encode(PNG).decode()],
        ),
        ("https://cdn.test/render?id=9", ["https://cdn.test/render?id=9"]),
        ([URL, URL], [URL]),
        (None, []),
        (42, []),
        ("no image here", []),
        ("{not json", []),
    ],
)
def test_find_image_urls_handles_every_shape(output: Any, expected: list[str]) -> None:
    """Image URLs are found in a URL, list, object, stringified JSON, data URI or bare base64."""
    assert find_image_urls(output) == expected


# --- download --------------------------------------------------------------------


@pytest.mark.anyio
async def test_download_streams_bytes_without_leaking_the_key_to_a_cdn() -> None:
    """Downloading from another host streams the bytes and sends no x-api-key."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})

    client = make_client(handler)
    async with client.download("https://cdn.test/a.png") as d:
        data = b"".join([c async for c in d.chunks])
    assert data == PNG
    assert d.content_type == "image/png"
    assert "x-api-key" not in seen[0].headers


@pytest.mark.anyio
async def test_download_from_api_host_sends_key() -> None:
    """An image served by the API host itself (the emulator) gets the key like any API request."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PNG)

    async with make_client(handler).download(f"{BASE}/files/a.png") as d:
        assert b"".join([c async for c in d.chunks]) == PNG
    assert seen[0].headers["x-api-key"] == "secret-key"


@pytest.mark.anyio
async def test_download_data_uri_needs_no_request() -> None:
    """A data URI is decoded in place, with its media type, without any HTTP request."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    async with make_client(handler).download(DATA_URI) as d:
        assert b"".join([c async for c in d.chunks]) == PNG
    assert d.content_type == "image/png"


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (403, ImageUnavailable),
        (404, ImageUnavailable),
        (410, ImageUnavailable),
        (429, TransientError),
        (500, TransientError),
        (503, TransientError),
    ],
)
@pytest.mark.anyio
async def test_image_host_errors_are_the_jobs_never_the_runs(code: int, error: type[Exception]) -> None:
    """The image host's 403/404/410 mean a dead URL (fetch the result again), 5xx a retry; never fatal."""
    client = make_client(answer(code, {"error": "x"}))
    with pytest.raises(error) as caught:
        async with client.download("https://cdn.test/a.png"):
            pass
    assert not isinstance(caught.value, FatalApiError | RequestNotFound)


@pytest.mark.anyio
async def test_a_body_over_the_size_cap_is_cut_off() -> None:
    """An endless or huge body stops at max_bytes with ImageInvalid; an announced one is refused up front."""

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"\0" * 65536

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/big.png":
            return httpx.Response(200, headers={"content-length": str(10**12)}, content=b"")
        return httpx.Response(200, content=endless())

    client = make_client(handler)
    with pytest.raises(ImageInvalid, match="more than 1,000,000 bytes"):
        async with client.download("https://cdn.test/a.png", max_bytes=1_000_000) as d:
            async for _ in d.chunks:
                pass
    with pytest.raises(ImageInvalid, match="announced"):
        async with client.download("https://cdn.test/big.png", max_bytes=1_000_000):
            pass


@pytest.mark.anyio
async def test_counters_count_api_requests_polls_and_downloads() -> None:
    """The client counts API requests, status polls among them, and image downloads apart."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(".png"):
            return httpx.Response(200, content=PNG)
        return httpx.Response(200, json={"status": "COMPLETED", "output": URL})

    client = make_client(handler)
    for _ in range(3):
        await client.status("a")
    await client.result("a")
    async with client.download("https://cdn.test/a.png") as d:
        assert [c async for c in d.chunks]
    assert (client.requests, client.polls, client.downloads) == (4, 3, 1)


# --- the key goes to the API origin only -------------------------------------------

CDN = "https://cdn.example.org"


def callers_client(handler: Handler, **kw: Any) -> SegmindClient:
    """The documented embedding: the caller's own client carries the key as a default header."""
    http = httpx.AsyncClient(
        transport=httpx.MockTransport(handler), headers={"x-api-key": "callers-key"}, **kw
    )
    return SegmindClient(http, base_url=BASE)


@pytest.mark.anyio
async def test_a_callers_default_key_header_never_reaches_the_image_host() -> None:
    """The caller's client sends its key to the API (status) but not to the CDN image URL."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "cdn.example.org":
            return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
        return httpx.Response(200, json={"status": "QUEUED", "request_id": "r-1"})

    client = callers_client(handler)
    await client.status("r-1")
    async with client.download(f"{CDN}/a.png") as d:
        assert b"".join([c async for c in d.chunks]) == PNG
    assert seen[0].headers["x-api-key"] == "callers-key"
    assert "x-api-key" not in seen[1].headers


@pytest.mark.anyio
@pytest.mark.parametrize("follow", [False, True])
async def test_an_api_redirect_to_another_origin_is_not_followed(follow: bool) -> None:
    """Even on a client with follow_redirects=True, an API answer redirecting to another host
    stops the run (FatalApiError) and nothing is sent to that host, with or without the key."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"location": "https://evil.example.net/steal"})

    client = callers_client(handler, follow_redirects=follow)
    with pytest.raises(FatalApiError, match=r"redirect to https://evil\.example\.net, another host"):
        await client.submit("bria-text-to-image", {"prompt": "a"})
    assert [r.url.host for r in seen] == ["api.example.test"]


@pytest.mark.anyio
async def test_an_api_redirect_within_the_origin_keeps_the_key() -> None:
    """A same-origin redirect (a moved path) is followed, with the key."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v2/bria-text-to-image":
            return httpx.Response(307, headers={"location": "/v2/new-place"})
        return httpx.Response(200, json=SUBMIT_OK)

    submitted = await make_client(handler).submit("bria-text-to-image", {"prompt": "a"})
    assert submitted.request_id == "r-1"
    assert [r.url.path for r in seen] == ["/v2/bria-text-to-image", "/v2/new-place"]
    assert all(r.headers["x-api-key"] == "secret-key" for r in seen)


@pytest.mark.anyio
async def test_an_image_redirected_off_the_api_host_loses_the_key_at_the_first_hop_off() -> None:
    """An image URL on the API host that redirects to a CDN (and on): only the API hop has the key."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "api.example.test":
            return httpx.Response(302, headers={"location": f"{CDN}/hop"})
        if request.url.path == "/hop":
            return httpx.Response(301, headers={"location": "https://other.example.com/a.png"})
        return httpx.Response(200, content=PNG)

    client = callers_client(handler, follow_redirects=True)
    async with client.download(f"{BASE}/images/a.png") as d:
        assert b"".join([c async for c in d.chunks]) == PNG
    assert [(r.url.host, r.headers.get("x-api-key")) for r in seen] == [
        ("api.example.test", "callers-key"),
        ("cdn.example.org", None),
        ("other.example.com", None),
    ]


@pytest.mark.anyio
async def test_endless_redirects_are_a_transient_error() -> None:
    """A redirect loop is given up after a few hops, as a retryable fault."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": f"{CDN}/again"})

    with pytest.raises(TransientError, match="more than 5 redirects"):
        async with make_client(handler).download(f"{CDN}/start.png"):
            pass


@pytest.mark.parametrize(
    "url",
    [
        "https://api.segmind.com",
        "https://api.segmind.com/",
        "http://127.0.0.1:8000",
        "http://127.3.4.5",
        "http://localhost:8000",
        "http://[::1]:8000",
        "http://[::ffff:127.0.0.1]:8000",
    ],
)
def test_https_or_loopback_http_base_urls_are_accepted(url: str) -> None:
    """https anywhere; plain http only to this machine (an emulator, a tunnel)."""
    assert check_base_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://api.segmind.com", "is plain http to api.segmind.com: the API key would travel unencrypted"),
        ("http://10.0.0.5:8000", "is plain http to 10.0.0.5"),
        ("http://localhost.evil.com", "is plain http to localhost.evil.com"),
        ("api.segmind.com", "must start with https://"),
        ("ftp://api.segmind.com", "must start with https://"),
        ("https://", "must start with https://"),
    ],
)
def test_other_base_urls_are_refused(url: str, message: str) -> None:
    """Plain http to another host, or no http at all, is a usage error (exit 2), before any request."""
    with pytest.raises(UsageError, match=message):
        check_base_url(url)
    with pytest.raises(UsageError):
        SegmindClient(httpx.AsyncClient(), base_url=url)


def test_insecure_allows_plain_http_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """--insecure / insecure=True lets plain http through, and says what it costs."""
    logger = logging.getLogger("batchgen")
    logger.addHandler(caplog.handler)
    try:
        assert check_base_url("http://api.segmind.com", insecure=True, warn=True) == "http://api.segmind.com"
    finally:
        logger.removeHandler(caplog.handler)
    assert "the API key goes to api.segmind.com over plain http, unencrypted" in caplog.text


@pytest.mark.parametrize(
    "request_id", ["../../evil/x", "a?b", "a#b", "a/b", ".", "..", "", "a b", "é", "a%2Fb"]
)
def test_a_request_id_that_would_change_the_path_builds_no_url(request_id: str) -> None:
    """Ids with `../`, `?`, `#`, `/` or anything outside letters, digits and `._~-` build no URL."""
    client = SegmindClient(httpx.AsyncClient(), api_key="k")
    with pytest.raises(TransientError, match="not one batchgen puts in a URL"):
        client.status_url(request_id)
    with pytest.raises(TransientError, match="not one batchgen puts in a URL"):
        client.response_url(request_id)


def test_a_uuid_request_id_builds_its_urls() -> None:
    """Segmind's ids (UUIDs) go into the path as they are."""
    client = SegmindClient(httpx.AsyncClient(), base_url="https://api.segmind.com/", api_key="k")
    rid = "3f1c2a9e-7b1d-4c55-9a0e-1f2b3c4d5e6f"
    assert client.status_url(rid) == f"https://api.segmind.com/v2/requests/{rid}/status"
    assert client.response_url(rid) == f"https://api.segmind.com/v2/requests/{rid}"


@pytest.mark.anyio
async def test_a_submit_answered_with_a_path_changing_request_id_is_uncertain() -> None:
    """A 200 whose request_id would leave the request's path is no usable answer: in doubt (issue 17)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"request_id": "../../evil/x", "status": "QUEUED"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = SegmindClient(http, api_key="k")
        with pytest.raises(
            SubmitUncertain, match="submit answered 200: request id '../../evil/x' is not one"
        ):
            await client.submit("bria-text-to-image", {"prompt": "x"})


@pytest.mark.anyio
async def test_every_request_asks_only_for_the_encodings_batchgen_decodes() -> None:
    """A client whose defaults ask for `br, zstd` (httpx does so whenever brotli or zstandard is
    installed): the API, the image host and the history are asked for `gzip, deflate` only, the
    encodings the bounded reader inflates, so no answer comes in one it would refuse."""
    from batchgen.api.history import History

    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers["accept-encoding"])
        if request.url.path.startswith("/v2/requests"):
            return httpx.Response(200, json={"status": "PROCESSING"})
        if request.url.path.endswith(".png"):
            return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
        return httpx.Response(200, json={"data": []} if "history" in request.url.path else SUBMIT_OK)

    headers = {"accept-encoding": "br, zstd, gzip, deflate"}
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), headers=headers)
    client = SegmindClient(http, base_url=BASE, api_key="secret-key", allow_private_image_hosts=True)
    await client.submit("bria-text-to-image", {"prompt": "a cat"})
    await client.status("r-1")
    async with client.download("https://cdn.example.test/x.png") as download:
        assert b"".join([c async for c in download.chunks]) == PNG
    await History(http, BASE, api_key="secret-key").rows(since=0.0, until=1.0, model="m")
    assert len(asked) == 4 and set(asked) == {"gzip, deflate"}
