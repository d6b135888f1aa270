"""Injected faults: seeded 500/502/504 answers, dropped connections, image faults and stalls."""

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
    """Decides, by seeded draws in arrival order, which requests fail and how.

    Each kind of fault draws from its own stream (all seeded by ``seed``), so turning
    one kind on does not change which requests another kind hits. A kind draws only
    while its rate is strictly between 0 and 1.
    """

    def __init__(self, *, seed: int) -> None:
        self._random = random.Random(seed)
        # String seeds are hashed with SHA-512: the same in every process.
        self._images = random.Random(f"images:{seed}")
        self._stalls = random.Random(f"stalls:{seed}")

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

    def held(self, *, rate: float) -> bool:
        """Whether this accepted submit's answer is held (``answer_delay``)."""
        return rate >= 1 or (rate > 0 and self._random.random() < rate)

    def image(self, *, rate: float) -> bool:
        """Whether this image request gets the configured ``image_fault``."""
        return _hit(self._images, rate)

    def stall(self, *, rate: float) -> bool:
        """Whether this accepted job stalls (stays PROCESSING until it expires)."""
        return _hit(self._stalls, rate)


def _hit(stream: random.Random, rate: float) -> bool:
    if rate <= 0:
        return False
    return rate >= 1 or stream.random() < rate
