"""Shared fixtures: anyio on asyncio (aiofiles is asyncio-only) or virtual time; real emulator processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.clock import inline_worker_threads, virtual_backend


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Every async test runs on asyncio."""
    return "asyncio"


def _free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Factory: ``start(*cli_args) -> base_url`` of a real ``batchgen emulator`` subprocess.

    Each call starts ``python -m batchgen emulator --host 127.0.0.1 --port <free port>
    *cli_args`` (e.g. ``"--time-scale", "0.001"``), waits until ``/_emulator/stats``
    answers and returns ``http://127.0.0.1:<port>``. Every process started is
    terminated when the test ends.
    """
    procs: list[subprocess.Popen[bytes]] = []

    def start(*cli_args: str, timeout: float = 20.0) -> str:
        port = _free_port()
        log = tmp_path / f"emulator-{port}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "batchgen",
                    "emulator",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    *cli_args,
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"emulator exited with {proc.returncode}: {log.read_text()}")
            try:
                if httpx.get(f"{base_url}/_emulator/stats", timeout=1.0).status_code == 200:
                    return base_url
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"emulator did not answer within {timeout} s: {log.read_text()}")
            time.sleep(0.05)

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def virtual_time(monkeypatch: pytest.MonkeyPatch) -> object:
    """The ``anyio_backend`` of a test on virtual time, worker-thread calls inline (support/clock.py)."""
    inline_worker_threads(monkeypatch)
    return virtual_backend()
