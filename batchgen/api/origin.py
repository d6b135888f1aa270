"""Where the API key may go: the origin of a URL, loopback hosts, and the base-URL rule.

The key travels in a header to the API origin only (scheme, host and port of the base
URL); :func:`check_base_url` is the one rule for a URL requests are made to (https, or
plain http to a loopback host; no user, query or stray whitespace).
"""

from __future__ import annotations

import ipaddress
import logging

import httpx

from batchgen.errors import UsageError

__all__ = ["Origin", "check_base_url", "is_loopback", "origin"]

log = logging.getLogger("batchgen")

Origin = tuple[str, str, int | None]


def origin(url: httpx.URL | str) -> Origin:
    """Scheme, host and port (the default one written out) of ``url``."""
    url = httpx.URL(url)
    port = url.port if url.port is not None else {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host.lower(), port


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (``::ffff:127.0.0.1`` too)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def check_base_url(
    base_url: str, *, insecure: bool = False, warn: bool = False, base: bool = True, name: str = "base URL"
) -> str:
    """``base_url`` without a trailing slash, or UsageError: https only, http only to loopback.

    The key travels in a header: over plain http anyone on the path reads it. ``insecure``
    allows plain http to any host, with a logged warning if ``warn``. A ``base`` URL (one
    that request paths are added to) also has a port from 1 to 65535 if any, and no
    user or password, query, fragment or whitespace in its path: any of them would make
    every request of the run fail, or put a secret where URLs are logged. ``name`` is what
    the messages call it ("history URL").
    """
    try:
        url = httpx.URL(base_url.strip())
    except httpx.InvalidURL as exc:
        raise UsageError(f"{name} {base_url!r} is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f"{name} {base_url!r} must start with https:// and name a host")
    problem = _base_problem(url) if base else None
    if problem is not None:
        shown = url.copy_with(username=None, password=None) if url.userinfo else url
        raise UsageError(f"{name} {str(shown)!r} {problem}")
    if url.scheme == "http" and not is_loopback(url.host):
        if not insecure:
            raise UsageError(
                f"{name} {base_url!r} is plain http to {url.host}: the API key would travel"
                " unencrypted; use https://, or --insecure (insecure=True) if you really mean it"
            )
        if warn:
            log.warning("warning: --insecure: the API key goes to %s over plain http, unencrypted", url.host)
    return str(url).rstrip("/")


def _base_problem(url: httpx.URL) -> str | None:
    """What makes ``url`` unusable as a base URL, as the end of a sentence, or None."""
    if url.port is not None and not 1 <= url.port <= 65535:
        return f"has port {url.port}: a port is from 1 to 65535"
    if url.userinfo:
        return "carries a user name or password (user:pass@host): the key goes in a header; remove it"
    if url.query or url.fragment:
        return "has a query or fragment (? or #): request paths are added to a base URL; remove it"
    if any(ch.isspace() for ch in url.path):
        return "has whitespace in its path (a URL pasted in pieces?)"
    return None
