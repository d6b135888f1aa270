"""Request bodies as the emulator takes them: read to a cap, parsed as JSON without a traceback.

Every request's body is read once, by the gateway, before any route sees it: at most
:data:`MAX_BODY` bytes (a ``Content-Length`` above it is refused before a byte is read;
a chunked body that grows past it is refused as soon as it does), so a client that
sends a body that never ends costs the emulator 1 MiB, not all of its memory. A submit
is a few hundred bytes; the cap is thousands of times that.

:func:`parse_json` turns a body into a value or the sentence of a 400 answer: invalid
JSON, text that is not UTF-8, and nesting deeper than Python's decoder recurses (JSON
nested 100,000 deep) are all the client's mistake, never a 500 with a traceback.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Message, Receive, Scope

__all__ = ["MAX_BODY", "TooLarge", "parse_json", "read_body", "replay"]

MAX_BODY = 1024 * 1024  # bytes of one request's body


class TooLarge(Exception):
    """The request's body is longer than :data:`MAX_BODY` (or says it will be)."""


class Disconnected(Exception):
    """The client went away before its body was complete."""


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:  # uvicorn refuses these before the app; in process, read and see
                return None
    return None


async def read_body(scope: Scope, receive: Receive, *, limit: int = MAX_BODY) -> bytes:
    """The whole body of an http request; :class:`TooLarge` past ``limit`` bytes,
    :class:`Disconnected` if the client left first."""
    declared = _declared_length(scope)
    if declared is not None and declared > limit:
        raise TooLarge()
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out ``body`` (already read) first, then what ``receive`` says
    (a streaming answer still learns of the client's disconnect)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def parse_json(body: bytes) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(None, why)`` when ``body`` is not JSON the emulator can read."""
    try:
        return json.loads(body), None
    except RecursionError:
        return None, "body: JSON nested too deeply"
    except ValueError:  # UnicodeDecodeError included
        return None, "body: is not valid JSON"
