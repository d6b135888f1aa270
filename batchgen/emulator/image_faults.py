"""What the image host answers when ``image_fault`` hits a request: a CDN gone wrong.

Each mode stands for a real way an image URL fails:

- ``html``: 200 ``text/html`` with a small page instead of the image (a misconfigured
  CDN, a captive portal);
- ``endless``: 200 with the image's content type and a body that never ends (the
  image, then zero bytes forever);
- ``slow``: 200 with the image's ``Content-Length``, then one byte every
  ``SLOW_BYTE_SECONDS`` seconds: it would take hours to finish;
- ``forbidden``: 403 with an S3 ``AccessDenied`` XML body (an expired signed URL);
- ``gone``: 410.

The two streaming modes stream for real only under uvicorn: httpx's in-process
``ASGITransport`` (and Starlette's TestClient) collect a whole body before answering,
so ``endless`` would fill memory and ``slow`` would take hours. In process they raise
:class:`StreamingUnavailable` instead, which those transports hand to the client
(see :func:`can_stream`). Under uvicorn a stream stops when the client disconnects (Starlette's
``StreamingResponse`` cancels it), and it yields to the event loop after every chunk
so other requests are still answered and the disconnect is noticed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.types import Scope

from batchgen.emulator.config import ImageFault

__all__ = [
    "ENDLESS_CHUNK_BYTES",
    "SLOW_BYTE_SECONDS",
    "STREAMING",
    "StreamingUnavailable",
    "can_stream",
    "image_fault_response",
]

# Size of each chunk of an endless body after the image itself.
ENDLESS_CHUNK_BYTES = 64 * 1024
# Real (wall-clock) seconds between two bytes of a slow body: slow enough to trip any
# sane read timeout, and cheap for the emulator however many such downloads are open.
SLOW_BYTE_SECONDS = 2.0
# The modes whose answer is a stream that starts with the real image bytes.
STREAMING: frozenset[ImageFault] = frozenset({"endless", "slow"})

_HTML_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in to continue</title></head>
<body>
<h1>Network login required</h1>
<p>Please accept the terms of use to continue browsing.</p>
</body>
</html>
"""

_ACCESS_DENIED = """<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>Request has expired</Message>\
<X-Amz-Expires>3600</X-Amz-Expires><RequestId>{request_id}</RequestId></Error>
"""


class StreamingUnavailable(RuntimeError):
    """A streaming image fault was asked of an in-process transport that buffers bodies."""

    def __init__(self, fault: ImageFault) -> None:
        super().__init__(
            f"image_fault {fault!r} needs the emulator served by uvicorn (batchgen emulator, or "
            "batchgen.emulator.serve): an in-process transport such as httpx.ASGITransport "
            "collects the whole body, which never ends (or takes hours)"
        )


def can_stream(scope: Scope) -> bool:
    """Whether the server running this request streams bodies to the client as they come.

    uvicorn, the server ``serve`` uses, declares the ASGI ``spec_version`` it speaks;
    the in-process transports (httpx's ``ASGITransport``, Starlette's TestClient),
    which buffer a whole body, declare none.
    """
    return "spec_version" in scope.get("asgi", {})


def image_fault_response(
    fault: ImageFault, *, request_id: str, image: bytes | None, content_type: str
) -> Response:
    """The answer to an image request that ``fault`` hits.

    ``image`` (the real image bytes) is required for the modes in ``STREAMING``.
    """
    if fault == "html":
        return HTMLResponse(_HTML_PAGE)
    if fault == "forbidden":
        body = _ACCESS_DENIED.format(request_id=request_id.replace("-", "")[:16].upper())
        return Response(body, status_code=403, media_type="application/xml")
    if fault == "gone":
        return Response("410 Gone: this image is no longer available\n", 410, media_type="text/plain")
    if image is None:
        raise ValueError(f"image_fault {fault!r} needs the image bytes")
    if fault == "endless":
        return StreamingResponse(_endless(image), media_type=content_type)
    if fault == "slow":
        headers = {"content-length": str(len(image))}
        return StreamingResponse(_trickle(image), media_type=content_type, headers=headers)
    raise ValueError(f"image_fault {fault!r} is not a fault")


async def _endless(image: bytes) -> AsyncIterator[bytes]:
    """The image, then zero bytes forever; a checkpoint after every chunk."""
    yield image
    filler = bytes(ENDLESS_CHUNK_BYTES)
    while True:
        # uvicorn's send() does not suspend while the socket keeps up, so without
        # this the loop would never let the event loop notice a disconnect.
        await anyio.lowlevel.checkpoint()
        yield filler


async def _trickle(image: bytes) -> AsyncIterator[bytes]:
    """The image one byte at a time, ``SLOW_BYTE_SECONDS`` apart (the first after one wait)."""
    for index in range(len(image)):
        await anyio.sleep(SLOW_BYTE_SECONDS)
        yield image[index : index + 1]
