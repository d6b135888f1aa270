"""batchgen's HTTP transport on plain asyncio (batchgen/wire.py), over real sockets.

Small asyncio servers in the test play the peers httpcore must cope with: one that
closes idle keep-alive connections, one that never answers, one that sends a body
far larger than the read buffer, and a TLS one (a self-signed certificate made with
the ``openssl`` command).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from batchgen.api import wire

LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=8)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A server on a free loopback port for the block; yields the port."""
    handlers: set[asyncio.Task[None]] = set()

    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """The request head (these tests send no bodies); b"" when the client hung up."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return b""


def answer(body: bytes, *, close: bool = False) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nContent-Type: text/plain\r\n"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


def client(**kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=wire.transport(limits=LIMITS, **kwargs), timeout=5.0)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_keep_alive_reuses_one_connection_and_survives_the_server_closing_it() -> None:
    """Requests in a row share a connection; after the server drops the idle connection,
    the next request notices (EOF on an idle connection) and opens a new one."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        served = 0
        while await read_request(reader):
            served += 1
            writer.write(answer(f"{connections}:{served}".encode()))
            await writer.drain()
            if served == 3:  # an idle timeout on the server's side
                break
        writer.close()

    async with serving(handler) as port, client() as http:
        bodies = []
        for _ in range(5):
            response = await http.get(f"http://127.0.0.1:{port}/")
            bodies.append(response.text)
            await asyncio.sleep(0.05)  # lets the server's close arrive while idle
    assert bodies == ["1:1", "1:2", "1:3", "2:1", "2:2"]
    assert connections == 2


@pytest.mark.anyio
async def test_a_server_that_never_answers_is_a_read_timeout() -> None:
    """No answer within the read timeout: httpx.ReadTimeout, promptly, not a hang."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async with serving(handler) as port, client() as http:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"http://127.0.0.1:{port}/", timeout=httpx.Timeout(5.0, read=0.3))
        assert loop.time() - started < 3.0


@pytest.mark.anyio
async def test_a_refused_connection_is_a_connect_error() -> None:
    """Nobody listening: httpx.ConnectError."""
    async with serving(lambda r, w: asyncio.sleep(0)) as port:
        pass  # the port is free again
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")


@pytest.mark.anyio
async def test_a_body_far_larger_than_the_read_buffer_arrives_whole() -> None:
    """8 MiB (32x the buffer's high-water mark) streamed: reading pauses and resumes, no byte lost."""
    body = bytes(range(256)) * (8 * 4096)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(body, close=True))
        await writer.drain()
        writer.close()

    async with serving(handler) as port, client() as http:
        async with http.stream("GET", f"http://127.0.0.1:{port}/") as response:
            received = bytearray()
            async for chunk in response.aiter_bytes():
                received += chunk
                await asyncio.sleep(0)  # a slow consumer: the buffer fills up
    assert bytes(received) == body


@pytest.mark.anyio
async def test_a_connection_closed_mid_body_is_an_error_not_a_short_image() -> None:
    """The server promises 1000 bytes, sends 10 and hangs up: httpx.RemoteProtocolError."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
        await writer.drain()
        writer.close()

    async with serving(handler) as port, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"http://127.0.0.1:{port}/")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (made by the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.anyio
async def test_https_through_start_tls(certificate: tuple[Path, Path]) -> None:
    """TLS is verified: a client trusting the certificate gets the answer (twice, on one
    connection); one with the default trust store refuses the server."""
    cert, key = certificate
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            writer.write(answer(b"over tls"))
            await writer.drain()
        writer.close()

    async with serving(handler, tls=server_side) as port:
        trusting = ssl.create_default_context(cafile=str(cert))
        async with client(verify=trusting) as http:
            first = await http.get(f"https://127.0.0.1:{port}/")
            second = await http.get(f"https://127.0.0.1:{port}/")
        assert (first.text, second.text) == ("over tls", "over tls")
        assert first.extensions["network_stream"].get_extra_info("ssl_object") is not None
        async with client() as http:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(f"https://127.0.0.1:{port}/")
