"""A tiny hostile HTTP server: a real socket in front of an in-process emulator.

The emulator plays every behaviour of the API it can (answer delays, 5xx, drops before
a request is processed). What it cannot play (an answer lost *after* the server took
the request, a 200 HTML page, a request id handed out twice, a result that 404s after
COMPLETED, a status endpoint down for a while, a server that takes connections and never
answers), this server does: each request is handed to a ``rule`` that returns what to do
with it (:data:`FORWARD` by default). The emulator behind it keeps the server's own
counts (``/_emulator/stats``: accepted submits, duplicates), so a test judges batchgen
by what the server saw, not by what batchgen says.

It speaks just enough HTTP/1.1 for httpx: keep-alive, ``Content-Length`` bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from batchgen.emulator import EmulatorConfig, create_app

__all__ = [
    "FORWARD",
    "Delay",
    "DropAfterForward",
    "Forward",
    "Hang",
    "Hostile",
    "Replace",
    "Request",
    "Respond",
    "hostile_server",
]


@dataclass(frozen=True)
class Request:
    """One request as the hostile server saw it; ``n`` counts requests of its (method, kind)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    n: int
    at: float  # the loop's clock when it arrived

    @property
    def kind(self) -> str:
        """submit, status, result, image, history or other."""
        if self.method == "POST" and self.path.startswith("/v2/") and "/requests/" not in self.path:
            return "submit"
        if self.path.startswith("/v2/requests/") and self.path.endswith("/status"):
            return "status"
        if self.path.startswith("/v2/requests/"):
            return "result"
        if self.path.startswith(("/images/", "/generations/")):
            return "image"
        if self.path.startswith("/inference-request/"):
            return "history"
        return "other"


@dataclass(frozen=True)
class Forward:
    """Pass the request to the emulator and its answer back."""


@dataclass(frozen=True)
class Delay:
    """Forward, then hold the answer ``seconds`` (the client may have given up by then)."""

    seconds: float


@dataclass(frozen=True)
class DropAfterForward:
    """Forward (the emulator takes the request), then close the connection unanswered."""


@dataclass(frozen=True)
class Respond:
    """Answer this without asking the emulator (``forward``: ask it first, then answer this);
    ``headers`` are sent too (a ``content-encoding`` for a compressed body)."""

    status: int
    body: bytes
    content_type: str = "application/json"
    forward: bool = False
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Replace:
    """Forward, then answer ``rewrite(status, json body)`` -> (status, json body) instead."""

    rewrite: Callable[[int, Any], tuple[int, Any]]


@dataclass(frozen=True)
class Hang:
    """Read the request and never answer (until the client closes the connection)."""


FORWARD = Forward()
Action = Forward | Delay | DropAfterForward | Respond | Replace | Hang
Rule = Callable[[Request], Action | None]


@dataclass
class Hostile:
    """A running hostile server: its ``base_url``, what it saw, and the emulator behind it."""

    base_url: str
    upstream: httpx.AsyncClient
    seen: Counter[str] = field(default_factory=Counter)  # requests by kind

    async def stats(self) -> dict[str, Any]:
        """The emulator's own counters (accepted submits, duplicates, ...)."""
        return (await self.upstream.get("/_emulator/stats")).json()  # type: ignore[no-any-return]


def _response(
    status: int, body: bytes, content_type: str, headers: tuple[tuple[str, str], ...] = ()
) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    head = (
        f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
        f"{extra}connection: keep-alive\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    line = await reader.readline()
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
    return method, target, headers, body


@contextlib.asynccontextmanager
async def hostile_server(rule: Rule, **emulator: Any) -> AsyncIterator[Hostile]:
    """Serve ``rule`` on 127.0.0.1 in front of an in-process emulator configured by ``emulator``."""
    emulator.setdefault("image_size", 16)
    emulator.setdefault("time_scale", 0.001)
    app = create_app(EmulatorConfig(**emulator))
    loop = asyncio.get_running_loop()
    counts: Counter[tuple[str, str]] = Counter()
    hostile: Hostile | None = None
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None and hostile is not None
        handlers.add(task)
        try:
            while (parsed := await _read_request(reader)) is not None:
                method, target, headers, body = parsed
                path = target.split("?", 1)[0]
                probe = Request(method, path, headers, body, 0, loop.time())
                counts[(method, probe.kind)] += 1
                request = Request(method, path, headers, body, counts[(method, probe.kind)], loop.time())
                hostile.seen[request.kind] += 1
                action = rule(request) or FORWARD
                if isinstance(action, Hang):
                    await reader.read()  # until the client gives up and closes
                    return
                if isinstance(action, Respond) and not action.forward:
                    writer.write(_response(action.status, action.body, action.content_type, action.headers))
                    await writer.drain()
                    continue
                sent = {k: v for k, v in headers.items() if k not in ("content-length", "connection")}
                answer = await hostile.upstream.request(method, target, headers=sent, content=body)
                if isinstance(action, DropAfterForward):
                    return
                if isinstance(action, Delay):
                    await asyncio.sleep(action.seconds)
                status, data = answer.status_code, answer.content
                kind = answer.headers.get("content-type", "application/octet-stream")
                extra: tuple[tuple[str, str], ...] = ()
                if isinstance(action, Respond):
                    status, data, kind, extra = (
                        action.status,
                        action.body,
                        action.content_type,
                        action.headers,
                    )
                elif isinstance(action, Replace):
                    status, rewritten = action.rewrite(status, answer.json())
                    data, kind = json.dumps(rewritten).encode(), "application/json"
                writer.write(_response(status, data, kind, extra))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            handlers.discard(task)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as upstream:
        hostile = Hostile(base_url=base_url, upstream=upstream)
        try:
            yield hostile
        finally:
            server.close()
            for task in list(handlers):
                task.cancel()
            await server.wait_closed()
