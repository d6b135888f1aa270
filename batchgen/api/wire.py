"""The sockets under batchgen's own HTTP client: httpcore on plain asyncio.

httpx's default transport reaches the network through httpcore's anyio backend, and
that layer is a fifth of batchgen's CPU per image: every read and write opens a cancel
scope, and every request asks the stream ``is_readable``, which anyio answers by
building a dict of all the socket's attributes (peer address parsed included). At a
few thousand requests a minute that is the difference between keeping a server's
workers busy and not.

:class:`AsyncioBackend` is an :class:`httpcore.AsyncNetworkBackend` on an
:class:`asyncio.Protocol`: reads wait on one future, timeouts are
:func:`asyncio.timeout`, ``is_readable`` is two attribute reads. It is asyncio-only,
like the rest of batchgen (aiofiles). It is also where batchgen learns the address a
connection actually goes to: during an image download (:data:`~batchgen.api.hosts.CONNECT_GUARD`
set) a name is resolved here and only addresses the guard allows are connected to, so a
name that resolves to a metadata address is refused before anything is sent.
:func:`transport` builds the
:class:`httpx.AsyncHTTPTransport` batchgen uses when the caller passes no client; a
caller's own client keeps whatever transport it has.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Coroutine, Iterable
from typing import Any

import httpcore
import httpx

from batchgen.api.hosts import CONNECT_GUARD, ConnectGuard

__all__ = ["LIMITS", "AsyncioBackend", "transport"]

# Each job has at most one request open at a time, so jobs in flight bound the open
# connections: no cap (a fixed pool would let slow image downloads starve the polls).
# Kept alive for reuse: enough for the requests that overlap at any instant. httpcore
# walks its connections (twice over, for idle ones) on every request, so a pool larger
# than needed costs CPU on each: 16 instead of 32 took a status poll from 1.4 to
# 1.1 ms of CPU with 60 jobs polling.
LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=16)

_HIGH_WATER = 256 * 1024  # bytes buffered before the socket is no longer read


class _Protocol(asyncio.Protocol):
    """Bytes received but not yet read, and the state of the connection."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self._reader: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused = False
        self._write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _wake(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.set_result(None)

    async def wait_readable(self) -> None:
        if self.buffer or self.eof:
            return
        self._reader = asyncio.get_running_loop().create_future()
        await self._reader

    def take(self, max_bytes: int) -> bytes:
        data = bytes(self.buffer[:max_bytes])
        del self.buffer[:max_bytes]
        if self._paused and len(self.buffer) <= _HIGH_WATER // 4 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def drained(self) -> None:
        if self._write_paused:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One TCP (or TLS) connection, as httpcore reads and writes it."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.buffer and not protocol.eof:
            try:
                async with asyncio.timeout(timeout):
                    await protocol.wait_readable()
            except TimeoutError:
                raise httpcore.ReadTimeout(f"no data within {timeout} s") from None
        if protocol.buffer:
            return protocol.take(max_bytes)
        if protocol.error is not None:
            raise httpcore.ReadError(str(protocol.error) or type(protocol.error).__name__)
        return b""  # the peer closed the connection

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        try:
            self._transport.write(buffer)
        except (OSError, RuntimeError) as exc:
            raise httpcore.WriteError(str(exc)) from None
        try:
            async with asyncio.timeout(timeout):
                await self._protocol.drained()
        except TimeoutError:
            raise httpcore.WriteTimeout(f"could not send within {timeout} s") from None
        if self._protocol.error is not None:
            raise httpcore.WriteError(str(self._protocol.error))

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                tls = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            self._transport.abort()
            raise httpcore.ConnectTimeout(f"TLS handshake not done within {timeout} s") from None
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self._transport.abort()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from None
        if tls is None:  # the peer closed during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        assert isinstance(tls, asyncio.Transport)
        self._protocol.transport = tls
        return AsyncioStream(tls, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Data or EOF on a connection that is idle between requests: not reusable.
            return self._protocol.eof or bool(self._protocol.buffer)
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network on asyncio's own transports (TCP_NODELAY is asyncio's default)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        loop = asyncio.get_running_loop()
        guard = CONNECT_GUARD.get()
        connecting: Coroutine[Any, Any, tuple[asyncio.BaseTransport, _Protocol]]
        if guard is None:
            connecting = loop.create_connection(_Protocol, host, port, local_addr=local)
        else:
            connecting = _guarded_connection(host, port, guard, local)
        stream = await _connected(connecting, f"{host}:{port}", timeout)
        for option in socket_options or ():
            stream.get_extra_info("socket").setsockopt(*option)
        return stream

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        return await _connected(loop.create_unix_connection(_Protocol, path), path, timeout)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _guarded_connection(
    host: str, port: int, guard: ConnectGuard, local: tuple[str, int] | None
) -> tuple[asyncio.BaseTransport, _Protocol]:
    """A connection to the first address of ``host`` the guard allows, tried in the
    resolver's order; OSError naming the refusal when it allows none."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    allowed = [info for info in infos if guard(str(info[4][0])) is None]
    if not allowed:
        raise OSError(f"{host}: {guard.refused or 'no address'}; not connected")
    failure: OSError | None = None
    for family, _kind, proto, _, address in allowed:
        try:
            return await loop.create_connection(
                _Protocol, str(address[0]), port, family=family, proto=proto, local_addr=local
            )
        except OSError as exc:
            failure = exc
    assert failure is not None
    raise failure


async def _connected(
    connecting: Coroutine[Any, Any, tuple[asyncio.BaseTransport, _Protocol]],
    where: str,
    timeout: float | None,
) -> AsyncioStream:
    """The stream of a connection being made, its failures as httpcore's exceptions."""
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await connecting
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"no connection to {where} within {timeout} s") from None
    except OSError as exc:
        raise httpcore.ConnectError(str(exc) or type(exc).__name__) from None
    assert isinstance(transport, asyncio.Transport)
    return AsyncioStream(transport, protocol)


def transport(*, limits: httpx.Limits, verify: ssl.SSLContext | bool = True) -> httpx.AsyncHTTPTransport:
    """httpx's transport with ``limits``, no retries, its connections on :class:`AsyncioBackend`.

    ``verify``: as httpx's (True: the certifi trust store; an SSLContext: that one).

    httpx has no parameter for httpcore's network backend, so the transport's connection
    pool is rebuilt with the same settings (its SSL context included) and this backend.
    Should a future httpx keep its pool elsewhere, the stock transport is returned
    unchanged (slower, not wrong).
    """
    built = httpx.AsyncHTTPTransport(retries=0, limits=limits, verify=verify)
    pool = getattr(built, "_pool", None)
    if not isinstance(pool, httpcore.AsyncConnectionPool):
        return built
    built._pool = httpcore.AsyncConnectionPool(
        ssl_context=pool._ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=False,
        retries=0,
        network_backend=AsyncioBackend(),
    )
    return built
