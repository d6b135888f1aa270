"""How many status polls per second the uvicorn-served emulator answers on loopback.

Starts ``python -m batchgen emulator`` as a real subprocess on a free port, submits a
few jobs that stay PROCESSING for the whole run, then has ``--connections`` keep-alive
connections poll their status URLs as fast as answers come for ``--seconds``. It
prints polls/s, the emulator's own count of polls (``/_emulator/stats``), and the
server process's CPU use, so a client-bound figure is visible as such.

    python bench/emulator_polls.py [--connections 32] [--seconds 5] [--jobs 64]

Not a test: a measurement. Runs for a bounded time and number of connections.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
from anyio.streams.buffered import BufferedByteReceiveStream

KEY = {"x-api-key": "bench"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), or None elsewhere."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return None
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ready(base_url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"emulator exited with {proc.returncode}")
        try:
            httpx.get(f"{base_url}/_emulator/stats", timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("emulator did not start within 20 s")


async def _submit(base_url: str, jobs: int) -> list[str]:
    """Submit ``jobs`` jobs; their status paths."""
    async with httpx.AsyncClient(base_url=base_url, headers=KEY, timeout=10) as client:
        paths = []
        for i in range(jobs):
            answer = await client.post("/v2/bria-text-to-image", json={"prompt": f"bench {i}"})
            answer.raise_for_status()
            paths.append(httpx.URL(answer.json()["status_url"]).path)
        return paths


async def _poll(port: int, paths: list[str], *, connections: int, seconds: float) -> tuple[int, int, float]:
    """Polls answered (200) and not (other codes) in ``seconds``, and the time taken.

    The client speaks minimal HTTP/1.1 keep-alive over raw sockets: a full httpx
    client costs more CPU per request than the emulator does, and would measure itself.
    """
    requests = [
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-api-key: bench\r\n\r\n".encode()
        for path in paths
    ]
    ok = other = 0
    started = time.perf_counter()
    stop_at = started + seconds

    async def connection(index: int) -> None:
        nonlocal ok, other
        async with await anyio.connect_tcp("127.0.0.1", port) as raw:
            stream = BufferedByteReceiveStream(raw)
            n = index
            while time.perf_counter() < stop_at:
                await raw.send(requests[n % len(requests)])
                n += 1
                head = await stream.receive_until(b"\r\n\r\n", 65536)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await stream.receive_exactly(length)
                if head.startswith(b"HTTP/1.1 200"):
                    ok += 1
                else:
                    other += 1

    async with anyio.create_task_group() as tg:
        for index in range(connections):
            tg.start_soon(connection, index)
    return ok, other, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32, help="concurrent client connections")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to poll")
    parser.add_argument("--jobs", type=int, default=64, help="jobs whose status is polled")
    args = parser.parse_args()

    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    # time scale 100: jobs stay PROCESSING (about 37 min) for the whole measurement.
    command = [sys.executable, "-m", "batchgen", "emulator", "--port", str(port), "--time-scale", "100"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        _wait_ready(base_url, proc)
        cpu_before = _cpu_seconds(proc.pid)
        paths = anyio.run(_submit, base_url, args.jobs)
        ok, errors, elapsed = anyio.run(
            lambda: _poll(port, paths, connections=args.connections, seconds=args.seconds)
        )
        cpu_after = _cpu_seconds(proc.pid)
        counted = httpx.get(f"{base_url}/_emulator/stats").json()["status_polls"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    print(f"cores: {os.cpu_count()}  connections: {args.connections}  seconds: {elapsed:.2f}")
    print(f"status polls answered 200: {ok} (other answers: {errors}); emulator counted {counted}")
    print(f"polls/s: {ok / elapsed:,.0f}")
    if cpu_before is not None and cpu_after is not None:
        cpu = max(cpu_after - cpu_before, 1e-9)
        print(f"emulator CPU: {cpu / elapsed:.0%} of one core -> {ok / cpu:,.0f} polls per CPU-second")


if __name__ == "__main__":
    main()
