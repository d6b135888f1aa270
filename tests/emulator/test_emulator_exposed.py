"""The emulator as a server others can reach: who may bind where, bounded bodies, hostile JSON."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from batchgen.emulator import EmulatorConfig, create_app
from batchgen.emulator.bodies import MAX_BODY

SUBMIT = "/v2/bria-text-to-image"
KEY = {"x-api-key": "k"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _emulator(*args: str) -> list[str]:
    return [sys.executable, "-m", "batchgen", "emulator", *args]


@pytest.mark.e2e
def test_every_interface_without_a_key_is_refused_at_once() -> None:
    """--host 0.0.0.0 without --api-key exits 2 naming the fix, before it listens."""
    port = _free_port()
    done = subprocess.run(
        _emulator("--host", "0.0.0.0", "--port", str(port)), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "--host 0.0.0.0 lets other machines in" in done.stderr
    assert "give it --api-key KEY" in done.stderr
    assert "Traceback" not in done.stderr
    with socket.socket() as sock:  # nothing listens there
        assert sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.e2e
def test_every_interface_with_a_key_serves_with_a_warning(tmp_path: Path) -> None:
    """--host 0.0.0.0 --api-key K listens, says on stderr that other machines can reach it,
    and answers this machine's /_emulator/ and keyed API requests."""
    port = _free_port()
    log = tmp_path / "emulator.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            _emulator("--host", "0.0.0.0", "--port", str(port), "--api-key", "k", "--time-scale", "0.001"),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                stats = httpx.get(f"{base}/_emulator/stats", timeout=1.0)
                break
            except httpx.TransportError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        assert stats.status_code == 200  # from this machine (loopback): no key needed
        assert httpx.post(f"{base}{SUBMIT}", json={"prompt": "a"}, headers=KEY).status_code == 200
        assert httpx.post(f"{base}{SUBMIT}", json={"prompt": "a"}).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "warning: the emulator on 0.0.0.0 is reachable from other machines" in log.read_text()


@pytest.mark.e2e
@pytest.mark.parametrize("port", ["99999", "-1"])
def test_a_port_out_of_range_is_a_usage_error(port: str) -> None:
    """--port 99999 is one line and exit 2, not a traceback."""
    done = subprocess.run(_emulator("--port", port), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert f"--port {port} is not a port" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.e2e
def test_port_0_prints_the_port_the_system_chose() -> None:
    """--port 0 listens on a free port and prints its URL with that port, which answers."""
    proc = subprocess.Popen(_emulator("--port", "0"), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.fullmatch(r"batchgen emulator on (http://127\.0\.0\.1:(\d+)) \(Ctrl-C stops it\)\n", line)
        assert found is not None and int(found[2]) > 0, line
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.get(f"{found[1]}/_emulator/stats", timeout=1.0).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # closes its stdout


def _client(client_host: str, **options: object) -> httpx.AsyncClient:
    app = create_app(EmulatorConfig(**options))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, client=(client_host, 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://emulator.test")


@pytest.mark.anyio
async def test_control_routes_from_another_machine_need_the_key() -> None:
    """From a non-loopback address /_emulator/* answers 403 without a configured key, 401 with
    a wrong or missing one, and only the emulator's key lets it through."""
    async with _client("192.0.2.7") as keyless:
        refused = await keyless.post("/_emulator/config", json={"rpm": 1}, headers=KEY)
        assert refused.status_code == 403
        assert "answers only this machine" in refused.json()["error"]
        assert (await keyless.get("/_emulator/stats")).status_code == 403
    async with _client("192.0.2.7", api_key="secret") as remote:
        assert (await remote.post("/_emulator/config", json={"rpm": 1})).status_code == 401
        wrong = await remote.get("/_emulator/requests", headers={"x-api-key": "guess"})
        assert wrong.status_code == 401
        right = await remote.post("/_emulator/config", json={"rpm": 1}, headers={"x-api-key": "secret"})
        assert right.status_code == 200
        assert right.json()["rpm"] == 1
    async with _client("::1") as local:  # this machine: as before
        assert (await local.post("/_emulator/config", json={"rpm": 2})).status_code == 200


@pytest.fixture
def served(emulator_server: Callable[..., str]) -> str:
    """The session's real emulator process (uvicorn) on loopback, reset for the test."""
    return emulator_server(time_scale=0.001)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _pid_listening(port: int) -> int:
    """The pid of the emulator process listening on ``port`` (found by its command line)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"emulator" in argv and str(port).encode() in argv:
            return int(proc.name)
    raise AssertionError(f"no emulator process on port {port}")


@pytest.mark.e2e
def test_a_chunked_body_that_never_ends_gets_413_and_costs_a_mebibyte(served: str) -> None:
    """A chunked submit that keeps coming is answered 413 once past 1 MiB and the connection
    closed; the server's memory does not follow the body (64 MiB sent, RSS grows < 16 MiB)."""
    port = int(served.rsplit(":", 1)[1])
    pid = _pid_listening(port)
    before = _rss_kib(pid)
    chunk = b"x" * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST {SUBMIT} HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\ncontent-type: application/json\r\n"
            "transfer-encoding: chunked\r\n\r\n".encode()
        )
        sock.setblocking(False)
        while sent < 64 * MAX_BODY:
            try:
                sent += sock.send(frame)
            except BlockingIOError:
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
        sock.setblocking(True)
        try:
            while data := sock.recv(65536):
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"larger than the emulator takes (1024 KiB)" in answer
    assert sent < 64 * MAX_BODY  # the server closed before the client gave up
    assert _rss_kib(pid) - before < 16 * 1024
    # And it still serves everyone else.
    assert httpx.get(f"{served}/_emulator/stats").status_code == 200


@pytest.mark.e2e
def test_a_declared_length_above_the_cap_is_refused_unread(served: str) -> None:
    """Content-Length above 1 MiB: 413 before a byte of the body is read."""
    port = int(served.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST {SUBMIT} HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\ncontent-type: application/json\r\n"
            f"content-length: {MAX_BODY + 1}\r\n\r\n".encode()
        )
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ")


@pytest.mark.e2e
def test_a_body_at_the_cap_is_still_read(served: str) -> None:
    """A body of exactly 1 MiB is read whole and accepted (the API sets no prompt length)."""
    body = b'{"prompt": "' + b"a" * (MAX_BODY - 14) + b'"}'
    assert len(body) == MAX_BODY
    answer = httpx.post(
        f"{served}{SUBMIT}", content=body, headers={**KEY, "content-type": "application/json"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "QUEUED"


@pytest.mark.e2e
@pytest.mark.parametrize("route", [SUBMIT, "/_emulator/config"])
def test_json_nested_100k_deep_is_400_without_a_traceback(
    emulator_process: Callable[..., str], tmp_path: Path, route: str
) -> None:
    """A body of 100,000 nested arrays answers 400 "nested too deeply"; the server logs no traceback."""
    base = emulator_process("--time-scale", "0.001")
    body = b"[" * 100_000 + b"]" * 100_000
    answer = httpx.post(
        f"{base}{route}", content=body, headers={**KEY, "content-type": "application/json"}, timeout=10
    )
    assert answer.status_code == 400
    assert answer.json() == {"error": "body: JSON nested too deeply"}
    assert httpx.get(f"{base}/_emulator/stats").status_code == 200
    logs = "".join(p.read_text() for p in tmp_path.glob("emulator-*.log"))
    assert "Traceback" not in logs


@pytest.mark.anyio
async def test_infinite_times_and_prices_are_refused() -> None:
    """JSON's 1e999 (infinity) for a time or a price is a 400 naming it, nothing changed."""
    async with _client("127.0.0.1") as local:
        answer = await local.post(
            "/_emulator/config", content=b'{"time_scale": 1e999, "price": -1e999}', headers=KEY
        )
        assert answer.status_code == 400
        assert "time_scale: inf is not a finite number" in answer.json()["error"]
        assert "price: -inf is not a finite number" in answer.json()["error"]
        outage = await local.post(
            "/_emulator/config", content=b'{"status_outage": 1, "status_outage_every": 1e999}', headers=KEY
        )
        assert outage.status_code == 400
        assert "status_outage_every: inf is not a finite number" in outage.json()["error"]
        assert (await local.post("/_emulator/config", json={})).json()["time_scale"] == 1.0
