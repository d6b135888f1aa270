"""How close `batchgen.run` gets to the plan's rate limit, and what each image costs in requests.

Runs a batch in process against the emulator (``httpx.ASGITransport``) whose whole clock
runs ``--speed`` times faster than real time (its 60 s rate-limit window included), so
a batch that takes minutes at Segmind's real pace is measured in seconds, exactly as it
would behave at full scale. The emulator enforces ``--limit`` submits per minute; the
runner is configured with ``--rpm`` (at or above the limit: it must find the rate itself).

Prints, in emulated time: images per minute as a ratio to the limit (1.0 is the
ceiling; the first minute's window lets a burst through, so short runs can exceed it),
429s as a fraction of accepted submits, requests and polls per image.

    python bench/run_throughput.py [--jobs 200] [--limit 50] [--rpm 100] [--speed 60]

Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import anyio
import httpx

from batchgen import RunSettings, run
from batchgen.emulator import EmulatorConfig, create_app
from batchgen.job import DEFAULT_MODEL, Job, job_key
from batchgen.params import validate_params


def _jobs(n: int, mode: str) -> list[Job]:
    jobs = []
    for i in range(n):
        params = validate_params({"prompt": f"a lighthouse at dawn, study {i}", "seed": i + 1, "mode": mode})
        key = job_key(DEFAULT_MODEL, params, {})
        jobs.append(Job(index=i, key=key, model=DEFAULT_MODEL, params=params, filename=f"{i:05d}.png"))
    return jobs


async def _main(args: argparse.Namespace) -> None:
    speed = args.speed
    t0 = time.monotonic()
    config = EmulatorConfig(
        rpm=args.limit,
        workers=args.workers,
        time_scale=1.0,
        ttl=1e9,
        image_size=64,
        clock=lambda: t0 + (time.monotonic() - t0) * speed,
    )
    settings = RunSettings(
        concurrency=args.concurrency,
        rpm=args.rpm * speed,
        time_factor=1 / speed,
        server_clock_scale=1 / speed,
        seed=1,
    )
    with tempfile.TemporaryDirectory() as out:
        transport = httpx.ASGITransport(app=create_app(config))
        async with httpx.AsyncClient(transport=transport, headers={"x-api-key": "bench"}) as http:
            started = time.monotonic()
            summary = await run(
                _jobs(args.jobs, args.mode),
                out_dir=Path(out),
                client=http,
                base_url="http://emulator.bench",
                settings=settings,
                progress=False,
            )
            real = time.monotonic() - started
            stats = (await http.get("http://emulator.bench/_emulator/stats")).json()
    emulated_minutes = real * speed / 60
    per_minute = summary.completed / emulated_minutes
    accepted = stats["submits_accepted"]
    rejected = stats["rejected"].get("429", 0)
    print(
        f"jobs {args.jobs} ({args.mode}), limit {args.limit} rpm, runner --rpm {args.rpm}, speed x{speed:g}"
    )
    print(f"completed {summary.completed} in {real:.2f} s real = {emulated_minutes:.2f} emulated minutes")
    print(f"images/min {per_minute:.1f} = {per_minute / args.limit:.2f} x the limit")
    print(f"429s {rejected} = {rejected / max(1, accepted):.1%} of {accepted} accepted submits")
    print(f"requests/image {summary.requests_per_image:.2f}, polls/image {summary.polls_per_image:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--limit", type=int, default=50, help="the emulator's rpm (Pro plan: 50)")
    parser.add_argument("--rpm", type=float, default=100.0, help="the runner's --rpm")
    parser.add_argument("--speed", type=float, default=60.0, help="emulator clock speed-up")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--mode", default="base", choices=["base", "fast", "hd"])
    anyio.run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
