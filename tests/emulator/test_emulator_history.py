"""The emulator's request history: cost, the body as sent, states, paging, and its long-lived images."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from batchgen.emulator import EmulatorConfig, create_app

BASE = "http://localhost"
HISTORY = f"{BASE}/inference-request/request-history"
HEADERS = {"x-api-key": "k"}


@asynccontextmanager
async def emulator(**config: Any) -> AsyncIterator[tuple[httpx.AsyncClient, list[float]]]:
    """An in-process emulator whose clock can be moved forward (``offset[0]`` seconds)."""
    offset = [0.0]
    config.setdefault("time_scale", 0.001)
    config.setdefault("image_size", 16)
    app = create_app(EmulatorConfig(clock=lambda: time.monotonic() + offset[0], **config))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), headers=HEADERS) as http:
        yield http, offset


async def submit(http: httpx.AsyncClient, **body: Any) -> str:
    r = await http.post(f"{BASE}/v2/bria-text-to-image", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["request_id"])


@pytest.mark.anyio
async def test_every_accepted_request_has_a_row_with_cost_body_and_state() -> None:
    async with emulator(price=0.05, blocked_terms=("forbidden",)) as (http, offset):
        done = await submit(http, prompt="a lighthouse", seed=7, mode="fast")
        blocked = await submit(http, prompt="a forbidden castle")
        offset[0] += 5  # past every inference
        page = (await http.get(HISTORY, params={"per_page": 100})).json()
        one = (await http.get(f"{HISTORY}/{done}")).json()
        other_key = await http.get(f"{HISTORY}/{done}", headers={"x-api-key": "someone-else"})
    rows = {r["request_id"]: r for r in page["data"]}
    assert set(rows) == {done, blocked} and page["total"] == 2
    assert rows[done]["model_status"] == "COMPLETED"
    assert rows[done]["credits_deduction"] == 0.05
    assert rows[done]["request_body"] == {"prompt": "a lighthouse", "seed": 7, "mode": "fast"}
    assert rows[done]["generation_url"].endswith(f"/generations/{done}.png")
    assert rows[blocked]["model_status"] == "FAILED" and "forbidden" in rows[blocked]["error"]
    assert rows[blocked]["generation_url"] is None
    assert one == rows[done]
    assert other_key.status_code == 404


@pytest.mark.anyio
async def test_history_outlives_results_and_its_image_stays_downloadable() -> None:
    async with emulator(ttl=3600) as (http, offset):
        rid = await submit(http, prompt="a fox", mode="fast")
        offset[0] += 2 * 3600  # the result is gone, the history row is not
        assert (await http.get(f"{BASE}/v2/requests/{rid}")).status_code == 404
        row = (await http.get(f"{HISTORY}/{rid}")).json()
        image = await http.get(row["generation_url"], headers={"x-api-key": ""})
        offset[0] += 8 * 24 * 3600  # past the 7-day history
        gone = await http.get(f"{HISTORY}/{rid}")
    assert row["model_status"] == "COMPLETED"
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert gone.status_code == 404


@pytest.mark.anyio
async def test_paging_filters_and_sorting() -> None:
    async with emulator() as (http, offset):
        ids = [await submit(http, prompt=f"study {i}", mode="fast") for i in range(5)]
        first = (await http.get(HISTORY, params={"per_page": 2, "sort_order": "asc"})).json()
        last = (await http.get(HISTORY, params={"per_page": 2, "page": 3, "sort_order": "asc"})).json()
        newest = (await http.get(HISTORY, params={"per_page": 1})).json()
        pending = (await http.get(HISTORY, params={"status": "PENDING", "per_page": 100})).json()
        other = (await http.get(HISTORY, params={"model_name": "flux"})).json()
    assert [r["request_id"] for r in first["data"]] == ids[:2]
    assert [r["request_id"] for r in last["data"]] == ids[4:]
    assert (first["total"], first["total_pages"]) == (5, 3)
    assert newest["data"][0]["request_id"] == ids[-1]
    assert {r["model_status"] for r in pending["data"]} <= {"PENDING"}
    assert other["total"] == 0


@pytest.mark.anyio
async def test_without_answer_cost_only_the_history_prices_a_request() -> None:
    """answer_cost off: the status and result metrics carry no cost; the history row still does."""
    async with emulator(answer_cost=False, price=0.05) as (http, offset):
        rid = await submit(http, prompt="a quiet harbour", mode="fast")
        offset[0] += 5
        status = (await http.get(f"{BASE}/v2/requests/{rid}/status")).json()
        result = (await http.get(f"{BASE}/v2/requests/{rid}")).json()
        row = (await http.get(f"{HISTORY}/{rid}")).json()
    assert status["status"] == "COMPLETED" and "inference_time" in status["metrics"]
    assert "cost" not in status["metrics"] and "cost" not in result["metrics"]
    assert row["credits_deduction"] == 0.05


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"per_page": "101"}, "per_page"),
        ({"per_page": "0"}, "per_page"),
        ({"from_date": "2026-01-01", "to_date": "2026-03-01"}, "31 days"),
        ({"from_date": "yesterday"}, "YYYY-MM-DD"),
        ({"status": "DONE"}, "status"),
    ],
)
@pytest.mark.anyio
async def test_bad_queries_are_400s_that_say_what(params: dict[str, str], says: str) -> None:
    async with emulator() as (http, _):
        r = await http.get(HISTORY, params=params)
    assert r.status_code == 400 and says in r.json()["error"]


@pytest.mark.anyio
async def test_history_off_and_missing_key() -> None:
    async with emulator(history=False) as (http, _):
        off = await http.get(HISTORY)
    async with emulator() as (http, _):
        nokey = await http.get(HISTORY, headers={"x-api-key": ""})
    assert off.status_code == 404 and nokey.status_code == 401


@pytest.mark.e2e
def test_the_segmind_sdk_reads_the_emulators_history(
    emulator_server: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """segmind 1.3.0's generations.history() and .get(id), pointed at a served emulator, read our rows."""
    pytest.importorskip("segmind")
    import importlib

    import segmind

    generations = importlib.import_module("segmind.generations")

    base = emulator_server(time_scale=0.001, price=0.04)
    monkeypatch.setattr(generations, "REQUEST_HISTORY_URL", f"{base}/inference-request/request-history")
    sdk = segmind.SegmindClient(api_key="k", base_url=f"{base}/v1")
    try:
        body = sdk.submit_async("bria-text-to-image", prompt="a lighthouse", seed=3).wait(interval=0.05)
        page = sdk.generations.history(per_page=10, model_name="bria")
        row = sdk.generations.get(body["request_id"])
    finally:
        sdk._client.close()
    assert page["data"][0]["request_id"] == body["request_id"]
    assert row["credits_deduction"] == 0.04 and row["request_body"]["seed"] == 3
    assert httpx.get(row["generation_url"], timeout=10).status_code == 200
