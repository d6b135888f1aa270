"""Whole runs in process on virtual time: jobs, the emulator on the loop's clock, ``run()``.

The emulator is built with ``create_app`` and reached through ``httpx.ASGITransport``;
its clock is the :class:`~tests.support.clock.VirtualLoop`'s (plus ``Emu.offset``, to
jump past a retention window), and the run's wall clock is the loop's too, so the
ledger, the emulator's request history and the run agree on every time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from batchgen.emulator import EmulatorConfig, create_app
from batchgen.engine.runner import run
from batchgen.engine.settings import RunSettings
from batchgen.manifest.job import DEFAULT_MODEL, Job, job_key
from batchgen.manifest.params import validate_params
from batchgen.outcome.summary import Summary
from tests.support.clock import current_loop

__all__ = ["BASE", "Emu", "Wrap", "emulator", "make_jobs", "run_jobs", "settings"]

BASE = "http://localhost"  # plain http is for loopback hosts only (the key would travel in clear)

Wrap = Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport]


def make_jobs(
    n: int, *, mode: str = "fast", prompt: str = "a red fox number {i}", **params: Any
) -> list[Job]:
    """``n`` jobs of one prompt (``{i}`` is the index), seeds 1..n, labelled ``n``: i."""
    jobs = []
    for i in range(n):
        p = validate_params({"prompt": prompt.format(i=i), "seed": i + 1, "mode": mode, **params})
        key = job_key(DEFAULT_MODEL, p, {"n": i})
        jobs.append(
            Job(index=i, key=key, model=DEFAULT_MODEL, params=p, labels={"n": i}, filename=f"fox-{i:03d}.png")
        )
    return jobs


@dataclass
class Emu:
    """An in-process emulator and an httpx client bound to it."""

    http: httpx.AsyncClient
    offset: list[float] = field(default_factory=lambda: [0.0])  # seconds added to its clock

    async def stats(self) -> dict[str, Any]:
        return (await self.http.get(f"{BASE}/_emulator/stats")).json()  # type: ignore[no-any-return]

    async def requests(self) -> list[dict[str, Any]]:
        """The emulator's request log (``GET /_emulator/requests``)."""
        return (await self.http.get(f"{BASE}/_emulator/requests")).json()  # type: ignore[no-any-return]

    async def configure(self, **changes: Any) -> None:
        r = await self.http.post(f"{BASE}/_emulator/config", json=changes)
        assert r.status_code == 200, r.text


@asynccontextmanager
async def emulator(wrap: Wrap | None = None, **config: Any) -> AsyncIterator[Emu]:
    """An in-process emulator on the virtual loop's clock (small images unless told);
    ``wrap`` may doctor its answers."""
    config.setdefault("image_size", 16)
    offset = [0.0]
    loop = current_loop()
    app = create_app(EmulatorConfig(clock=lambda: loop.time() + offset[0], **config))
    transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=wrap(transport) if wrap else transport) as http:
        yield Emu(http, offset)


def settings(**kw: Any) -> RunSettings:
    """The defaults a user gets (nothing about the emulator's speed), a seeded jitter."""
    kw.setdefault("seed", 1)
    return RunSettings(**kw)


async def run_jobs(
    emu: Emu, jobs: list[Job], out: Path, *, wall_clock: Callable[[], float] | None = None, **kw: Any
) -> Summary:
    """``run()`` the jobs into ``out`` against ``emu``, on the loop's wall clock unless told."""
    return await run(
        jobs,
        out_dir=out,
        client=emu.http,
        base_url=BASE,
        settings=settings(**kw),
        progress=False,
        wall_clock=wall_clock or current_loop().wall,
    )
