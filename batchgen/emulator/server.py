"""Serve the emulator over real HTTP with uvicorn."""

from __future__ import annotations

import logging
import socket

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


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, or UsageError (port in use, unknown host)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
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
    clear error (exit 2) instead of a printed URL followed by uvicorn's own error.
    """
    sock = _listen(host, port)
    logging.getLogger("uvicorn.error").addFilter(_HideDrops())
    print(f"batchgen emulator on http://{host}:{port} (Ctrl-C stops it)", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning", access_log=False))
    server.run(sockets=[sock])
