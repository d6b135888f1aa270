"""Shards sharing one account: N ``batchgen run --shard K/N`` processes on one emulator.

Starts ``batchgen emulator --rpm LIMIT`` (submits per minute per key, a sliding 60 s
window, 429 with Retry-After beyond it) as a process, then N ``batchgen run --shard K/N``
processes with **default flags** (no ``--rpm``: each finds its share of the limit from
its own 429s) and the same key, all at once, each into its own folder. Each job takes
``22 s x --time-scale`` on one of ``--workers`` emulator workers, so only the rate limit
binds.

Reports accepted submits per minute as a fraction of LIMIT, after the first 60 s window
(which lets a burst of LIMIT through at once): while every shard is still submitting
(until the first shard's last submit), and until the very last submit (shards finish at
different times, and the share of one that finished is not taken up at once by the
others); 429s as a fraction of accepted submits (the emulator's counters); every shard's
exit code, images and learned rate. Submit times are the emulator's (its request log),
matched to shards by request id through each shard's ledger.

    python bench/shards.py [--shards 3] [--limit 600] [--jobs 1800] [--time-scale 0.01]

Not a test: a measurement (a few minutes: the jobs are paced by the real-time limit).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--limit", type=int, default=600, help="the emulator's --rpm (submits per minute)")
    parser.add_argument("--jobs", type=int, default=1800, help="jobs in the whole batch")
    parser.add_argument("--time-scale", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=64)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="batchgen-shards-"))
    manifest = work / "bench.yaml"
    manifest.write_text(
        "name: shards\ndefaults:\n  prompt_enhancement: false\n"
        f"jobs:\n  - prompt: a lighthouse at dawn\n    seed: '1-{args.jobs}'\n"
    )
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    emulator = subprocess.Popen(
        [sys.executable, "-m", "batchgen", "emulator", "--port", str(port), "--rpm", str(args.limit),
         "--time-scale", str(args.time_scale), "--workers", str(args.workers), "--image-size", "64",
         "--ttl", "100000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            try:
                httpx.get(f"{base}/_emulator/stats", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        env = {**os.environ, "SEGMIND_API_KEY": "one-account", "BATCHGEN_BASE_URL": base}
        started = time.monotonic()
        runs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "batchgen",
                    "run",
                    str(manifest),
                    "--shard",
                    f"{k}/{args.shards}",
                    "--out",
                    str(work / f"shard-{k}"),
                    "--no-report",
                    "--no-progress",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=(work / f"shard-{k}.log").open("w"),
            )  # fmt: skip
            for k in range(1, args.shards + 1)
        ]
        codes = [proc.wait() for proc in runs]
        wall = time.monotonic() - started
        stats = httpx.get(f"{base}/_emulator/stats", timeout=10).json()
        log = httpx.get(f"{base}/_emulator/requests", timeout=60).json()
    finally:
        emulator.terminate()
        emulator.wait()

    when = {record["request_id"]: record["submitted"] for record in log}
    folders = [work / f"shard-{k}" for k in range(1, args.shards + 1)]
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in folders]
    ends = []
    for folder in folders:
        lines = (json.loads(line) for line in (folder / "ledger.jsonl").read_text().splitlines())
        ends.append(max(when[e["request_id"]] for e in lines if e["event"] == "submitted"))
    submitted = sorted(when.values())
    first, last = submitted[0], submitted[-1]

    def rate(start: float, end: float) -> float:
        return sum(1 for t in submitted if start <= t <= end) * 60 / (end - start)

    all_running = rate(first + 60, min(ends))
    to_the_end = rate(first + 60, last)
    accepted = stats["submits_accepted"]
    refused = stats["rejected"].get("429", 0)
    print(f"{args.shards} shards, one key, emulator --rpm {args.limit}, batchgen run with default flags")
    print(f"jobs {args.jobs}: wall {wall:.0f} s, exit codes {codes}")
    for k, s in enumerate(summaries, 1):
        print(
            f"  shard {k}/{args.shards}: {s['jobs']['completed']} images, {s['rate_limited']} 429s, "
            f"learned rpm {s['learned_rpm']}, requests/image {s['requests_per_image']}"
        )
    print(
        f"after the first 60 s, while all {args.shards} submit ({min(ends) - first - 60:.0f} s): "
        f"{all_running:.0f} submits/min = {all_running / args.limit:.3f} of the limit"
    )
    print(
        f"after the first 60 s, to the last submit ({last - first - 60:.0f} s): "
        f"{to_the_end:.0f} submits/min = {to_the_end / args.limit:.3f} of the limit"
    )
    print(f"shards' last submits: {', '.join(f'{t - first:.0f} s' for t in ends)} after the first")
    print(f"whole run: {accepted * 60 / (last - first):.0f} submits/min (first window's burst included)")
    print(f"429s: {refused} = {refused / accepted:.3%} of {accepted} accepted submits")
    print(f"folders: {work}")


if __name__ == "__main__":
    main()
