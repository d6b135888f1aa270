"""Serve the emulator over real HTTP with uvicorn.

On loopback (``127.0.0.1``, ``::1``, ``localhost``: the default) only this machine
reaches it. Any other address (``0.0.0.0``, a LAN address) lets other machines in: the
emulator then refuses to start without an API key (``--api-key``), because
``/_emulator/*`` reconfigures and reveals everything, and starts with a warning on
stderr; from other machines ``/_emulator/*`` needs that key too (see ``app.py``).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys

import uvicorn

from batchgen.emulator.app import create_app
from batchgen.emulator.config import EmulatorConfig
from batchgen.emulator.faults import ConnectionDropped
from batchgen.errors import UsageError

__all__ = ["serve"]


class _HideDrops(logging.Filter):
    """Keep uvicorn from logging a traceback for every connection dropped on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: the scope is not the address
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def _listen(host: str, port: int, *, keyed: bool) -> socket.socket:
    """A socket listening on ``host:port``, or UsageError (port in use, unknown host, or
    another machine could reach it and there is no key: ``keyed`` false)."""
    if not 0 <= port <= 65535:
        raise UsageError(f"emulator: --port {port} is not a port (0 to 65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
    except OSError as exc:
        raise UsageError(f"emulator: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    if not _is_loopback(str(address[0])):
        if not keyed:
            raise UsageError(
                f"emulator: --host {host} lets other machines in, and /_emulator/ changes its settings:"
                " give it --api-key KEY (then every request, /_emulator/ from other machines included,"
                " needs that key), or listen on 127.0.0.1"
            )
        print(
            f"warning: the emulator on {host} is reachable from other machines;"
            " they need its --api-key for every request but images",
            file=sys.stderr,
            flush=True,
        )
    try:
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UsageError(f"emulator: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(f"emulator: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(config: EmulatorConfig, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the emulator until interrupted (blocks); UsageError if it cannot listen.

    The socket is bound here, before the URL is printed, so that a port in use is one
    clear error (exit 2) instead of a printed URL followed by uvicorn's own error. A
    ``host`` other machines can reach needs ``config.api_key`` (see the module docstring).
    """
    sock = _listen(host, port, keyed=config.api_key is not None)
    logging.getLogger("uvicorn.error").addFilter(_HideDrops())
    port = sock.getsockname()[1]  # --port 0: the one the system chose
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address, as a URL writes it
    print(f"batchgen emulator on http://{shown}:{port} (Ctrl-C stops it)", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning", access_log=False))
    server.run(sockets=[sock])
