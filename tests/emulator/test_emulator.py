"""The emulated Segmind API in process (httpx.ASGITransport), on a fake clock."""

from __future__ import annotations

import io
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image

from batchgen.emulator import EmulatorConfig, create_app
from batchgen.emulator.image_faults import StreamingUnavailable
from batchgen.emulator.jobs import INFERENCE_SECONDS, InferenceTimes, JobQueue
from batchgen.emulator.requestlog import RequestLog
from batchgen.manifest.params import ASPECT_RATIOS, aspect_ratio_size, validate_params

BASE = "http://emulator.test"
SUBMIT = "/v2/bria-text-to-image"
KEY = {"x-api-key": "k"}


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@asynccontextmanager
async def emulator(clock: FakeClock | None = None, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh emulator built with these options (and the fake clock if given)."""
    if clock is not None:
        options["clock"] = clock
    app = create_app(EmulatorConfig(**options))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=KEY) as client:
        yield client


async def submit(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    """Submit a job (prompt defaulted) and return the accepted answer."""
    params.setdefault("prompt", "a lighthouse at dawn")
    response = await client.post(SUBMIT, json=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/_emulator/stats")).json()
    return body


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at 1000 s."""
    return FakeClock()


# --- submit, poll, fetch -------------------------------------------------------------


@pytest.mark.anyio
async def test_submit_answers_queued_with_absolute_urls() -> None:
    """A submit answers QUEUED with a uuid and poll/status/response URLs on the request's host."""
    async with emulator() as client:
        body = await submit(client)
    request_id = body["request_id"]
    assert str(uuid.UUID(request_id)) == request_id
    assert body == {
        "request_id": request_id,
        "status": "QUEUED",
        "poll_url": f"{BASE}/v1/requests/{request_id}",
        "status_url": f"{BASE}/v2/requests/{request_id}/status",
        "response_url": f"{BASE}/v2/requests/{request_id}",
    }


@pytest.mark.anyio
async def test_fifo_workers_move_jobs_queued_processing_completed(clock: FakeClock) -> None:
    """With one worker the second job waits for the first; states follow the clock; metrics are scaled."""
    params = validate_params({"prompt": "a lighthouse at dawn"})
    draws = InferenceTimes(seed=3)
    first, second = draws.draw(params) * 0.5, draws.draw(params) * 0.5
    async with emulator(clock, workers=1, time_scale=0.5, seed=3) as client:
        a = await submit(client)
        b = await submit(client)

        async def states() -> tuple[str, str]:
            sa = (await client.get(a["status_url"])).json()["status"]
            sb = (await client.get(b["status_url"])).json()["status"]
            return sa, sb

        assert await states() == ("PROCESSING", "QUEUED")
        queued = (await client.get(b["status_url"])).json()
        assert queued["metrics"] == {} and "output" not in queued
        assert queued["status_url"] == b["status_url"] and queued["response_url"] == b["response_url"]
        clock.advance(first - 0.001)
        assert await states() == ("PROCESSING", "QUEUED")
        clock.advance(0.002)
        assert await states() == ("COMPLETED", "PROCESSING")
        clock.advance(second)
        assert await states() == ("COMPLETED", "COMPLETED")
        done = (await client.get(a["status_url"])).json()
        assert done == {"status": "COMPLETED", "request_id": a["request_id"], "metrics": done["metrics"]}
        assert done["metrics"]["inference_time"] == pytest.approx(first, abs=1e-5)
        result = (await client.get(b["response_url"])).json()
        assert result["metrics"]["inference_time"] == pytest.approx(second, abs=1e-5)


@pytest.mark.anyio
async def test_result_carries_output_url_of_a_png_only_when_completed(clock: FakeClock) -> None:
    """The result has output None while running, then an absolute image URL that serves a PNG."""
    async with emulator(clock) as client:
        job = await submit(client)
        running = (await client.get(job["response_url"])).json()
        assert running["status"] == "PROCESSING" and running["output"] is None
        image_url = f"{BASE}/images/{job['request_id']}.png"
        assert (await client.get(image_url)).status_code == 404  # not ready yet
        clock.advance(200)
        result = (await client.get(job["response_url"])).json()
        assert result["status"] == "COMPLETED" and result["error"] is None
        assert result["output"] == image_url
        assert (await client.get(job["poll_url"])).json() == result
        image = await client.get(result["output"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).format == "PNG"


def test_inference_times_have_the_documented_means() -> None:
    """Seeded draws average the documented mean per mode, and scale with steps_num."""
    for mode, mean in INFERENCE_SECONDS.items():
        draws = InferenceTimes(seed=1)
        params = validate_params({"prompt": "x", "mode": mode})
        assert statistics.fmean(draws.draw(params) for _ in range(4000)) == pytest.approx(mean, rel=0.03)
    half = validate_params({"prompt": "x", "steps_num": 20})
    assert InferenceTimes(seed=2).draw(half) * 2 == pytest.approx(
        InferenceTimes(seed=2).draw(validate_params({"prompt": "x"}))
    )


@pytest.mark.anyio
async def test_sync_v1_returns_image_bytes_or_422() -> None:
    """POST /v1/<slug> waits for its job and answers with the image bytes, or 422 when it fails."""
    async with emulator(time_scale=0, blocked_terms=("dragon",)) as client:
        cat = {"prompt": "a cat", "aspect_ratio": "9:16"}
        response = await client.post("/v1/bria-text-to-image", json=cat)
        blocked = await client.post("/v1/bria-text-to-image", json={"prompt": "a dragon"})
        counts = await stats(client)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == aspect_ratio_size("9:16", 512)
    assert blocked.status_code == 422 and blocked.json()["status"] == "FAILED"
    assert "dragon" in blocked.json()["error"]
    assert counts["submits_accepted"] == 2 and counts["jobs"]["FAILED"] == 1


# --- images ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_images_are_byte_identical_for_identical_parameters(clock: FakeClock) -> None:
    """Two jobs with equal parameters get the same bytes; another seed gets other bytes."""
    async with emulator(clock) as client:
        jobs = [await submit(client, seed=5), await submit(client, seed=5), await submit(client, seed=6)]
        clock.advance(500)
        images = []
        for job in jobs:
            output = (await client.get(job["response_url"])).json()["output"]
            images.append((await client.get(output)).content)
    assert images[0] == images[1]
    assert images[0] != images[2]


@pytest.mark.anyio
async def test_images_have_the_requested_aspect_ratio_and_size(clock: FakeClock) -> None:
    """Every aspect ratio gives an image of that shape with the configured long side."""
    async with emulator(clock, image_size=96) as client:
        jobs = {ratio: await submit(client, aspect_ratio=ratio) for ratio in ASPECT_RATIOS}
        clock.advance(500)
        for ratio, job in jobs.items():
            output = (await client.get(job["response_url"])).json()["output"]
            image = Image.open(io.BytesIO((await client.get(output)).content))
            assert image.size == aspect_ratio_size(ratio, 96), ratio


@pytest.mark.anyio
async def test_jpeg_format_serves_jpeg(clock: FakeClock) -> None:
    """With image_format jpeg the output URL ends .jpeg and serves image/jpeg."""
    async with emulator(clock, image_format="jpeg", image_size=64) as client:
        job = await submit(client)
        clock.advance(500)
        output = (await client.get(job["response_url"])).json()["output"]
        image = await client.get(output)
    assert output.endswith(".jpeg") and image.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(image.content)).format == "JPEG"


# --- errors ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_bad_parameters_answer_400_naming_the_field() -> None:
    """Invalid parameters, unknown names, bad JSON and non-objects answer 400 with the field."""
    async with emulator() as client:
        cases = {
            "steps_num: 60 is above the maximum 50": {"prompt": "a", "steps_num": 60},
            "step_num: is not a parameter of bria-text-to-image (did you mean steps_num?)": {
                "prompt": "a",
                "step_num": 30,
            },
            "prompt: is required": {},
        }
        for message, body in cases.items():
            response = await client.post(SUBMIT, json=body)
            assert response.status_code == 400
            assert response.json() == {"error": message}
        bad_json = await client.post(SUBMIT, content=b"{nope", headers={"content-type": "application/json"})
        assert bad_json.status_code == 400 and bad_json.json()["error"].startswith("body:")
        not_object = await client.post(SUBMIT, json=["a"])
        assert not_object.status_code == 400 and not_object.json()["error"].startswith("body:")
        assert (await stats(client))["rejected"] == {"400": 5}


@pytest.mark.anyio
async def test_missing_or_wrong_key_answers_401() -> None:
    """No x-api-key is 401 on every API route; with api_key set, another key is 401 too."""
    async with emulator(api_key="right") as client:
        anonymous = {"x-api-key": ""}
        assert (await client.post(SUBMIT, json={"prompt": "a"}, headers=anonymous)).status_code == 401
        assert (await client.get("/v2/requests/x/status", headers=anonymous)).status_code == 401
        wrong = await client.post(SUBMIT, json={"prompt": "a"}, headers={"x-api-key": "wrong"})
        assert wrong.status_code == 401 and "error" in wrong.json()
        right = await client.post(SUBMIT, json={"prompt": "a"}, headers={"x-api-key": "right"})
        assert right.status_code == 200


@pytest.mark.anyio
async def test_unknown_request_or_model_answers_404() -> None:
    """Unknown request ids (status, result, v1 poll) and other slugs or paths answer 404 with an error."""
    async with emulator() as client:
        paths = ("/v2/requests/nope/status", "/v2/requests/nope", "/v1/requests/nope", "/images/nope.png")
        for path in paths:
            response = await client.get(path)
            assert response.status_code == 404 and "error" in response.json(), path
        other = await client.post("/v2/flux-schnell", json={"prompt": "a"})
        assert other.status_code == 404 and "flux-schnell" in other.json()["error"]
        assert (await client.post("/v1/flux-schnell", json={"prompt": "a"})).status_code == 404
        assert (await client.get("/v3/anything")).status_code == 404


@pytest.mark.anyio
async def test_credits_run_out_with_406_and_config_restores_them() -> None:
    """Each accepted submit costs a credit; then 406; POST /_emulator/config credits restores them."""
    async with emulator(credits=2) as client:
        await submit(client)
        await submit(client)
        refused = await client.post(SUBMIT, json={"prompt": "a"})
        assert refused.status_code == 406 and refused.json() == {"error": "insufficient credits"}
        restored = await client.post("/_emulator/config", json={"credits": 1})
        assert restored.status_code == 200 and restored.json()["credits"] == 1
        await submit(client)
        assert (await client.post(SUBMIT, json={"prompt": "a"})).status_code == 406
        counts = await stats(client)
    assert counts["submits_accepted"] == 3 and counts["rejected"] == {"406": 2}


@pytest.mark.anyio
async def test_blocked_prompt_fails_with_422_on_status_and_result(clock: FakeClock) -> None:
    """A blocked term (any case) ends FAILED: 422 with the FAILED body on both endpoints."""
    async with emulator(clock, blocked_terms=("Dragon",)) as client:
        job = await submit(client, prompt="a red DRAGON over the sea")
        allowed = await submit(client, prompt="a red dragon", prompt_content_moderation=False)
        clock.advance(500)
        for url in (job["status_url"], job["response_url"]):
            response = await client.get(url)
            assert response.status_code == 422
            body = response.json()
            assert body["status"] == "FAILED" and body["request_id"] == job["request_id"]
            assert "content moderation" in body["error"] and "'dragon'" in body["error"]
            assert body["metrics"]["inference_time"] > 0
        assert (await client.get(allowed["status_url"])).json()["status"] == "COMPLETED"
        counts = await stats(client)
    assert counts["jobs"]["FAILED"] == 1 and "422" not in counts["rejected"]


@pytest.mark.anyio
async def test_rate_limit_answers_429_with_retry_after(clock: FakeClock) -> None:
    """Over rpm in a sliding 60 s window: 429 with Retry-After in whole seconds until a slot frees."""
    async with emulator(clock, rpm=2) as client:
        await submit(client)
        clock.advance(20)
        await submit(client)
        clock.advance(10.5)
        refused = await client.post(SUBMIT, json={"prompt": "a"})
        assert refused.status_code == 429 and "rate limit" in refused.json()["error"]
        assert refused.headers["Retry-After"] == "30"  # the first submit leaves the window in 29.5 s
        polls = [await client.get("/v2/requests/x/status") for _ in range(5)]
        assert {p.status_code for p in polls} == {404}  # polls do not count by default
        other_key = await client.post(SUBMIT, json={"prompt": "a"}, headers={"x-api-key": "other"})
        assert other_key.status_code == 200  # the window is per key
        clock.advance(29.5)
        await submit(client)
        assert (await stats(client))["rejected"] == {"404": 5, "429": 1}


@pytest.mark.anyio
async def test_rate_limit_counts_polls_when_asked(clock: FakeClock) -> None:
    """With rpm_counts_polls every API request counts against the window."""
    async with emulator(clock, rpm=3, rpm_counts_polls=True) as client:
        job = await submit(client)
        assert (await client.get(job["status_url"])).status_code == 200
        assert (await client.get(job["response_url"])).status_code == 200
        refused = await client.get(job["status_url"])
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
        assert (await client.get("/_emulator/stats")).status_code == 200  # never limited


@pytest.mark.anyio
async def test_expired_requests_answer_404_everywhere(clock: FakeClock) -> None:
    """After ttl seconds from submission, status, result and image answer 404."""
    async with emulator(clock, ttl=100, time_scale=0.01) as client:
        job = await submit(client)
        clock.advance(50)
        output = (await client.get(job["response_url"])).json()["output"]
        assert (await client.get(output)).status_code == 200
        clock.advance(50)
        for url in (job["status_url"], job["response_url"], job["poll_url"], output):
            response = await client.get(url)
            assert response.status_code == 404 and "expired" in response.json()["error"], url
        await submit(client)  # a later submit also forgets expired jobs
        jobs = (await stats(client))["jobs"]
    assert jobs == {"QUEUED": 0, "PROCESSING": 1, "COMPLETED": 0, "FAILED": 0, "EXPIRED": 1}


# --- faults --------------------------------------------------------------------------


async def _fault_codes(seed: int) -> list[int]:
    async with emulator(fault_rate=0.3, fault_seed=seed) as client:
        codes = [(await client.get("/v2/requests/x/status")).status_code for _ in range(300)]
        assert (await client.get("/_emulator/stats")).status_code == 200  # never faulted
        counts = await stats(client)
    assert counts["rejected"] == {str(c): codes.count(c) for c in sorted(set(codes))}
    return codes


@pytest.mark.anyio
async def test_faults_answer_500_502_504_at_the_rate_reproducibly() -> None:
    """fault_rate answers that fraction with 500/502/504; the same fault_seed gives the same sequence."""
    codes = await _fault_codes(seed=7)
    faults = [c for c in codes if c != 404]
    assert set(faults) == {500, 502, 504}
    assert 0.2 < len(faults) / len(codes) < 0.4
    assert await _fault_codes(seed=7) == codes
    assert await _fault_codes(seed=8) != codes


@pytest.mark.anyio
async def test_dropped_connections_surface_as_transport_errors() -> None:
    """drop_rate closes requests without an answer: the client sees an httpx.TransportError."""

    async def outcomes() -> list[str]:
        seen = []
        async with emulator(drop_rate=0.5, fault_seed=1) as client:
            for _ in range(40):
                try:
                    seen.append(str((await client.post(SUBMIT, json={"prompt": "a"})).status_code))
                except httpx.TransportError:
                    seen.append("drop")
        return seen

    first = await outcomes()
    assert set(first) == {"200", "drop"}
    assert await outcomes() == first


@pytest.mark.anyio
async def test_latency_delays_answers() -> None:
    """latency_ms adds that delay to every API answer."""
    async with emulator(latency_ms=30) as client:
        started = time.perf_counter()
        await client.get("/v2/requests/x/status")
        assert time.perf_counter() - started >= 0.03


# --- stats and runtime config --------------------------------------------------------


@pytest.mark.anyio
async def test_stats_count_every_kind_of_request(clock: FakeClock) -> None:
    """Stats have exactly the documented keys; counts add up; clock is the emulator's clock now."""
    async with emulator(clock, workers=2) as client:
        jobs = [await submit(client, seed=s) for s in (1, 2, 3, 1, 4)]
        assert (await stats(client))["peak_queue_depth"] == 3  # 5 jobs, 2 on workers
        for job in jobs[:2]:
            await client.get(job["status_url"])
        clock.advance(1000)
        output = (await client.get(jobs[0]["response_url"])).json()["output"]
        await client.get(output)
        await client.get(output)
        await client.get("/inference-request/request-history")
        counts = await stats(client)
    assert counts == {
        "submits_accepted": 5,
        "rejected": {},
        "status_polls": 2,
        "result_fetches": 1,
        "image_downloads": 2,
        "history_requests": 1,
        "jobs": {"QUEUED": 0, "PROCESSING": 0, "COMPLETED": 5, "FAILED": 0, "EXPIRED": 0},
        "peak_queue_depth": 3,
        "duplicate_submits": 1,
        "clock": clock.now,
    }


@pytest.mark.anyio
async def test_runtime_config_changes_settings_and_rejects_bad_ones() -> None:
    """POST /_emulator/config changes runtime settings and answers them; bad ones are 400, change nothing."""
    async with emulator() as client:
        changes = {"rpm": 5, "fault_rate": 0.1, "ttl": 60, "time_scale": 0.5, "workers": 2}
        changed = await client.post("/_emulator/config", json=changes)
        assert changed.json() == {
            "rpm": 5,
            "credits": None,
            "fault_rate": 0.1,
            "drop_rate": 0.0,
            "latency_ms": 0.0,
            "ttl": 60,
            "time_scale": 0.5,
            "workers": 2,
            "image_fault": "none",
            "image_fault_rate": 1.0,
            "retry_after": None,
            "stall_rate": 0.0,
            "answer_delay": 0.0,
            "answer_delay_rate": 1.0,
            "status_outage": 0.0,
            "status_outage_every": 0.0,
            "history": True,
            "price": 0.04,
            "history_lag": 0.0,
            "retired": False,
        }
        bad_changes: list[dict[str, Any]] = [
            {"seed": 3},
            {"rpm": "many"},
            {"fault_rate": 2.0},
            {"credits": True},
            {"workers": 0},
            {"workers": 2.5},
            {"workers": "4"},
            {"time_scale": -1},
            {"time_scale": "fast"},
            {"image_fault": "teapot"},
            {"image_fault": True},
            {"image_fault_rate": 1.5},
            {"retry_after": 5},
            {"retry_after": "5\r\nX-Injected: 1"},
            {"stall_rate": -0.1},
        ]
        for bad in bad_changes:
            response = await client.post("/_emulator/config", json=bad)
            assert response.status_code == 400 and response.json()["error"].startswith(f"{list(bad)[0]}:")
        after = (await client.post("/_emulator/config", json={})).json()
    assert after == changed.json()


@pytest.mark.anyio
async def test_reset_is_a_fresh_start_with_the_first_settings(clock: FakeClock) -> None:
    """POST /_emulator/reset forgets jobs, counters, the request log and the history, restores
    the settings and credits it started with, and draws the same seeded times and faults again."""
    async with emulator(clock, credits=3, fault_rate=0.3, fault_seed=7, workers=1) as client:

        async def session() -> tuple[list[int], list[float]]:
            codes = [
                (await client.post(SUBMIT, json={"prompt": f"a cat {i}"})).status_code for i in range(12)
            ]
            times = [r["inference_time"] for r in (await client.get("/_emulator/requests")).json()]
            return codes, times

        first = await session()
        assert 406 in first[0] and (await stats(client))["submits_accepted"] == 3
        await _config(client, credits=50, workers=8, rpm=1)
        reset = await client.post("/_emulator/reset")
        assert reset.status_code == 200
        assert (reset.json()["credits"], reset.json()["workers"], reset.json()["rpm"]) == (3, 1, None)
        fresh = await stats(client)
        assert (fresh["submits_accepted"], fresh["rejected"], fresh["duplicate_submits"]) == (0, {}, 0)
        assert sum(fresh["jobs"].values()) == 0
        assert (await client.get("/_emulator/requests")).json() == []
        assert await session() == first
        await _config(client, fault_rate=0)
        history = await client.get("/inference-request/request-history")
    assert history.json()["total"] == 3  # this session's, none of the first's


async def _config(client: httpx.AsyncClient, **changes: Any) -> None:
    """Change runtime settings; fail the test unless the emulator accepts them."""
    response = await client.post("/_emulator/config", json=changes)
    assert response.status_code == 200, response.text


async def _status(client: httpx.AsyncClient, job: dict[str, Any]) -> str:
    """The status a job's status URL reports now."""
    status: str = (await client.get(job["status_url"])).json()["status"]
    return status


@pytest.mark.anyio
async def test_time_scale_changed_mid_run_applies_to_later_jobs_only(clock: FakeClock) -> None:
    """A new time_scale scales the inference time of jobs submitted after it; earlier ones keep theirs."""
    params = validate_params({"prompt": "a lighthouse at dawn"})
    draws = InferenceTimes(seed=4)
    first, second = draws.draw(params), draws.draw(params) * 0.01
    async with emulator(clock, workers=4, seed=4) as client:
        a = await submit(client)
        await _config(client, time_scale=0.01)
        b = await submit(client)
        clock.advance(second + 0.001)
        assert (await _status(client, a), await _status(client, b)) == ("PROCESSING", "COMPLETED")
        clock.advance(first)
        metrics = [(await client.get(job["status_url"])).json()["metrics"] for job in (a, b)]
    assert metrics[0]["inference_time"] == pytest.approx(first, abs=1e-5)
    assert metrics[1]["inference_time"] == pytest.approx(second, abs=1e-5)


@pytest.mark.anyio
async def test_workers_grown_mid_run_start_later_jobs_sooner(clock: FakeClock) -> None:
    """Growing the pool adds workers free at once: a job submitted next starts before one queued earlier."""
    async with emulator(clock, workers=1) as client:
        a = await submit(client)
        b = await submit(client)
        await _config(client, workers=2)
        c = await submit(client)
        d = await submit(client)
        states = [await _status(client, job) for job in (a, b, c, d)]
        depth = (await stats(client))["peak_queue_depth"]
    assert states == ["PROCESSING", "QUEUED", "PROCESSING", "QUEUED"]
    assert depth == 2  # b and d wait; c never did


@pytest.mark.anyio
async def test_workers_shrunk_mid_run_drop_the_workers_free_last(clock: FakeClock) -> None:
    """Shrinking keeps the workers free soonest; jobs already scheduled keep their schedule."""
    params = validate_params({"prompt": "a lighthouse at dawn"})
    draws = InferenceTimes(seed=3)
    a_time, b_time, c_time = (draws.draw(params) for _ in range(3))
    assert c_time > max(a_time, b_time)  # seed 3 draws them so: c ends after a and b
    async with emulator(clock, workers=3, seed=3) as client:
        a = await submit(client)
        b = await submit(client)
        await _config(client, workers=1)  # keeps the idle worker, drops a's and b's
        c = await submit(client)
        d = await submit(client)
        assert [await _status(client, job) for job in (a, b, c, d)] == [
            "PROCESSING",
            "PROCESSING",
            "PROCESSING",
            "QUEUED",
        ]
        clock.advance(max(a_time, b_time) + 0.001)
        assert [await _status(client, job) for job in (a, b)] == ["COMPLETED", "COMPLETED"]
        assert await _status(client, d) == "QUEUED"  # d waits for c, not for the workers a and b freed
        clock.advance(c_time - max(a_time, b_time))
        assert (await _status(client, c), await _status(client, d)) == ("COMPLETED", "PROCESSING")


def test_config_rejects_out_of_range_settings() -> None:
    """EmulatorConfig names every out-of-range setting."""
    with pytest.raises(ValueError, match="workers: 0 is below 1.*fault_rate: 1.5"):
        EmulatorConfig(workers=0, fault_rate=1.5)


# --- the request log -----------------------------------------------------------------


async def _requests(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """GET /_emulator/requests, by request id (asserting it is a list in submission order)."""
    records: list[dict[str, Any]] = (await client.get("/_emulator/requests")).json()
    by_id = {record["request_id"]: record for record in records}
    assert len(by_id) == len(records)
    return by_id


@pytest.mark.anyio
async def test_request_log_times_match_the_schedule(clock: FakeClock) -> None:
    """Each accepted submit has a record in order: mode, steps, and submitted/start/end as scheduled."""
    params = validate_params({"prompt": "a lighthouse at dawn", "mode": "fast", "steps_num": 20})
    draws = InferenceTimes(seed=3)
    first, second = draws.draw(params) * 0.5, draws.draw(params) * 0.5
    async with emulator(clock, workers=1, time_scale=0.5, seed=3) as client:
        a = await submit(client, mode="fast", steps_num=20)
        clock.advance(1)
        b = await submit(client, mode="fast", steps_num=20)
        assert (await client.post(SUBMIT, json={"prompt": "a", "steps_num": 99})).status_code == 400
        records = (await client.get("/_emulator/requests")).json()
    assert [r["request_id"] for r in records] == [a["request_id"], b["request_id"]]  # refusals have none
    ra, rb = records
    assert ra["mode"] == "fast" and ra["steps_num"] == 20
    assert (ra["submitted"], ra["start"]) == (1000.0, 1000.0)
    assert ra["end"] == pytest.approx(1000 + first) and ra["inference_time"] == pytest.approx(first)
    assert (rb["submitted"], rb["start"]) == (1001.0, ra["end"])  # waited for the one worker
    assert rb["inference_time"] == pytest.approx(second)
    assert ra["status_polls"] == ra["result_fetches"] == ra["downloads"] == 0
    assert ra["first_completed_at"] is None


@pytest.mark.anyio
async def test_request_log_counts_polls_fetches_downloads_and_first_completed_at(clock: FakeClock) -> None:
    """Polls, result fetches and downloads count per request; first_completed_at is the first done answer."""
    async with emulator(clock, time_scale=0.01, rpm=100, rpm_counts_polls=True) as client:
        job = await submit(client)
        image_url = f"{BASE}/images/{job['request_id']}.png"
        await client.get(job["status_url"])
        await client.get(job["response_url"])
        assert (await client.get(image_url)).status_code == 404  # not ready: not a download
        clock.advance(10)
        assert (await client.get(job["status_url"])).json()["status"] == "COMPLETED"
        done_at = clock.now
        clock.advance(5)
        await client.get(job["status_url"])
        await client.get(job["response_url"])
        await client.get(job["poll_url"])
        await client.get(image_url)
        await _config(client, image_fault="gone")
        assert (await client.get(image_url)).status_code == 410  # an image fault's answer is a download
        await _config(client, rpm=1)
        assert (await client.get(job["status_url"])).status_code == 429  # refused: never reached it
        record = (await _requests(client))[job["request_id"]]
    assert record["status_polls"] == 3 and record["result_fetches"] == 3 and record["downloads"] == 2
    assert record["first_completed_at"] == done_at


@pytest.mark.anyio
async def test_request_log_first_completed_at_for_failed_sync_and_result_answers(clock: FakeClock) -> None:
    """A 422 FAILED answer, a result fetch and a v1 sync answer each set first_completed_at once."""
    async with emulator(clock, time_scale=0.01, blocked_terms=("dragon",)) as client:
        blocked = await submit(client, prompt="a dragon")
        fetched = await submit(client)
        clock.advance(10)
        assert (await client.get(blocked["status_url"])).status_code == 422
        failed_at = clock.now
        clock.advance(1)
        assert (await client.get(fetched["response_url"])).json()["status"] == "COMPLETED"
        fetched_at = clock.now
        clock.advance(1)
        await client.get(blocked["response_url"])
        await client.get(fetched["status_url"])
        await _config(client, time_scale=0)
        assert (await client.post("/v1/bria-text-to-image", json={"prompt": "a cat"})).status_code == 200
        records = await _requests(client)
    assert records[blocked["request_id"]]["first_completed_at"] == failed_at
    assert records[fetched["request_id"]]["first_completed_at"] == fetched_at
    sync = list(records.values())[2]  # submission order: the v1 submit came third
    assert sync["first_completed_at"] == clock.now and sync["inference_time"] == 0


@pytest.mark.anyio
async def test_request_log_stalled_job_has_no_end_and_records_outlive_expiry(clock: FakeClock) -> None:
    """A stalled job's end and inference_time are null; a record stays after its job expired."""
    async with emulator(clock, stall_rate=1.0, ttl=100) as client:
        job = await submit(client)
        clock.advance(100)
        assert (await client.get(job["status_url"])).status_code == 404
        record = (await _requests(client))[job["request_id"]]
    assert record["end"] is None and record["inference_time"] is None
    assert record["status_polls"] == 1 and record["first_completed_at"] is None


def test_request_log_keeps_only_the_newest_records_up_to_its_cap() -> None:
    """Beyond its cap the log drops the oldest records and keeps submission order."""
    params = validate_params({"prompt": "a"})
    queue = JobQueue(workers=1, time_scale=1.0, seed=0)
    log = RequestLog(cap=3)
    jobs = [queue.submit("m", params, now=float(i), error=None) for i in range(5)]
    for job in jobs:
        log.add(job)
    assert len(log) == 3 and log.get(jobs[1].request_id) is None
    assert [r["request_id"] for r in log.to_json()] == [job.request_id for job in jobs[2:]]


# --- hostile modes -------------------------------------------------------------------


async def _completed_image_url(client: httpx.AsyncClient, clock: FakeClock) -> str:
    """Submit a job, let it complete, and return its output URL."""
    job = await submit(client)
    clock.advance(500)
    output: str = (await client.get(job["response_url"])).json()["output"]
    return output


@pytest.mark.anyio
async def test_image_fault_html_answers_200_with_a_web_page(clock: FakeClock) -> None:
    """image_fault html answers the image URL with 200 text/html and a small HTML page."""
    async with emulator(clock, image_fault="html") as client:
        response = await client.get(await _completed_image_url(client, clock))
        counts = await stats(client)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>") and len(response.content) < 1000
    assert counts["image_downloads"] == 0 and counts["rejected"] == {}


@pytest.mark.anyio
async def test_image_fault_forbidden_and_gone_answer_403_xml_and_410(clock: FakeClock) -> None:
    """forbidden answers 403 with an S3 AccessDenied XML body; gone answers 410; only images are hit."""
    async with emulator(clock, image_fault="forbidden") as client:
        job = await submit(client)
        clock.advance(500)
        assert (await client.get(job["status_url"])).status_code == 200
        result = await client.get(job["response_url"])
        assert result.status_code == 200
        forbidden = await client.get(result.json()["output"])
        await _config(client, image_fault="gone")
        gone = await client.get(result.json()["output"])
        await _config(client, image_fault="none")
        served = await client.get(result.json()["output"])
        counts = await stats(client)
    assert forbidden.status_code == 403 and forbidden.headers["content-type"].startswith("application/xml")
    assert "<Code>AccessDenied</Code>" in forbidden.text
    assert gone.status_code == 410
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert counts["rejected"] == {"403": 1, "410": 1} and counts["image_downloads"] == 1


@pytest.mark.anyio
async def test_image_fault_rate_hits_that_fraction_reproducibly(clock: FakeClock) -> None:
    """image_fault_rate hits that fraction of downloads, the same ones for the same fault_seed."""

    async def codes(seed: int) -> list[int]:
        async with emulator(clock, image_fault="gone", image_fault_rate=0.5, fault_seed=seed) as client:
            url = await _completed_image_url(client, clock)
            return [(await client.get(url)).status_code for _ in range(60)]

    first = await codes(seed=1)
    assert set(first) == {200, 410} and 15 < first.count(410) < 45
    assert await codes(seed=1) == first
    assert await codes(seed=2) != first


@pytest.mark.anyio
async def test_streaming_image_faults_refuse_an_in_process_transport(clock: FakeClock) -> None:
    """In process (ASGITransport buffers whole bodies) endless and slow raise a clear error, not a hang."""
    for fault in ("endless", "slow"):
        async with emulator(clock, image_fault=fault) as client:
            url = await _completed_image_url(client, clock)
            with pytest.raises(StreamingUnavailable, match="uvicorn"):
                await client.get(url)


@pytest.mark.anyio
async def test_endless_image_stream_stops_when_the_client_disconnects() -> None:
    """An endless body keeps coming until the client disconnects; then the app returns (nothing left over)."""
    app = create_app(EmulatorConfig(time_scale=0, image_fault="endless", image_size=32))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=KEY) as client:
        job = await submit(client)
        output = (await client.get(job["response_url"])).json()["output"]
    chunks_before_disconnect = 50
    body_messages = 0
    received = 0
    disconnected = anyio.Event()
    request_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal body_messages, received
        if message["type"] == "http.response.start":
            assert message["status"] == 200
        elif message["type"] == "http.response.body":
            body_messages += 1
            received += len(message.get("body", b""))
            assert message.get("more_body", False), "an endless body must not end"
            if body_messages == chunks_before_disconnect:
                disconnected.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},  # what uvicorn's h11 server declares
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": httpx.URL(output).path,
        "raw_path": httpx.URL(output).raw_path,
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"emulator.test")],
        "client": ("127.0.0.1", 1234),
        "server": ("emulator.test", 80),
    }
    with anyio.fail_after(5):
        await app(scope, receive, send)
    assert body_messages >= chunks_before_disconnect and received > 40 * 64 * 1024


@pytest.mark.anyio
async def test_retry_after_setting_is_sent_verbatim_on_every_429(clock: FakeClock) -> None:
    """retry_after replaces the computed Retry-After of 429s (and only of 429s); null restores it."""
    async with emulator(clock, rpm=1, retry_after="1000000000") as client:
        accepted = await client.post(SUBMIT, json={"prompt": "a"})
        assert accepted.status_code == 200 and "Retry-After" not in accepted.headers
        refused = await client.post(SUBMIT, json={"prompt": "a"})
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1000000000"
        date = "Wed, 21 Oct 2037 07:28:00 GMT"
        await _config(client, retry_after=date)
        assert (await client.post(SUBMIT, json={"prompt": "a"})).headers["Retry-After"] == date
        await _config(client, retry_after=None)
        computed = await client.post(SUBMIT, json={"prompt": "a"})
    assert computed.status_code == 429 and computed.headers["Retry-After"] == "60"


@pytest.mark.anyio
async def test_stalled_job_stays_processing_then_expires(clock: FakeClock) -> None:
    """With stall_rate 1 a job goes QUEUED -> PROCESSING and stays there until the TTL makes it 404."""
    async with emulator(clock, workers=1, stall_rate=1.0, ttl=100, time_scale=0.01) as client:
        first = await submit(client)
        second = await submit(client)
        assert (await _status(client, first), await _status(client, second)) == ("PROCESSING", "QUEUED")
        clock.advance(99)  # far past any inference time at this scale
        assert (await _status(client, first), await _status(client, second)) == ("PROCESSING", "PROCESSING")
        result = (await client.get(first["response_url"])).json()
        assert result["status"] == "PROCESSING" and result["output"] is None
        assert (await stats(client))["jobs"]["PROCESSING"] == 2
        clock.advance(1)
        response = await client.get(first["status_url"])
    assert response.status_code == 404


@pytest.mark.anyio
async def test_stalled_jobs_free_their_worker_and_follow_the_fault_seed(clock: FakeClock) -> None:
    """A stalled job frees its worker after its drawn time; which jobs stall is seeded by fault_seed."""
    params = validate_params({"prompt": "a lighthouse at dawn"})
    first_time = InferenceTimes(seed=0).draw(params) * 0.01

    async def stalled(seed: int) -> list[bool]:
        async with emulator(clock, workers=1, stall_rate=0.5, fault_seed=seed, time_scale=0.01) as client:
            jobs = [await submit(client) for _ in range(40)]
            clock.advance(1000)
            return [await _status(client, job) == "PROCESSING" for job in jobs]

    first = await stalled(seed=3)
    assert 8 < sum(first) < 32
    assert await stalled(seed=3) == first and await stalled(seed=4) != first
    async with emulator(clock, workers=1, stall_rate=1.0, time_scale=0.01) as client:
        await submit(client)
        await _config(client, stall_rate=0)
        later = await submit(client)
        clock.advance(first_time + 0.0001)
        assert await _status(client, later) == "PROCESSING"  # the stalled job's worker is free again


@pytest.mark.anyio
async def test_sync_v1_of_a_stalled_job_times_out_with_504_when_it_expires() -> None:
    """POST /v1/<slug> for a stalled job is held until the job expires, then answered 504."""
    async with emulator(stall_rate=1.0, ttl=0.05) as client:
        started = time.perf_counter()
        response = await client.post("/v1/bria-text-to-image", json={"prompt": "a cat"})
    assert response.status_code == 504 and "did not finish" in response.json()["error"]
    assert time.perf_counter() - started >= 0.05


# --- served for real -----------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.anyio
async def test_served_emulator_faults_and_drops_match_in_process(
    emulator_process: Callable[..., str],
) -> None:
    """Under uvicorn, faults and drops follow the in-process seeded sequence; drops are transport errors."""

    async def outcomes(client: httpx.AsyncClient) -> list[str]:
        seen = []
        for _ in range(30):
            try:
                seen.append(str((await client.get("/v2/requests/x/status")).status_code))
            except httpx.TransportError:
                seen.append("drop")
        return seen

    served_url = emulator_process("--fault-rate", "0.2", "--drop-rate", "0.3", "--fault-seed", "5")
    async with httpx.AsyncClient(base_url=served_url, headers=KEY) as client:
        served = await outcomes(client)
    async with emulator(fault_rate=0.2, drop_rate=0.3, fault_seed=5) as client:
        in_process = await outcomes(client)
    assert served == in_process
    assert {"404", "drop"} <= set(served) and set(served) & {"500", "502", "504"}


async def _served_image_url(client: httpx.AsyncClient) -> str:
    """Submit a job to a served emulator (fast time scale), wait for it, return its output URL."""
    job = await submit(client)
    for _ in range(1000):
        if (await client.get(job["status_url"])).json()["status"] == "COMPLETED":
            break
        await anyio.sleep(0.01)
    output: str = (await client.get(job["response_url"])).json()["output"]
    assert output is not None, "the job did not complete within 10 s"
    return output


def _server_cpu_seconds(base_url: str) -> float | None:
    """CPU seconds used so far by the emulator process serving ``base_url`` (Linux /proc), or None."""
    port = base_url.rsplit(":", 1)[1]
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if b"emulator" in args and port.encode() in args:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    return None


@pytest.mark.e2e
@pytest.mark.anyio
async def test_served_endless_image_streams_until_the_client_leaves(
    emulator_server: Callable[..., str],
) -> None:
    """Under uvicorn an endless body passes 8 MB and goes on; the client leaving stops it, the rest works."""
    served_url = emulator_server(time_scale=0.001, image_fault="endless")
    cap = 8 * 1024 * 1024
    async with httpx.AsyncClient(base_url=served_url, headers=KEY, timeout=10) as client:
        output = await _served_image_url(client)
        received = 0
        async with client.stream("GET", output) as response:
            assert response.status_code == 200 and response.headers["content-type"] == "image/png"
            assert "content-length" not in response.headers
            async for chunk in response.aiter_raw():
                received += len(chunk)
                if received > cap:
                    break
        assert received > cap
        await anyio.sleep(0.2)  # let the server see the disconnect
        cpu_before = _server_cpu_seconds(served_url)
        await anyio.sleep(1.0)
        cpu_after = _server_cpu_seconds(served_url)
        if cpu_before is not None and cpu_after is not None:
            assert cpu_after - cpu_before < 0.3, "the endless stream kept running after the client left"
        assert (await client.get("/_emulator/stats")).status_code == 200
        await _config(client, image_fault="none")
        image = await client.get(output)
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).format == "PNG"


@pytest.mark.e2e
@pytest.mark.anyio
async def test_served_slow_image_sends_headers_then_almost_nothing(
    emulator_server: Callable[..., str],
) -> None:
    """Under uvicorn a slow image sends its headers (the full length) at once, then at most a byte in 2 s."""
    served_url = emulator_server(time_scale=0.001, image_fault="slow")
    async with httpx.AsyncClient(base_url=served_url, headers=KEY, timeout=10) as client:
        output = await _served_image_url(client)
        received = 0
        with anyio.fail_after(5):
            async with client.stream("GET", output) as response:
                assert response.status_code == 200 and response.headers["content-type"] == "image/png"
                assert int(response.headers["content-length"]) > 1000
                with anyio.move_on_after(2.0):
                    async for chunk in response.aiter_raw():
                        received += len(chunk)
        assert received <= 1
        assert (await client.get("/_emulator/stats")).status_code == 200


def test_cli_refuses_out_of_range_options(capsys: pytest.CaptureFixture[str]) -> None:
    """`batchgen emulator` with an out-of-range option exits 2 naming it, without a traceback."""
    from batchgen.cli.main import main

    assert main(["emulator", "--workers", "0", "--fault-rate", "2", "--stall-rate", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "workers: 0 is below 1" in err and "fault_rate: 2.0" in err and "Traceback" not in err
    assert "stall_rate: 1.5 is not between 0 and 1" in err


def test_cli_on_a_port_in_use_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`batchgen emulator` on a busy port: one clear line, exit 2 (it printed its URL, then
    uvicorn's error, and exited 3, the code for key and credit problems)."""
    import socket

    from batchgen.cli.main import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["emulator", "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: emulator: cannot listen on 127.0.0.1:{port}: Address already in use\n"


@pytest.mark.anyio
async def test_status_polls_are_answered_502_during_the_outage_of_every_period() -> None:
    """--status-outage 2/10: polls in the first 2 s of every 10 s answer 502, the rest the state."""
    clock = FakeClock()
    async with emulator(clock, status_outage=2.0, status_outage_every=10.0) as client:
        request_id = (await submit(client))["request_id"]
        codes = []
        for at in (10.5, 11.9, 12.1, 19.0, 20.0):
            clock.now = at
            codes.append((await client.get(f"/v2/requests/{request_id}/status")).status_code)
    assert codes == [502, 502, 200, 200, 502]


@pytest.mark.anyio
async def test_answer_delay_rate_holds_only_that_share_of_the_answers() -> None:
    """--answer-delay with --answer-delay-rate 0: every answer comes at once; rate 1: held."""
    async with emulator(answer_delay=5.0, answer_delay_rate=0.0) as client:
        with anyio.fail_after(2):
            await submit(client)
    async with emulator(answer_delay=5.0, answer_delay_rate=1.0) as client:
        with anyio.move_on_after(0.5) as held:
            await submit(client)
        assert held.cancelled_caught
