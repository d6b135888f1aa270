"""Shared fixtures: pin anyio to asyncio (aiofiles is asyncio-only)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Every async test runs on asyncio."""
    return "asyncio"
