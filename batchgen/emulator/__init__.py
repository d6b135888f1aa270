"""A local emulator of Segmind's serverless API for ``bria-text-to-image``.

``create_app(config)`` builds a Starlette app (usable in process through
``httpx.ASGITransport``); ``serve(config, host=, port=)`` runs it under uvicorn.
"""

from __future__ import annotations

from batchgen.emulator.app import create_app
from batchgen.emulator.config import EmulatorConfig
from batchgen.emulator.server import serve

__all__ = ["EmulatorConfig", "create_app", "serve"]
