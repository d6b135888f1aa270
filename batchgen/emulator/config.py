"""The emulator's settings: one frozen record, built by the CLI or by a test."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["IMAGE_FAULTS", "RUNTIME_SETTINGS", "EmulatorConfig", "ImageFault", "ImageFormat"]

ImageFormat = Literal["png", "jpeg"]
# How the image host misbehaves (``image_fault``); see ``image_faults.py``.
ImageFault = Literal["none", "html", "endless", "slow", "forbidden", "gone"]
IMAGE_FAULTS: tuple[ImageFault, ...] = ("none", "html", "endless", "slow", "forbidden", "gone")

# The settings ``POST /_emulator/config`` may change while the emulator runs.
RUNTIME_SETTINGS: tuple[str, ...] = (
    "rpm",
    "credits",
    "fault_rate",
    "drop_rate",
    "latency_ms",
    "ttl",
    "time_scale",
    "workers",
    "image_fault",
    "image_fault_rate",
    "retry_after",
    "stall_rate",
    "answer_delay",
    "answer_delay_rate",
    "status_outage",
    "status_outage_every",
    "history",
    "price",
    "history_lag",
    "retired",
)


@dataclass(frozen=True, kw_only=True)
class EmulatorConfig:
    """How the emulated Segmind API behaves.

    Times are in seconds of ``clock`` (``time.monotonic`` unless a test injects a
    fake one). ``None`` means "off" (``rpm``), "any non-empty key" (``api_key``),
    "unlimited" (``credits``) or "the computed wait" (``retry_after``).

    The hostile settings: ``image_fault`` (with ``image_fault_rate``, the fraction of
    image requests it hits) makes the image host misbehave; ``retry_after`` is sent
    verbatim as the ``Retry-After`` of every 429; ``stall_rate`` is the fraction of
    accepted jobs that stay ``PROCESSING`` until they expire. Their draws are seeded
    by ``fault_seed``. ``answer_delay`` holds each accepted submit's answer that many
    real seconds (``answer_delay_rate``: the fraction of submits it holds, drawn with the
    faults), so a test can kill a client between its POST and the answer, or let the
    client's timeout pass first. ``status_outage`` seconds of every
    ``status_outage_every`` (on the emulator's clock), status polls are answered 502.

    ``history`` serves the request history (off: 404, as for an account without it);
    each accepted request costs ``price`` USD (``credits_deduction``, and ``cost`` in the
    metrics of its status and result answers) and its row is kept ``history_ttl``
    seconds; it shows in the history only ``history_lag`` seconds after its submit.
    ``answer_cost`` off leaves ``cost`` out of the answers' metrics (Segmind does not
    document it), so only the request history prices a request.
    ``retired`` answers every submit 410 (the model was retired). ``retry_after`` is
    sent verbatim as the ``Retry-After`` of every 429 (``"none"``: no such header; every
    429 also carries ``x-rate-limit-reset-at-utc``).
    """

    api_key: str | None = None
    credits: int | None = None
    rpm: int | None = None
    rpm_counts_polls: bool = False
    workers: int = 4
    time_scale: float = 1.0
    blocked_terms: tuple[str, ...] = ()
    ttl: float = 3600.0
    fault_rate: float = 0.0
    drop_rate: float = 0.0
    fault_seed: int = 0
    latency_ms: float = 0.0
    image_fault: ImageFault = "none"
    image_fault_rate: float = 1.0
    retry_after: str | None = None
    stall_rate: float = 0.0
    answer_delay: float = 0.0
    answer_delay_rate: float = 1.0
    status_outage: float = 0.0
    status_outage_every: float = 0.0
    history: bool = True
    history_lag: float = 0.0
    retired: bool = False
    price: float = 0.04
    answer_cost: bool = True
    history_ttl: float = 7 * 24 * 3600.0
    image_format: ImageFormat = "png"
    image_size: int = 512
    seed: int = 0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """Every setting that is out of range, as ``name: why`` sentences."""
        found: list[str] = []
        for name in _SECONDS_AND_PRICES:
            value = getattr(self, name)
            if isinstance(value, int | float) and math.isinf(value):
                found.append(f"{name}: {value} is not a finite number")
        if self.api_key is not None and not self.api_key:
            found.append("api_key: must not be empty (use None to accept any key)")
        if self.credits is not None and self.credits < 0:
            found.append(f"credits: {self.credits} is below 0")
        if self.rpm is not None and self.rpm < 1:
            found.append(f"rpm: {self.rpm} is below 1 (use None to turn the limit off)")
        if self.workers < 1:
            found.append(f"workers: {self.workers} is below 1")
        if not self.time_scale >= 0:
            found.append(f"time_scale: {self.time_scale} is below 0")
        if not self.ttl > 0:
            found.append(f"ttl: {self.ttl} must be above 0")
        for name in ("fault_rate", "drop_rate", "image_fault_rate", "stall_rate"):
            rate = getattr(self, name)
            if not 0 <= rate <= 1:
                found.append(f"{name}: {rate} is not between 0 and 1")
        if self.fault_rate + self.drop_rate > 1:
            found.append("fault_rate + drop_rate: must not exceed 1")
        if not self.history_lag >= 0:
            found.append(f"history_lag: {self.history_lag} is below 0")
        if not self.answer_delay >= 0:
            found.append(f"answer_delay: {self.answer_delay} is below 0")
        if not 0 <= self.answer_delay_rate <= 1:
            found.append(f"answer_delay_rate: {self.answer_delay_rate} is not between 0 and 1")
        if self.status_outage or self.status_outage_every:
            if not 0 < self.status_outage < self.status_outage_every:
                found.append(
                    f"status_outage: {self.status_outage} s of every {self.status_outage_every} s: the outage"
                    " must be above 0 and shorter than the period"
                )
        if not self.price >= 0:
            found.append(f"price: {self.price} is below 0")
        if not self.history_ttl >= self.ttl:
            found.append(f"history_ttl: {self.history_ttl} is shorter than ttl ({self.ttl})")
        if not self.latency_ms >= 0:
            found.append(f"latency_ms: {self.latency_ms} is below 0")
        if self.image_fault not in IMAGE_FAULTS:
            found.append(f"image_fault: {self.image_fault!r} is not one of {', '.join(IMAGE_FAULTS)}")
        if self.retry_after is not None and not _header_safe(self.retry_after):
            found.append(
                f"retry_after: {self.retry_after!r} cannot be sent as a header "
                "(printable ASCII, no leading or trailing space)"
            )
        if self.image_format not in ("png", "jpeg"):
            found.append(f"image_format: {self.image_format!r} is not png or jpeg")
        if not 16 <= self.image_size <= 4096:
            found.append(f"image_size: {self.image_size} is not between 16 and 4096")
        return found


# Times and prices, where an infinite value (JSON's 1e999) would hang or poison the arithmetic.
_SECONDS_AND_PRICES = (
    "time_scale",
    "ttl",
    "latency_ms",
    "answer_delay",
    "status_outage",
    "status_outage_every",
    "history_lag",
    "price",
    "history_ttl",
)


def _header_safe(value: str) -> bool:
    """Whether ``value`` can go out verbatim as an HTTP header value."""
    return value == value.strip() and all(" " <= char <= "~" for char in value)
