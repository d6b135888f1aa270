"""The Starlette app of the emulated Segmind API: its routes, behind the gateway (:mod:`.gateway`)."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from batchgen.emulator.bodies import parse_json
from batchgen.emulator.config import EmulatorConfig
from batchgen.emulator.gateway import HISTORY_PATH, Gateway, api_key, error
from batchgen.emulator.history import HistoryQueryError
from batchgen.emulator.image_faults import (
    STREAMING,
    StreamingUnavailable,
    can_stream,
    image_fault_response,
)
from batchgen.emulator.jobs import EmulatedJob
from batchgen.emulator.state import EmulatorState
from batchgen.manifest.job import DEFAULT_MODEL
from batchgen.manifest.params import BriaParams, ParamsInvalid, validate_params

__all__ = ["HISTORY_PATH", "MODEL", "create_app"]

MODEL = DEFAULT_MODEL

# States whose answer tells the client the job is over.
_FINISHED = frozenset({"COMPLETED", "FAILED"})


class _Routes:
    """The request handlers; they share one :class:`EmulatorState`."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def _accept(self, request: Request) -> EmulatedJob | Response:
        """Validate and queue one submit; the job, or the error answer."""
        state = self.state
        slug = request.path_params["slug"]
        if slug != MODEL:
            return error(404, f"model {slug!r} not found; the emulator serves {MODEL!r}")
        if state.config.retired:
            return error(410, f"the model {slug!r} has been retired")
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return error(406, "invalid content type: send application/json")
        body, problem = parse_json(await request.body())
        if problem is not None:
            return error(400, problem)
        if not isinstance(body, dict):
            return error(400, "body: must be a JSON object of parameters")
        try:
            params = validate_params(body)
        except ParamsInvalid as exc:
            return error(400, "; ".join(f"{p.field}: {p.message}" for p in exc.problems))
        if state.credits is not None:
            if state.credits <= 0:
                return error(406, "insufficient credits")
            state.credits -= 1
        now = state.clock()
        state.queue.expire(now=now, ttl=state.config.ttl)
        stalled = state.faults.stall(rate=state.config.stall_rate)
        job = state.queue.submit(MODEL, params, now=now, error=self._moderate(params), stalled=stalled)
        state.stats.submits_accepted += 1
        state.requests.add(job)
        state.history.prune(now=now, history_ttl=state.config.history_ttl)
        state.history.add(job, api_key=api_key(request.scope), body=body, price=state.config.price)
        return job

    def _moderate(self, params: BriaParams) -> str | None:
        """The FAILED detail for a prompt moderation blocks, or None."""
        if not params.prompt_content_moderation:
            return None
        term = self.state.blocked_term(params.prompt)
        if term is None:
            return None
        return f"prompt blocked by content moderation (RAI): it contains the blocked term {term!r}"

    async def submit(self, request: Request) -> Response:
        """``POST /v2/{slug}``: queue a job, answer with its id and URLs."""
        job = await self._accept(request)
        if isinstance(job, Response):
            return job
        config = self.state.config
        if config.answer_delay > 0 and self.state.faults.held(rate=config.answer_delay_rate):
            # Accepted (and paid for), the answer still on its way: a client killed now
            # has lost the request id.
            await anyio.sleep(config.answer_delay)
        base = _base_url(request)
        return JSONResponse(
            {
                "request_id": job.request_id,
                "status": "QUEUED",
                "poll_url": f"{base}/v1/requests/{job.request_id}",
                "status_url": f"{base}/v2/requests/{job.request_id}/status",
                "response_url": f"{base}/v2/requests/{job.request_id}",
            }
        )

    async def run_sync(self, request: Request) -> Response:
        """``POST /v1/{slug}``: queue a job, wait for it, answer with the image bytes."""
        job = await self._accept(request)
        if isinstance(job, Response):
            return job
        if job.stalled:
            # It never finishes: hold the request until the job expires, then time
            # out as a gateway would (a bounded wait, so nothing is held forever).
            await anyio.sleep(max(0.0, job.submitted + self.state.config.ttl - self.state.clock()))
            return error(504, "gateway timeout: the request did not finish")
        await anyio.sleep(max(0.0, job.end - self.state.clock()))
        record = self.state.requests.get(job.request_id)
        if record is not None:
            record.told_done(self.state.clock())
        if job.error is not None:
            return JSONResponse(self._failed_body(job), status_code=422)
        data = await self._image_bytes(job)
        return Response(data, media_type=self.state.images.content_type)

    def _find(self, request_id: str, *, now: float) -> EmulatedJob | Response:
        state = self.state
        job = state.queue.get(request_id, now=now, ttl=state.config.ttl)
        if job is None:
            return error(404, f"request {request_id!r} not found (unknown or expired)")
        return job

    async def status(self, request: Request) -> Response:
        """``GET /v2/requests/{id}/status``: the job's state, without output."""
        state = self.state
        state.stats.status_polls += 1
        request_id: str = request.path_params["request_id"]
        now = state.clock()
        record = state.requests.get(request_id)
        if record is not None:
            record.status_polls += 1
        every = state.config.status_outage_every
        if every and now % every < state.config.status_outage:
            return error(502, "bad gateway (status outage)")
        job = self._find(request_id, now=now)
        if isinstance(job, Response):
            return job
        status = job.state(now)
        if status in _FINISHED and record is not None:
            record.told_done(now)
        if status == "FAILED":
            return JSONResponse(self._failed_body(job), status_code=422)
        if status == "COMPLETED":
            return JSONResponse(
                {"status": status, "request_id": job.request_id, "metrics": self._metrics(job)}
            )
        base = _base_url(request)
        return JSONResponse(
            {
                "status": status,
                "request_id": job.request_id,
                "status_url": f"{base}/v2/requests/{job.request_id}/status",
                "response_url": f"{base}/v2/requests/{job.request_id}",
                "metrics": {},
            }
        )

    async def result(self, request: Request) -> Response:
        """``GET /v2/requests/{id}`` (and the v1 poll_url): the full body, with output."""
        state = self.state
        state.stats.result_fetches += 1
        request_id: str = request.path_params["request_id"]
        now = state.clock()
        record = state.requests.get(request_id)
        if record is not None:
            record.result_fetches += 1
        job = self._find(request_id, now=now)
        if isinstance(job, Response):
            return job
        status = job.state(now)
        if status in _FINISHED and record is not None:
            record.told_done(now)
        if status == "FAILED":
            return JSONResponse(self._failed_body(job), status_code=422)
        done = status == "COMPLETED"
        ext = state.images.extension
        return JSONResponse(
            {
                "status": status,
                "request_id": job.request_id,
                "error": None,
                "metrics": self._metrics(job) if done else {},
                "output": f"{_base_url(request)}/images/{job.request_id}.{ext}" if done else None,
            }
        )

    async def image(self, request: Request) -> Response:
        """``GET /images/{id}.{ext}``: the image of a completed, retained job."""
        name: str = request.path_params["name"]
        request_id, _, ext = name.rpartition(".")
        state = self.state
        job = state.queue.get(request_id, now=state.clock(), ttl=state.config.ttl)
        if job is None or ext != state.images.extension or job.state(state.clock()) != "COMPLETED":
            return error(404, f"image {name!r} not found (unknown, expired or not ready)")
        record = state.requests.get(request_id)
        if record is not None:
            record.downloads += 1
        fault = state.config.image_fault
        if fault != "none" and state.faults.image(rate=state.config.image_fault_rate):
            if fault in STREAMING and not can_stream(request.scope):
                raise StreamingUnavailable(fault)
            image = await self._image_bytes(job) if fault in STREAMING else None
            return image_fault_response(
                fault, request_id=job.request_id, image=image, content_type=state.images.content_type
            )
        data = await self._image_bytes(job)
        state.stats.image_downloads += 1
        return Response(data, media_type=state.images.content_type)

    def _metrics(self, job: EmulatedJob) -> dict[str, Any]:
        """A finished request's metrics: its inference time and, as third parties report
        Segmind's v2 answers carry them, its cost (USD) and the credits left."""
        metrics: dict[str, Any] = {"inference_time": round(job.inference_time, 6)}
        if self.state.config.answer_cost:
            metrics["cost"] = self.state.config.price
        if self.state.credits is not None:
            metrics["remaining_credits"] = self.state.credits
        return metrics

    def _failed_body(self, job: EmulatedJob) -> dict[str, Any]:
        return {
            "status": "FAILED",
            "error": job.error,
            "metrics": self._metrics(job),
            "request_id": job.request_id,
        }

    async def _image_bytes(self, job: EmulatedJob) -> bytes:
        images = self.state.images
        data = images.get(job.key)
        if data is None:
            # Rendering takes milliseconds of CPU: keep it off the event loop.
            data = await anyio.to_thread.run_sync(images.render, job.params, job.key)
            images.put(job.key, data)
        return data

    async def generation(self, request: Request) -> Response:
        """``GET /generations/{id}.{ext}``: a completed request's image, kept as long as its history row."""
        name: str = request.path_params["name"]
        request_id, _, ext = name.rpartition(".")
        state = self.state
        now = state.clock()
        state.history.prune(now=now, history_ttl=state.config.history_ttl)
        row = state.history.public(request_id)  # a CDN-like URL: no key needed
        if row is None or ext != state.images.extension or row.status(now, state.config.ttl) != "COMPLETED":
            return error(404, f"generation {name!r} not found")
        return Response(await self._image_bytes(row.job), media_type=state.images.content_type)

    async def history_page(self, request: Request) -> Response:
        """``GET /inference-request/request-history``: one page of the key's request history."""
        state = self.state
        now = state.clock()
        state.history.prune(now=now, history_ttl=state.config.history_ttl)
        try:
            rows, total = state.history.query(
                dict(request.query_params),
                api_key=api_key(request.scope),
                now=now,
                ttl=state.config.ttl,
                lag=state.config.history_lag,
            )
        except HistoryQueryError as exc:
            return error(400, str(exc))
        page = int(request.query_params.get("page", "1"))
        per_page = int(request.query_params.get("per_page", "20"))
        base, ext = _base_url(request), state.images.extension
        return JSONResponse(
            {
                "data": [
                    state.history.to_json(r, now=now, ttl=state.config.ttl, base_url=base, extension=ext)
                    for r in rows
                ],
                "page": page,
                "per_page": per_page,
                "total": total,
                "total_pages": -(-total // per_page),
            }
        )

    async def history_row(self, request: Request) -> Response:
        """``GET /inference-request/request-history/{id}``: one request of this key, any age kept."""
        state = self.state
        request_id: str = request.path_params["request_id"]
        now = state.clock()
        state.history.prune(now=now, history_ttl=state.config.history_ttl)
        row = state.history.get(
            request_id, api_key=api_key(request.scope), now=now, lag=state.config.history_lag
        )
        if row is None:
            return error(404, f"request {request_id!r} not found in your history")
        return JSONResponse(
            state.history.to_json(
                row,
                now=now,
                ttl=state.config.ttl,
                base_url=_base_url(request),
                extension=state.images.extension,
            )
        )

    async def stats(self, request: Request) -> Response:
        """``GET /_emulator/stats``: counters for tests and benchmarks."""
        return JSONResponse(self.state.stats_body())

    async def requests(self, request: Request) -> Response:
        """``GET /_emulator/requests``: the per-request log, in submission order."""
        return JSONResponse(self.state.requests.to_json())

    async def configure(self, request: Request) -> Response:
        """``POST /_emulator/config``: change the settings in ``RUNTIME_SETTINGS`` at run time."""
        changes, problem = parse_json(await request.body() or b"{}")
        if problem is not None:
            return error(400, problem)
        if not isinstance(changes, dict):
            return error(400, "body: must be a JSON object of settings")
        problems = self.state.update(changes)
        if problems:
            return error(400, "; ".join(problems))
        return JSONResponse(self.state.runtime_settings())

    async def reset(self, request: Request) -> Response:
        """``POST /_emulator/reset``: back to the start, as if the emulator had just been started."""
        self.state.reset()
        return JSONResponse(self.state.runtime_settings())


def _base_url(request: Request) -> str:
    """The scheme and host the client used, so returned URLs point back at this server."""
    return str(request.base_url).rstrip("/")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 answers, as the JSON error bodies clients expect."""
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    """Build an emulator of the Segmind API; all its state lives in this app."""
    state = EmulatorState(config or EmulatorConfig())
    routes = _Routes(state)
    app = Starlette(
        routes=[
            Route("/v1/requests/{request_id}", routes.result, methods=["GET"]),
            Route("/v1/{slug}", routes.run_sync, methods=["POST"]),
            Route("/v2/requests/{request_id}/status", routes.status, methods=["GET"]),
            Route("/v2/requests/{request_id}", routes.result, methods=["GET"]),
            Route("/v2/{slug}", routes.submit, methods=["POST"]),
            Route("/images/{name}", routes.image, methods=["GET"]),
            Route("/generations/{name}", routes.generation, methods=["GET"]),
            Route(HISTORY_PATH, routes.history_page, methods=["GET"]),
            Route(HISTORY_PATH + "/{request_id}", routes.history_row, methods=["GET"]),
            Route("/_emulator/stats", routes.stats, methods=["GET"]),
            Route("/_emulator/requests", routes.requests, methods=["GET"]),
            Route("/_emulator/config", routes.configure, methods=["POST"]),
            Route("/_emulator/reset", routes.reset, methods=["POST"]),
        ],
        middleware=[Middleware(Gateway, state=state)],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.emulator = state
    return app
