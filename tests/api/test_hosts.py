"""Image URLs are the server's choice: where batchgen lets them lead (real sockets for the wire).

A small image server on 127.0.0.1 counts every connection it is offered. The API is
told to be elsewhere (``https://api.segmind.com``, never contacted), so loopback is
"private" to these clients unless allowed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from batchgen.api import wire
from batchgen.api.client import SegmindClient
from batchgen.api.hosts import refusal
from batchgen.errors import ImageUnavailable

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


@dataclass
class ImageServer:
    port: int
    connections: int = 0
    paths: list[str] = field(default_factory=list)


@asynccontextmanager
async def image_server(redirect_to: str | None = None) -> AsyncIterator[ImageServer]:
    """Serve PNG bytes for any GET on 127.0.0.1 (or a 302 to ``redirect_to`` for /hop)."""
    seen = ImageServer(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                path = head.split(b" ", 2)[1].decode()
                seen.paths.append(path)
                if path == "/hop" and redirect_to:
                    writer.write(
                        f"HTTP/1.1 302 Found\r\nlocation: {redirect_to}\r\ncontent-length: 0\r\n\r\n".encode()
                    )
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: %d\r\n\r\n" % len(PNG)
                        + PNG
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    seen.port = server.sockets[0].getsockname()[1]
    try:
        yield seen
    finally:
        server.close()
        await server.wait_closed()


def batchgen_http() -> httpx.AsyncClient:
    """batchgen's own client: the wire transport, where connections are checked before they are made."""
    return httpx.AsyncClient(transport=wire.transport(limits=wire.LIMITS))


async def fetch(client: SegmindClient, url: str) -> bytes:
    async with client.download(url, max_bytes=1024) as download:
        return b"".join([chunk async for chunk in download.chunks])


@pytest.mark.parametrize(
    ("address", "private_allowed", "refused"),
    [
        ("169.254.169.254", True, "cloud metadata address"),
        ("2852039166", True, "2852039166 (169.254.169.254) is a cloud metadata address"),
        ("::ffff:169.254.169.254", True, "cloud metadata address"),
        ("fd00:ec2::254", True, "cloud metadata address"),
        ("100.100.100.200", True, "cloud metadata address"),
        ("169.254.1.1", True, "link-local"),
        ("fe80::1", True, "link-local"),
        ("0.0.0.0", True, "unspecified"),
        ("127.0.0.1", False, "loopback or private"),
        ("0x7f.1", False, "0x7f.1 (127.0.0.1) is a loopback or private"),
        ("10.2.3.4", False, "loopback or private"),
        ("172.16.0.1", False, "loopback or private"),
        ("192.168.1.1", False, "loopback or private"),
        ("fd12::1", False, "loopback or private"),
        ("100.64.0.1", False, "loopback or private"),
        ("::1", False, "loopback or private"),
    ],
)
def test_addresses_refused_always_or_unless_private_hosts_are_allowed(
    address: str, private_allowed: bool, refused: str
) -> None:
    """Link-local and metadata addresses are refused always (any spelling); loopback, private, ULA
    and CGNAT addresses unless private hosts are allowed."""
    why = refusal(address, allow_private=private_allowed)
    assert why is not None and refused in why
    if not private_allowed:
        assert refusal(address, allow_private=True) is None


def test_public_addresses_pass() -> None:
    """A public address is an image host like any other."""
    assert refusal("93.184.216.34", allow_private=False) is None
    assert refusal("2606:2800:220:1::1", allow_private=False) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam.png",
        "http://metadata.google.internal/computeMetadata/v1/x.png",
        "http://[fd00:ec2::254]/latest/x.png",
        "http://100.100.100.200/latest/x.png",
    ],
)
async def test_metadata_urls_are_never_asked(url: str) -> None:
    """A metadata address or name is refused before any request, even with private hosts allowed."""
    asked: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(200, content=PNG)

    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as http:
        client = SegmindClient(http, api_key="k", allow_private_image_hosts=True)
        with pytest.raises(ImageUnavailable, match="image URL refused: .*metadata.*; not fetched"):
            await fetch(client, url)
    assert asked == []


async def test_a_name_that_resolves_to_a_private_address_is_never_connected_to() -> None:
    """`localhost:PORT` (a name: its address is known only after DNS) is refused by batchgen's
    own transport at the connection: the server is never even connected to."""
    async with image_server() as server, batchgen_http() as http:
        client = SegmindClient(http, api_key="k")
        with pytest.raises(ImageUnavailable, match="is a loopback or private address"):
            await fetch(client, f"http://localhost:{server.port}/x.png")
        assert server.connections == 0


async def test_private_image_hosts_are_fetched_when_allowed() -> None:
    """`--allow-private-image-hosts`: the same URL is fetched."""
    async with image_server() as server, batchgen_http() as http:
        client = SegmindClient(http, api_key="k", allow_private_image_hosts=True)
        assert await fetch(client, f"http://localhost:{server.port}/x.png") == PNG
        assert server.paths == ["/x.png"]


async def test_a_callers_own_client_is_checked_by_the_peer_address() -> None:
    """A caller's plain `httpx.AsyncClient` connects by itself: the address the answer came from
    is checked before the body is read, and the image refused."""
    async with image_server() as server, httpx.AsyncClient() as http:
        client = SegmindClient(http, api_key="k")
        with pytest.raises(ImageUnavailable, match="is a loopback or private address"):
            await fetch(client, f"http://localhost:{server.port}/x.png")


async def test_a_redirect_to_the_metadata_service_is_refused_at_the_hop() -> None:
    """An allowed image host redirecting to 169.254.169.254: the hop is refused, never asked."""
    async with (
        image_server(redirect_to="http://169.254.169.254/latest/meta-data/") as server,
        batchgen_http() as http,
    ):
        client = SegmindClient(http, api_key="k", allow_private_image_hosts=True)
        with pytest.raises(ImageUnavailable, match="169.254.169.254 is a cloud metadata address"):
            await fetch(client, f"http://127.0.0.1:{server.port}/hop")
        assert server.paths == ["/hop"]


async def test_the_apis_own_host_is_never_refused() -> None:
    """The emulator case: images at the API's own origin (on loopback) are fetched, whatever the rule."""
    async with image_server() as server, batchgen_http() as http:
        base = f"http://127.0.0.1:{server.port}"
        client = SegmindClient(http, base_url=base, api_key="k", allow_private_image_hosts=False)
        assert await fetch(client, f"{base}/images/x.png") == PNG


async def test_an_api_on_a_private_address_allows_private_image_hosts() -> None:
    """An API at localhost or a private address (an emulator on the LAN): private image hosts are
    allowed by default; link-local ones still are not."""
    async with image_server() as server, batchgen_http() as http:
        client = SegmindClient(http, base_url="http://localhost:1", api_key="k")
        assert await fetch(client, f"http://127.0.0.1:{server.port}/x.png") == PNG
        with pytest.raises(ImageUnavailable, match="link-local"):
            await fetch(client, "http://169.254.3.4/x.png")


def resolving(monkeypatch: pytest.MonkeyPatch, name: str, *addresses: str) -> None:
    """The running loop's resolver answers ``addresses`` for ``name`` (a DNS record the server's
    owner controls), and the real resolver for any other name."""
    import socket

    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: object, port: object, *args: object, **kw: object) -> list[object]:
        if host != name:
            return await real(host, port, *args, **kw)  # type: ignore[arg-type]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


async def test_a_name_that_resolves_to_the_metadata_address_is_refused_at_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`images.example.test` resolving to 169.254.169.254 (the URL looks harmless): batchgen's own
    transport checks the address after DNS and refuses it, even with private hosts allowed."""
    resolving(monkeypatch, "images.example.test", "169.254.169.254")
    async with batchgen_http() as http:
        client = SegmindClient(http, api_key="k", allow_private_image_hosts=True)
        with pytest.raises(ImageUnavailable, match="169.254.169.254 is a cloud metadata address"):
            await fetch(client, "http://images.example.test:8080/x.png")


async def test_a_name_with_a_metadata_and_an_allowed_address_connects_only_to_the_allowed_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name resolving to 169.254.169.254 first and to the image server second: only the
    image server is connected to, and the image is fetched."""
    async with image_server() as server, batchgen_http() as http:
        resolving(monkeypatch, "cdn.example.test", "169.254.169.254", "127.0.0.1")
        client = SegmindClient(http, api_key="k", allow_private_image_hosts=True)
        assert await fetch(client, f"http://cdn.example.test:{server.port}/x.png") == PNG
        assert server.connections == 1
