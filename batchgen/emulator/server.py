"""Serve the emulator over real HTTP with uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from batchgen.emulator.app import create_app
from batchgen.emulator.config import EmulatorConfig
from batchgen.emulator.faults import ConnectionDropped

__all__ = ["serve"]


class _HideDrops(logging.Filter):
    """Keep uvicorn from logging a traceback for every connection dropped on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


def serve(config: EmulatorConfig, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the emulator until interrupted (blocks)."""
    logging.getLogger("uvicorn.error").addFilter(_HideDrops())
    print(f"batchgen emulator on http://{host}:{port} (Ctrl-C stops it)", flush=True)
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning", access_log=False)
