"""Injected faults: seeded 500/502/504 answers and dropped connections."""

from __future__ import annotations

import random
from typing import Literal

import httpx

__all__ = ["FAULT_CODES", "ConnectionDropped", "Fault", "FaultInjector"]

FAULT_CODES: tuple[int, ...] = (500, 502, 504)

Fault = int | Literal["drop"] | None


class ConnectionDropped(httpx.RemoteProtocolError):
    """Raised by the app to drop a connection without an answer.

    Under uvicorn the response has started, so uvicorn closes the socket and the
    client sees a protocol error. In process, httpx's ASGITransport re-raises app
    exceptions, and because this is an ``httpx.TransportError`` the client sees the
    same kind of error it would see from a real dropped connection.
    """

    def __init__(self) -> None:
        super().__init__("emulator dropped the connection (--drop-rate)")


class FaultInjector:
    """Decides, one seeded draw per API request in arrival order, whether it fails and how."""

    def __init__(self, *, seed: int) -> None:
        self._random = random.Random(seed)

    def draw(self, *, fault_rate: float, drop_rate: float) -> Fault:
        """A status code to answer with, ``"drop"``, or None for a normal answer."""
        if fault_rate <= 0 and drop_rate <= 0:
            return None
        roll = self._random.random()
        if roll < drop_rate:
            return "drop"
        if roll < drop_rate + fault_rate:
            return self._random.choice(FAULT_CODES)
        return None
