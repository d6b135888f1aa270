"""What sits in front of every route of the emulator: the body cap, the control routes'
guard, and in front of the model routes latency, injected faults, the key, the rate limit
and the rejection counters."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import anyio
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batchgen.emulator.bodies import MAX_BODY, Disconnected, TooLarge, read_body, replay
from batchgen.emulator.faults import ConnectionDropped
from batchgen.emulator.state import EmulatorState

__all__ = ["HISTORY_PATH", "Gateway", "api_key", "error"]

# Where Segmind serves the request history (on api.spotprod.segmind.com; here, on this host).
HISTORY_PATH = "/inference-request/request-history"

_FAULT_MESSAGES = {
    500: "internal server error (injected fault)",
    502: "bad gateway (injected fault)",
    504: "gateway timeout (injected fault)",
}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error answer as Segmind gives one: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Gateway:
    """What sits in front of every route: the body cap, the control routes' guard, and in
    front of the model routes latency, faults, auth, rate limit, counters.

    It is plain ASGI (not BaseHTTPMiddleware) to keep per-request overhead low, and so
    that a dropped connection can start a response and then abort it.
    """

    def __init__(self, app: ASGIApp, *, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive)
        except TooLarge:
            message = f"body: larger than the emulator takes ({MAX_BODY // 1024} KiB)"
            # The rest of the body is never read: the connection cannot carry another request.
            await error(413, message, headers={"connection": "close"})(scope, receive, send)
            return
        except Disconnected:
            return  # nobody to answer
        receive = replay(body, receive)
        path: str = scope.get("path", "")
        if path.startswith("/_emulator/"):
            refusal = self._refuse_control(scope)
            await (refusal or self.app)(scope, receive, send)
            return
        state = self.state
        config = state.config
        rejected = state.stats.rejected

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                # 422 carries a FAILED job's body: an answer, not a rejection.
                if status >= 400 and status != 422:
                    rejected[str(status)] += 1
            await send(message)

        if config.latency_ms > 0:
            await anyio.sleep(config.latency_ms / 1000)
        fault = state.faults.draw(fault_rate=config.fault_rate, drop_rate=config.drop_rate)
        if fault == "drop":
            # Start the answer, then abort it: uvicorn closes the socket mid-response,
            # and in process httpx re-raises this transport error to the client.
            await send({"type": "http.response.start", "status": 500, "headers": []})
            raise ConnectionDropped()
        if fault is not None:
            await error(fault, _FAULT_MESSAGES[fault])(scope, receive, counting_send)
            return
        if path.startswith(HISTORY_PATH):
            state.stats.history_requests += 1
            refusal = self._refuse_history(scope)
            if refusal is not None:
                await refusal(scope, receive, counting_send)
                return
        if path.startswith(("/v1/", "/v2/")):
            refusal = self._refuse(scope)
            if refusal is not None:
                await refusal(scope, receive, counting_send)
                return
        await self.app(scope, receive, counting_send)

    def _refuse_control(self, scope: Scope) -> Response | None:
        """A 403 or 401 answer for a control route (``/_emulator/*``) asked from another
        machine without the emulator's key, or None: they change and reveal everything."""
        if from_this_machine(scope):
            return None
        expected = self.state.config.api_key
        if expected is None:
            return error(
                403, "/_emulator/ answers only this machine (an emulator started with --api-key: its key too)"
            )
        if api_key(scope) != expected:
            return error(401, "/_emulator/ from another machine needs the emulator's --api-key in x-api-key")
        return None

    def _refuse_history(self, scope: Scope) -> Response | None:
        """A 404 (history off) or 401 answer for a history request, or None."""
        if not self.state.config.history:
            return error(404, "request history is not available")
        return self._refuse_key(scope)

    def _refuse_key(self, scope: Scope) -> Response | None:
        """A 401 answer when the request's key is missing or wrong, or None."""
        config = self.state.config
        key = api_key(scope)
        if not key:
            return error(401, "missing API key: send it in the x-api-key header")
        if config.api_key is not None and key != config.api_key:
            return error(401, "invalid API key")
        return None

    def _refuse(self, scope: Scope) -> Response | None:
        """A 401 or 429 answer for this API request, or None to let it through."""
        config = self.state.config
        refusal = self._refuse_key(scope)
        if refusal is not None:
            return refusal
        key = api_key(scope)
        counts = scope["method"] == "POST" or config.rpm_counts_polls
        if config.rpm is not None and counts:
            wait = self.state.limiter.acquire(key, limit=config.rpm, now=self.state.clock())
            if wait is not None:
                headers = {}
                if config.retry_after != "none":
                    headers["Retry-After"] = str(wait) if config.retry_after is None else config.retry_after
                reset = self.state.history.wall(self.state.clock() + wait)
                headers["x-rate-limit-reset-at-utc"] = (
                    datetime.fromtimestamp(reset, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
                )
                return error(
                    429,
                    f"rate limit exceeded: {config.rpm} requests per minute; retry in {wait} s",
                    headers=headers,
                )
        return None


def api_key(scope: Scope) -> str:
    """The request's ``x-api-key`` header, or ``""``."""
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            return str(value.decode("latin-1"))
    return ""


def from_this_machine(scope: Scope) -> bool:
    """Whether the request came over loopback (or from no network peer at all, in process)."""
    client = scope.get("client")
    if not client:
        return True
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:  # a name, as some test transports give ("testclient")
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)
