"""Where an image URL may lead: the server chose it, so batchgen checks where it connects.

An image URL comes from an answer (the result's ``output``, the request history's
``generation_url``). A compromised or spoofed answer could point it at a cloud's
metadata service, which a batch runner inside a VPC can reach and the internet cannot,
or at a service on the runner's own network. So, for every image download (the API
origin itself excepted: the user chose it):

- **always refused**: link-local addresses (``169.254.0.0/16``, ``fe80::/10``), where the
  metadata services live, and their known addresses and names (``169.254.169.254``,
  ``fd00:ec2::254``, ``100.100.100.200``, ``metadata.google.internal``, ...), whatever
  a name resolves to; also "this host" (``0.0.0.0/8``, ``::``), multicast and broadcast;
- **refused unless allowed**: loopback (``127.0.0.0/8``, ``::1``), private (RFC 1918),
  unique-local (``fc00::/7``) and shared (CGNAT, ``100.64.0.0/10``) addresses. They are
  allowed when the API itself is at such an address or at ``localhost`` (an emulator on
  this machine or the LAN), or when the user says so (``--allow-private-image-hosts``).

Checked at three depths, each of which refuses: the URL's host before any request
(an address literal or a metadata name; every redirect hop); for batchgen's own client,
the address each connection is actually made to, after DNS and before anything is sent
(:data:`CONNECT_GUARD`, read by :mod:`batchgen.api.wire`); and for any client, a
caller's own included, the peer address of the connection an answer came on, before its
body is read (:meth:`ImageHosts.check_peer`).
"""

from __future__ import annotations

import ipaddress
import socket
from contextvars import ContextVar
from typing import Any

import httpx

from batchgen.api.origin import origin

__all__ = ["CONNECT_GUARD", "ConnectGuard", "ImageHosts", "refusal"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA_NAMES = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
    }
)
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2")
)
_ALWAYS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",
        "fe80::/10",
        "0.0.0.0/8",
        "::/128",
        "224.0.0.0/4",
        "ff00::/8",
        "255.255.255.255/32",
    )
)
_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
        "100.64.0.0/10",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded(address: Address) -> Address:
    """The IPv4 address inside an IPv4-mapped or NAT64 IPv6 address, else ``address``."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _address(text: str) -> Address | None:
    """The address ``text`` spells (any notation the system's resolver takes: ``0x7f.1``,
    ``2852039166``), without asking DNS; None for a name."""
    text = text.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(text, None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(str(infos[0][4][0]).split("%", 1)[0]) if infos else None


def refusal(address: str, *, allow_private: bool) -> str | None:
    """Why a connection to ``address`` (an IP address) is refused, or None."""
    parsed = _address(address)
    if parsed is None:
        return None
    ip = _embedded(parsed)
    if address.strip("[]").split("%", 1)[0] != str(ip):
        address = f"{address} ({ip})"
    if ip in _METADATA_ADDRESSES or parsed in _METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if any(ip in net for net in _ALWAYS):
        return f"{address} is a link-local, unspecified or multicast address"
    if not allow_private and any(ip in net for net in _PRIVATE):
        return (
            f"{address} is a loopback or private address (allowed with --allow-private-image-hosts,"
            " or when the API itself is on one)"
        )
    return None


def _private_host(host: str) -> bool:
    """Whether ``host`` (a URL's) is ``localhost`` or a loopback/private address literal."""
    if host.lower().rstrip(".") == "localhost":
        return True
    parsed = _address(host)
    return parsed is not None and any(_embedded(parsed) in net for net in _PRIVATE)


class ConnectGuard:
    """The check a connection of one image download passes (:data:`CONNECT_GUARD`): call it
    with the address about to be connected to; it says why not, and remembers that."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.refused: str | None = None

    def __call__(self, address: str) -> str | None:
        why = refusal(address, allow_private=self.allow_private)
        if why is not None:
            self.refused = why
        return why


# Set around an image download's request: batchgen's own connections (api/wire.py) are
# made only to addresses it allows.
CONNECT_GUARD: ContextVar[ConnectGuard | None] = ContextVar("batchgen_connect_guard", default=None)


class ImageHosts:
    """The image-host rules of one client: ``api_url``'s origin is never checked;
    ``allow_private`` None allows loopback and private addresses when the API's own host
    is ``localhost`` or such an address."""

    def __init__(self, api_url: str, *, allow_private: bool | None = None) -> None:
        self._api = origin(httpx.URL(api_url))
        self.private_allowed = _private_host(self._api[1]) if allow_private is None else allow_private

    def exempt(self, url: httpx.URL) -> bool:
        """Whether ``url`` is at the API's origin (never checked)."""
        return origin(url) == self._api

    def check_url(self, url: httpx.URL) -> str | None:
        """Why ``url`` is refused before any request (its host an address literal or a metadata
        name), or None."""
        if self.exempt(url):
            return None
        host = url.host.lower().rstrip(".")
        if host in _METADATA_NAMES:
            return f"{host} is a cloud metadata name"
        return refusal(host, allow_private=self.private_allowed)

    def guard(self, url: httpx.URL) -> ConnectGuard | None:
        """The guard for the connections of a request to ``url`` (None at the API's origin)."""
        return None if self.exempt(url) else ConnectGuard(allow_private=self.private_allowed)

    def check_peer(self, response: httpx.Response) -> str | None:
        """Why the connection ``response`` came on is refused (its peer address), or None;
        None too when the transport does not say (an in-process app has no peer)."""
        if self.exempt(response.url):
            return None
        stream: Any = response.extensions.get("network_stream")
        peer = stream.get_extra_info("server_addr") if stream is not None else None
        if not isinstance(peer, tuple) or not peer:
            return None
        return refusal(str(peer[0]), allow_private=self.private_allowed)
