"""Short batches and the worker-bound case, timed from the command's start (issue 19, targets 5 and 6).

Every batchgen figure is one ``batchgen run MANIFEST --base-url URL`` process against a
fresh ``batchgen emulator`` process (the machinery of ``bench/scenarios.py``), timed from
the moment the process is started to its exit, so start-up imports, the request history
and the end-of-run report are all inside it.

- **told**: 100 jobs told ``--rpm 600`` against an emulator limiting at 600 rpm (only
  submits count). The rate allows 100 submits in 10 s; the figure is wall / 10 s
  (target <= 1.1), split into start-up (to the first submit), submitting, and the tail
  (last submit to exit: the last job's latency, the history, the report).
- **polls**: 100 jobs where polls count (``--rpm-counts-polls`` on the emulator),
  batchgen told only ``--rpm 600``: images per second from start to exit over what 3
  requests per image allow (600 / 3 per minute; target >= 0.8).
- **polls600**: 600 jobs of the same: accepted requests and 429s per 5 s, to see whether
  the run idles after the first burst.
- **worker**: the worker-bound scenario of ``bench/scenarios.py`` (16 workers, 0.25 s a
  job, 64 px), told nothing, three times, each beside the SDK pool in the same round:
  ratio to the workers' limit and CPU per image (target >= 0.98 in the median).

    python bench/short.py [--only told polls polls600 worker] [--repeat 3]

Prints each figure with the load average. Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenarios import BASE_MEAN, SMALL, Bench, Run, _pool_size, _workers_limit

RPM = 600
# Seconds a job takes on the emulator. Told --rpm: 0.22 s (--time-scale 0.01), so the last
# job adds little to the 10 s of submits and what is measured is the client's own overhead.
# Polls counted: 2.2 s (--time-scale 0.1, as in bench/scenarios.py), so jobs need polls.
TOLD_LATENCY, POLLS_LATENCY = 0.22, 2.2


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def _server(*, polls: bool) -> list[str]:
    latency = POLLS_LATENCY if polls else TOLD_LATENCY
    flags = ["--rpm", str(RPM), "--time-scale", f"{latency / BASE_MEAN:.5f}", "--workers", "64", *SMALL]
    return [*flags, "--rpm-counts-polls"] if polls else flags


def told(b: Bench) -> float:
    """100 jobs told --rpm 600: wall from the command's start over the 10 s the rate allows."""
    run = b.batchgen("told", _server(polls=False), 100, ["--rpm", str(RPM)], sample=None)
    first, last = min(run.submits), max(run.submits)
    ratio = run.duration / (100 * 60 / RPM)
    print(
        f"told: {run.completed}/100 in {run.duration:.2f} s = {ratio:.3f}x of 10 s "
        f"(start-up {first:.2f} s, submitting {last - first:.2f} s, last image {max(run.completions):.2f} s, "
        f"tail {run.duration - last:.2f} s), exit {run.exit_code}, {load()}",
        flush=True,
    )
    return ratio


def polls(b: Bench) -> float:
    """100 jobs where polls count, told only --rpm: images/s over what 3 requests/image allow."""
    run = b.batchgen("polls", _server(polls=True), 100, ["--rpm", str(RPM)], sample=0.5)
    allowed = RPM / 3 / 60  # images per second
    ratio = run.completed / run.duration / allowed
    print(
        f"polls: {run.completed}/100 in {run.duration:.2f} s = {ratio:.3f} of {allowed:.2f} img/s, "
        f"{run.api_requests} requests ({run.rate_limited} 429s), {run.polls_per_image:.2f} polls/image, "
        f"exit {run.exit_code}, {load()}",
        flush=True,
    )
    _buckets(run)
    return ratio


def polls600(b: Bench) -> float:
    """600 jobs where polls count: accepted requests per 5 s (idle after the first burst?)."""
    run = b.batchgen("polls600", _server(polls=True), 600, ["--rpm", str(RPM)], sample=0.5)
    allowed = RPM / 3 / 60
    ratio = run.completed / run.duration / allowed
    print(
        f"polls600: {run.completed}/600 in {run.duration:.2f} s = {ratio:.3f} of {allowed:.2f} img/s, "
        f"{run.api_requests} requests ({run.rate_limited} 429s), {run.polls_per_image:.2f} polls/image, "
        f"exit {run.exit_code}, {load()}",
        flush=True,
    )
    _buckets(run)
    return ratio


def _buckets(run: Run, width: float = 5.0) -> None:
    """Accepted requests (submits + polls + results) and 429s in each ``width`` s of the run."""

    def counted(s: dict[str, object]) -> tuple[int, int]:
        rejected = s["rejected"]
        assert isinstance(rejected, dict)
        return (
            int(s["submits_accepted"]) + int(s["status_polls"]) + int(s["result_fetches"]),  # type: ignore[call-overload]
            int(rejected.get("429", 0)),
        )

    rows, edge, prev = [], width, (0, 0)
    for t, s in run.samples:
        if t >= edge:
            now = counted(s)
            rows.append(f"{edge - width:.0f}-{edge:.0f}s: {now[0] - prev[0]} ok/{now[1] - prev[1]} 429")
            prev, edge = now, edge + width
    print("  per 5 s: " + ", ".join(rows), flush=True)


def worker(b: Bench, repeat: int) -> float:
    """Worker-bound, told nothing: batchgen then the SDK pool, ``repeat`` rounds; the median ratio."""
    workers = 16
    server = ["--time-scale", f"{0.25 / BASE_MEAN:.5f}", "--workers", str(workers), *SMALL]
    ratios = []
    for i in range(repeat):
        bg = b.batchgen(f"worker-{i}", server, 1280, sample=None)
        size, _ = _pool_size(bg)
        pool = b.sdk(f"pool-{i}", server, jobs=1280, threads=size, time_box=45, sample=None)
        ratio = (bg.rate() or 0) / _workers_limit(bg, workers)
        pool_ratio = (pool.rate() or 0) / _workers_limit(pool, workers)
        ratios.append(ratio)
        print(
            f"worker {i + 1}: batchgen {ratio:.3f} of the limit, {bg.cpu_ms:.1f} ms CPU/image, "
            f"peak in flight {bg.peak_in_flight}, lost {bg.lost}; SDK pool ({size}) {pool_ratio:.3f}, "
            f"{pool.cpu_ms:.1f} ms CPU/image; {load()}",
            flush=True,
        )
    median = statistics.median(ratios)
    print(f"worker: median {median:.3f} of {repeat} ({', '.join(f'{r:.3f}' for r in ratios)})", flush=True)
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=["told", "polls", "polls600", "worker"])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each figure (the median is printed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batchgen-short-") as scratch:
        bench = Bench(Path(scratch), quick=False)
        bench.warm()
        single: dict[str, Callable[[Bench], float]] = {"told": told, "polls": polls, "polls600": polls600}
        for name in args.only:
            if name == "worker":
                worker(bench, args.repeat)
                continue
            runs = 1 if name == "polls600" else args.repeat
            figures = [single[name](bench) for _ in range(runs)]
            print(f"{name}: median {statistics.median(figures):.3f} of {runs}, {load()}", flush=True)


if __name__ == "__main__":
    main()
