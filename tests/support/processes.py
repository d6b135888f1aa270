"""Real processes for end-to-end tests: emulator servers, `batchgen run` as a user types it.

:class:`EmulatorProcess` is one ``batchgen emulator`` on a loopback port; the fixtures in
``tests/conftest.py`` start one per test (``emulator_process``) or share one for the
whole session and reset it before each test (``emulator_server``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "REPO",
    "EmulatorProcess",
    "accepted_ids",
    "configure",
    "env",
    "request_log",
    "run_args",
    "run_cli",
    "stats",
    "wait_for",
    "write_manifest",
]

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmulatorProcess:
    """A real ``python -m batchgen emulator --host 127.0.0.1 --port <free port> *cli_args``.

    ``start`` waits until ``/_emulator/stats`` answers; its output goes to a log file
    in ``log_dir`` that the errors quote.
    """

    def __init__(self, cli_args: tuple[str, ...], log_dir: Path) -> None:
        self.cli_args = cli_args
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"emulator-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 20.0) -> str:
        """Start the process; its base URL once it answers."""
        args = ["--host", "127.0.0.1", "--port", str(self.port), *self.cli_args]
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "batchgen", "emulator", *args], stdout=sink, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            try:
                if httpx.get(f"{self.base_url}/_emulator/stats", timeout=1.0).status_code == 200:
                    return self.base_url
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"emulator did not answer within {timeout} s: {self.log.read_text()}")
            time.sleep(0.05)

    def check(self) -> None:
        """Fail loudly, with its log, when the process has exited."""
        assert self.proc is not None, "not started"
        if self.proc.poll() is not None:
            raise RuntimeError(f"emulator exited with {self.proc.returncode}: {self.log.read_text()}")

    def reset(self, **settings: Any) -> str:
        """``POST /_emulator/reset``, then ``/_emulator/config`` with ``settings``; the base URL."""
        self.check()
        reset = httpx.post(f"{self.base_url}/_emulator/reset", timeout=5)
        assert reset.status_code == 200, reset.text
        if settings:
            configure(self.base_url, **settings)
        return self.base_url

    def stop(self) -> None:
        """Terminate it (kill it if it does not go within 10 s)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def write_manifest(tmp_path: Path, *, seeds: int, blocked: bool = False) -> Path:
    """``tmp_path/batch.yaml``: one base-mode prompt over ``seeds`` seeds (plus a blocked one)."""
    path = tmp_path / "batch.yaml"
    extra = '  - prompt: "A forbidden castle at night"\n' if blocked else ""
    path.write_text(
        "name: e2e\n"
        "defaults:\n"
        "  mode: base\n"
        "jobs:\n"
        '  - prompt: "A lighthouse on a cliff at dawn"\n'
        f"    seeds: {seeds}\n"
        f"{extra}"
        "output:\n"
        '  filename: "img-{index:03d}.png"\n'
    )
    return path


def run_args(manifest: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    """The documented command with default flags: the runner is told nothing of the emulator's speed."""
    return [
        sys.executable, "-m", "batchgen", "run", str(manifest), "--out", str(out), "--base-url", base_url,
        *extra,
    ]  # fmt: skip


def env(key: str | None = "e2e-key") -> dict[str, str]:
    """This process's environment with ``SEGMIND_API_KEY`` set to ``key`` (or unset)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("SEGMIND_API_KEY", "BATCHGEN_BASE_URL")}
    if key is not None:
        environ["SEGMIND_API_KEY"] = key
    return environ


def run_cli(
    args: list[str], *, key: str | None = "e2e-key", cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` to the end (at most 120 s), output captured as text."""
    return subprocess.run(args, env=env(key), cwd=cwd, capture_output=True, text=True, timeout=120)


def configure(base_url: str, **settings: Any) -> None:
    """``POST /_emulator/config``: change runtime settings (for later submits); the test fails if refused."""
    configured = httpx.post(f"{base_url}/_emulator/config", json=settings, timeout=5)
    assert configured.status_code == 200, configured.text


def stats(base_url: str) -> dict[str, Any]:
    """The emulator's counters (``GET /_emulator/stats``)."""
    return httpx.get(f"{base_url}/_emulator/stats", timeout=5).json()  # type: ignore[no-any-return]


def request_log(base_url: str) -> list[dict[str, Any]]:
    """The emulator's per-request log (``GET /_emulator/requests``)."""
    return httpx.get(f"{base_url}/_emulator/requests", timeout=10).json()  # type: ignore[no-any-return]


def accepted_ids(base_url: str) -> set[str]:
    """The request ids of every submit the emulator accepted (and charged)."""
    return {r["request_id"] for r in request_log(base_url)}


def wait_for(predicate: Callable[[], bool], *, timeout: float = 30.0) -> None:
    """Poll ``predicate`` every 10 ms until it holds; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)
