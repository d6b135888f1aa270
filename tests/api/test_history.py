"""Reading the request history by time window: newest first, never the account's older past."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import pytest

from batchgen.api import history as history_module
from batchgen.api.history import PER_PAGE, History, HistoryUnavailable
from batchgen.emulator import EmulatorConfig, create_app

BASE = "http://localhost"
MODEL = "bria-text-to-image"
HOURS = 3600.0


@asynccontextmanager
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, list[float]]]:
    """An in-process emulator whose clock (and so its history's timestamps) can jump forward."""
    offset = [0.0]
    config = EmulatorConfig(time_scale=0.001, image_size=16, clock=lambda: time.monotonic() + offset[0])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(config))) as http:
        yield http, offset


async def submit(http: httpx.AsyncClient, n: int, prompt: str) -> list[str]:
    ids = []
    for i in range(n):
        r = await http.post(
            f"{BASE}/v2/{MODEL}", json={"prompt": f"{prompt} {i}", "seed": i + 1}, headers={"x-api-key": "k"}
        )
        ids.append(r.json()["request_id"])
    return ids


@pytest.mark.anyio
async def test_a_read_stops_at_the_start_of_its_window() -> None:
    """The day also holds 250 older requests: one page, newest first, reads this batch's 30 and stops."""
    async with served() as (http, offset):
        await submit(http, 250, "an older batch")
        offset[0] += 2 * HOURS
        since = time.time() + offset[0]
        new = await submit(http, 30, "this batch")
        history = History(http, BASE, api_key="k")
        rows = await history.rows(since=since, until=time.time() + offset[0], model=MODEL)
    assert sorted(r.request_id for r in rows) == sorted(new)
    assert history.requests == 1


@pytest.mark.anyio
async def test_a_read_for_some_requests_stops_once_it_has_them() -> None:
    """Looking for the 3 newest of 250 takes one page; for the oldest, every page back to it."""
    async with served() as (http, offset):
        since = time.time()
        ids = await submit(http, 250, "a batch")
        until = time.time() + offset[0]
        newest = History(http, BASE, api_key="k")
        found = await newest.rows(since=since, until=until, model=MODEL, wanted=ids[-3:])
        oldest = History(http, BASE, api_key="k")
        everything = await oldest.rows(since=since, until=until, model=MODEL, wanted=ids[:1])
    assert {r.request_id for r in found} >= set(ids[-3:]) and newest.requests == 1
    assert sorted(r.request_id for r in everything) == sorted(ids) and oldest.requests == 3


@pytest.mark.anyio
async def test_a_listing_that_is_not_newest_first_is_read_to_its_end() -> None:
    """A server that ignores sort_order (oldest first): no early stop on time; every row of the window."""
    now = time.time()
    stamps = [now - 3 * HOURS + 60 * i + 30 for i in range(250)]  # 250 minutes: most before the window

    def row(i: int) -> dict[str, object]:
        created = datetime.fromtimestamp(stamps[i], tz=UTC).isoformat()
        return {"request_id": f"r{i}", "model_name": MODEL, "created_at": created, "credits_deduction": 0.04}

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        chunk = [row(i) for i in range((page - 1) * PER_PAGE, min(250, page * PER_PAGE))]
        return httpx.Response(200, content=json.dumps({"data": chunk}))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        history = History(http, BASE, api_key="k")
        since = now - HOURS
        rows = await history.rows(since=since, until=now, model=MODEL)
    inside = [f"r{i}" for i, t in enumerate(stamps) if t >= since - history_module.CLOCK_SKEW]
    assert [r.request_id for r in rows] == inside and history.requests == 3


@pytest.mark.anyio
async def test_a_read_past_its_row_cap_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """More rows in the window than the cap allows (another use of the key): HistoryUnavailable."""
    monkeypatch.setattr(history_module, "MAX_ROWS", 150)
    async with served() as (http, offset):
        since = time.time()
        await submit(http, 260, "someone else's batch")
        history = History(http, BASE, api_key="k")
        with pytest.raises(HistoryUnavailable, match="more than 150 requests"):
            await history.rows(since=since, until=time.time() + offset[0], model=MODEL)
        # A caller that made 60 of them may read 150 + 2 x 60 = 270 rows: all of them.
        rows = await History(http, BASE, api_key="k").rows(
            since=since, until=time.time() + offset[0], model=MODEL, expected=60
        )
    assert len(rows) == 260
