"""What one API request costs the client in CPU: httpx's async client on its default
transport (httpcore's anyio backend), on batchgen's (``batchgen/wire.py``, plain asyncio),
and its sync client in threads (as Segmind's SDK uses it), against a served emulator.

A benchmark, not a test. Each mode sends the same status poll ``--requests`` times from
``--concurrency`` tasks (or threads) and reports CPU milliseconds of this process per
request (the emulator runs in its own process). batchgen makes four HTTP requests per
image (submit, status, result, download), so four times the async figure is a floor
for its CPU per image. Also says whether ``sniffio`` is importable: httpcore imports it
on every lock it sets up, and a failed import searches ``sys.path`` each time.

    python bench/http_cost.py [--requests 4000] [--concurrency 1 8 100]
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import tempfile
import threading
import time
from pathlib import Path

import anyio
import httpx
from scenarios import KEY, MODEL, served  # bench/ is on sys.path when run as a script

from batchgen.api import wire

HEADERS = {"x-api-key": KEY}


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def async_polls(url: str, requests: int, concurrency: int, native: bool = False) -> tuple[float, float]:
    """CPU seconds and wall seconds for ``requests`` polls through an AsyncClient."""
    limits = wire.LIMITS  # the limits of the client batchgen builds (batchgen/runner.py, _http_client)
    transport = (
        wire.transport(limits=limits) if native else httpx.AsyncHTTPTransport(retries=0, limits=limits)
    )
    async with httpx.AsyncClient(transport=transport, timeout=30.0) as client:

        async def worker(n: int) -> None:
            for _ in range(n):
                (await client.get(url, headers=HEADERS)).raise_for_status()

        cpu0, wall0 = cpu(), time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker, requests // concurrency)
        return cpu() - cpu0, time.monotonic() - wall0


def sync_polls(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """CPU seconds and wall seconds for ``requests`` polls through a Client in threads."""
    with httpx.Client(timeout=30.0) as client:

        def worker(n: int) -> None:
            for _ in range(n):
                client.get(url, headers=HEADERS).raise_for_status()

        threads = [
            threading.Thread(target=worker, args=(requests // concurrency,)) for _ in range(concurrency)
        ]
        cpu0, wall0 = cpu(), time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return cpu() - cpu0, time.monotonic() - wall0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 100])
    args = parser.parse_args()
    print(f"sniffio importable: {importlib.util.find_spec('sniffio') is not None}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        served(["--time-scale", "0.001"], Path(tmp) / "emu.log") as emu,
    ):
        submitted = httpx.post(f"{emu.url}/v2/{MODEL}", json={"prompt": "a lighthouse"}, headers=HEADERS)
        url = submitted.raise_for_status().json()["status_url"]
        for concurrency in args.concurrency:
            for name, (used, wall) in (
                ("async, anyio", anyio.run(async_polls, url, args.requests, concurrency)),
                ("async, batchgen", anyio.run(async_polls, url, args.requests, concurrency, True)),
                ("sync threads (SDK)", sync_polls(url, args.requests, concurrency)),
            ):
                per_request = 1000 * used / args.requests
                print(
                    f"{name:19} concurrency {concurrency:3}: {per_request:.2f} ms CPU/request, "
                    f"{args.requests / wall:,.0f} requests/s"
                )


if __name__ == "__main__":
    main()
