"""Every batchgen benchmark in one run: a served emulator, batchgen's CLI, and peers.

Each client run gets a fresh ``batchgen emulator`` process (uvicorn, its own port, the
scenario's flags). batchgen is run as a user would: ``batchgen run MANIFEST --base-url
URL --out DIR`` in its own process, the documented defaults plus only the flags the
scenario names, ``SEGMIND_API_KEY`` set to a dummy. The peers are Segmind's own SDK
(``segmind==1.3.0``): ``submit_async(...).wait()`` in a thread pool as large as
batchgen's peak in flight, and a sequential ``run`` loop, both with the SDK's defaults
and both time-boxed. Every figure is a ratio to the limit that binds or to a peer
measured in the same run, because the machine is shared and noisy.

    python bench/scenarios.py [--quick] [--only NAME ...] [--out docs]

writes OUT/benchmarks.md (the table, each scenario's details, the command, the machine)
and OUT/benchmarks.png (images done over time). Needs the test and bench extras:
``pip install -e '.[test,bench]'``. Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import re
import resource
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx

REPO = Path(__file__).resolve().parents[1]
MODEL = "bria-text-to-image"
PROMPT = "A lighthouse on a cliff at dawn"
KEY = "bench-dummy-key"  # the emulator takes any non-empty key
BASE_MEAN = 22.0  # the emulator's mean inference seconds for mode base at 40 steps
SMALL = ("--image-size", "64")  # small images: the benchmarks measure the API dance, not PNGs
FINDINGS = "<!-- Findings below are written by hand and kept when the script rewrites this file. -->"

Json = dict[str, Any]


# --- the emulator ----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Emulator:
    """A ``batchgen emulator`` process on a free port, and its ``/_emulator`` endpoints."""

    def __init__(self, flags: Sequence[str], log: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batchgen",
                "emulator",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *flags,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self._http = httpx.Client(base_url=self.url, timeout=120.0)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once ``/_emulator/stats`` answers; raise if the process died or never did."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"emulator exited with {self.proc.returncode}; see {self._log.name}")
            try:
                self.stats()
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def stats(self) -> Json:
        """``GET /_emulator/stats``."""
        body: Json = self._http.get("/_emulator/stats").raise_for_status().json()
        return body

    def requests(self) -> list[Json]:
        """``GET /_emulator/requests``: the per-request log (read once the run is over)."""
        body: list[Json] = self._http.get("/_emulator/requests").raise_for_status().json()
        return body

    def configure(self, **changes: Any) -> Json:
        """``POST /_emulator/config``."""
        body: Json = self._http.post("/_emulator/config", json=changes).raise_for_status().json()
        return body

    def close(self) -> None:
        """Stop the process (terminate, then kill) and release its files."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._http.close()
        self._log.close()


@contextmanager
def served(flags: Sequence[str], log: Path) -> Iterator[Emulator]:
    """A fresh emulator for one client run, always stopped afterwards."""
    emulator = Emulator(flags, log)
    try:
        emulator.wait_ready()
        yield emulator
    finally:
        emulator.close()


class Sampler:
    """Reads ``/_emulator/stats`` every ``interval`` seconds in a thread.

    ``on_sample(emulator, t, stats)`` runs on each sample (``t``: seconds since ``t0``),
    e.g. to change the emulator's settings mid-run.
    """

    def __init__(
        self,
        emulator: Emulator,
        t0: float,
        *,
        interval: float,
        on_sample: Callable[[Emulator, float, Json], None] | None = None,
    ) -> None:
        self.samples: list[tuple[float, Json]] = []
        self._emulator = emulator
        self._t0 = t0
        self._interval = interval
        self._on_sample = on_sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                stats = self._emulator.stats()
            except httpx.HTTPError:
                stats = None
            if stats is not None:
                t = time.monotonic() - self._t0
                self.samples.append((t, stats))
                if self._on_sample is not None:
                    self._on_sample(self._emulator, t, stats)
            self._stop.wait(self._interval)


# --- one client run --------------------------------------------------------------------


@dataclass
class Run:
    """One client's run against its own fresh emulator; times in seconds from its start."""

    label: str
    completions: list[float]  # when each image was saved
    duration: float
    stats: Json  # the emulator's counters at the end
    records: list[Json]  # the emulator's request log
    samples: list[tuple[float, Json]]
    clock0: float  # the emulator's clock at this run's t = 0
    submits: list[float] = field(default_factory=list)  # when each submit was accepted (batchgen)
    attempted: int = 0  # jobs the client started
    refused: int = 0  # jobs whose submit was refused (not paid for)
    errors: dict[str, int] = field(default_factory=dict)
    peak_in_flight: int | None = None
    cpu: float | None = None  # CPU seconds of the client
    rss_mib: float | None = None
    exit_code: int | None = None
    summary: Json = field(default_factory=dict)

    @property
    def completed(self) -> int:
        return len(self.completions)

    @property
    def lost(self) -> int:
        """Requests the server accepted (paid for) that never became a saved image."""
        return max(0, int(self.stats["submits_accepted"]) - self.completed)

    @property
    def rate_limited(self) -> int:
        return int(self.stats["rejected"].get("429", 0))

    @property
    def api_requests(self) -> int:
        """API requests that reached the server: accepted ones plus 429s."""
        s = self.stats
        return int(s["submits_accepted"] + s["status_polls"] + s["result_fetches"]) + self.rate_limited

    @property
    def cpu_ms(self) -> float | None:
        """Client CPU milliseconds per image saved."""
        return None if self.cpu is None else 1000 * self.cpu / max(1, self.completed)

    @property
    def polls_per_image(self) -> float:
        return float(self.stats["status_polls"]) / max(1, self.completed)

    def rate(self, *, after: float = 0.0) -> float | None:
        """Steady images per second (see :func:`steady_rate`); with fewer than 10 images (a
        slow sequential loop) simply images over the time after ``after``."""
        if self.completed < 10:
            span = self.duration - after
            done = sum(1 for t in self.completions if t > after)
            return done / span if span > 0 and done else None
        return steady_rate(self.completions, after=after)

    def mean_service(self) -> float:
        """Mean server inference time of the finished requests."""
        return statistics.fmean(r["inference_time"] for r in self.records if r["inference_time"] is not None)

    def busy(self, workers: int) -> float:
        """The share of the server's worker time spent on this run's jobs, from the first
        job's start to the last one's end."""
        done = [r for r in self.records if r["end"] is not None]
        span = float(max(r["end"] for r in done)) - float(min(r["start"] for r in done))
        used = float(sum(r["inference_time"] for r in done))
        return used / (workers * span)

    def at(self, clock: float) -> float:
        """An emulator clock reading on this run's timeline."""
        return clock - self.clock0

    def detection(self) -> list[tuple[Json, float]]:
        """(record, detection delay / latency) per request, in order of server completion:
        the delay from the server finishing to a client being told so, over the request's
        submit-to-done time on the server."""
        done = [r for r in self.records if r["first_completed_at"] is not None and r["end"] is not None]
        done.sort(key=lambda r: r["end"])
        return [
            (r, (r["first_completed_at"] - r["end"]) / max(1e-9, r["end"] - r["submitted"])) for r in done
        ]

    def counted_per_minute(self, start: float, end: float) -> float | None:
        """Accepted submits + polls + result fetches per minute between two times (from samples)."""

        def counted(s: Json) -> float:
            return float(s["submits_accepted"] + s["status_polls"] + s["result_fetches"])

        inside = [(t, counted(s)) for t, s in self.samples if start <= t <= end]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] <= 0:
            return None
        (t1, c1), (t2, c2) = inside[0], inside[-1]
        return (c2 - c1) / (t2 - t1) * 60.0


def steady_rate(
    times: Sequence[float], *, after: float = 0.0, low: float = 0.1, high: float = 0.9
) -> float | None:
    """Events per second between the ``low`` and ``high`` quantiles of ``times`` (and not
    before ``after``): the steady state, without the ramp-up and the tail."""
    ordered = sorted(times)
    n = len(ordered)
    if n < 10:
        return None
    start = max(ordered[int(low * n)], after)
    end = ordered[int(high * n) - 1]
    if end <= start:
        return None
    inside = sum(1 for t in ordered if start < t <= end)
    return inside / (end - start)


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def write_manifest(path: Path, jobs: int) -> Path:
    """A manifest of ``jobs`` base-mode jobs: one prompt, a seed grid."""
    path.write_text(
        "name: bench\n"
        "defaults:\n"
        "  mode: base\n"
        "jobs:\n"
        f'  - prompt: "{PROMPT}"\n'
        "    grid:\n"
        f'      seed: "1-{jobs}"\n'
        "output:\n"
        '  filename: "{index:05d}.png"\n'
    )
    return path


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def _read_ledger(path: Path) -> list[Json]:
    import json

    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _save(workdir: Path, run: Run) -> None:
    """Everything measured, as ``run.json`` beside the run's logs (kept with ``--keep``)."""
    import dataclasses
    import json

    (workdir / "run.json").write_text(json.dumps(dataclasses.asdict(run)))


class Bench:
    """Runs clients, each against a fresh emulator, under one scratch directory."""

    def __init__(self, root: Path, *, quick: bool) -> None:
        self.root = root
        self.quick = quick
        self._seq = itertools.count(1)

    def warm(self) -> None:
        """Compile batchgen's bytecode into this bench's cache once, as installing it would,
        so that no measured run pays for it."""
        import batchgen

        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(self.root / "pycache")
        package = str(Path(batchgen.__file__).parent)
        subprocess.run([sys.executable, "-m", "compileall", "-q", package], env=env, check=True)

    def size(self, full: float, quick: float) -> Any:
        """A job count or a time box: the full value, or the smaller one with ``--quick``."""
        return quick if self.quick else full

    def _dir(self, label: str) -> Path:
        path = self.root / f"{next(self._seq):02d}-{re.sub('[^A-Za-z0-9]+', '-', label).strip('-')}"
        path.mkdir(parents=True)
        return path

    @contextmanager
    def _observed(
        self,
        label: str,
        server: Sequence[str],
        *,
        sample: float | None,
        on_sample: Callable[[Emulator, float, Json], None] | None,
    ) -> Iterator[tuple[Path, Emulator, float, float, list[Sampler]]]:
        """A fresh emulator and this run's t0 and emulator clock at t0; samples if asked."""
        workdir = self._dir(label)
        with served(server, workdir / "emulator.log") as emulator:
            before = time.monotonic()
            clock = float(emulator.stats()["clock"])
            t0 = time.monotonic()
            clock0 = clock + (t0 - before) / 2  # the clock was read half-way through the request
            samplers: list[Sampler] = []
            if sample is None:
                yield workdir, emulator, t0, clock0, samplers
                return
            with Sampler(emulator, t0, interval=sample, on_sample=on_sample) as sampler:
                samplers.append(sampler)
                yield workdir, emulator, t0, clock0, samplers

    def batchgen(
        self,
        label: str,
        server: Sequence[str],
        jobs: int,
        flags: Sequence[str] = (),
        *,
        sample: float | None = 0.5,
        on_sample: Callable[[Emulator, float, Json], None] | None = None,
        timeout: float = 900.0,
    ) -> Run:
        """``batchgen run`` in its own process; its CPU and peak RSS from ``wait4``."""
        print(f"  batchgen run {' '.join(flags) or '(defaults)'}: {jobs} jobs", flush=True)
        with self._observed(label, server, sample=sample, on_sample=on_sample) as (
            workdir,
            emulator,
            t0,
            clock0,
            samplers,
        ):
            manifest = write_manifest(workdir / "bench.yaml", jobs)
            out = workdir / "out"
            env = {k: v for k, v in os.environ.items() if k not in ("SEGMIND_API_KEY", "BATCHGEN_BASE_URL")}
            env["SEGMIND_API_KEY"] = KEY
            # As an installed package is: its bytecode cached (kept out of the source tree),
            # not compiled again at every start (this machine sets PYTHONDONTWRITEBYTECODE).
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(self.root / "pycache")
            argv = [sys.executable, "-m", "batchgen", "run", str(manifest), "--base-url", emulator.url]
            argv += ["--out", str(out), *flags]
            wall0 = time.time() - (time.monotonic() - t0)
            with (workdir / "run.log").open("wb") as log:
                proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
                watchdog = threading.Timer(timeout, proc.kill)
                watchdog.start()
                try:
                    # wait4: this one process's CPU time and peak RSS (not the emulator's).
                    _, status, usage = os.wait4(proc.pid, 0)
                finally:
                    watchdog.cancel()
                    if proc.returncode is None and proc.poll() is None:
                        proc.kill()
            proc.returncode = os.waitstatus_to_exitcode(status)
            duration = time.monotonic() - t0
            ledger = _read_ledger(out / "ledger.jsonl")
            summary = next((e for e in reversed(ledger) if e["event"] == "run_finished"), {})
            run = Run(
                label=label,
                completions=[_epoch(e["ts"]) - wall0 for e in ledger if e["event"] == "completed"],
                submits=[_epoch(e["ts"]) - wall0 for e in ledger if e["event"] == "submitted"],
                duration=duration,
                stats=emulator.stats(),
                records=emulator.requests(),
                samples=samplers[0].samples if samplers else [],
                clock0=clock0,
                attempted=jobs,
                peak_in_flight=summary.get("peak_in_flight"),
                cpu=usage.ru_utime + usage.ru_stime,
                rss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
                exit_code=proc.returncode,
                summary=summary,
            )
        _save(workdir, run)
        if run.exit_code != 0:
            print(f"  batchgen exited {run.exit_code}; see {workdir / 'run.log'}", flush=True)
        return run

    def sdk(
        self,
        label: str,
        server: Sequence[str],
        *,
        jobs: int,
        threads: int,
        time_box: float,
        sample: float | None = 0.5,
    ) -> Run:
        """Segmind's SDK: ``threads`` workers, each ``submit_async(...).wait()`` then a download
        of the output URL, until ``jobs`` were started or ``time_box`` seconds passed.

        With one thread this is the sequential ``segmind.run`` loop (``run`` is exactly
        ``submit_async(...).wait()``; calling the two halves tells a refused submit from a
        job lost after it was accepted). A pool of workers pulling from one job counter
        behaves like ``ThreadPoolExecutor(threads).map`` over the jobs, minus the queue.
        """
        from segmind import SegmindClient  # type: ignore[import-untyped]
        from segmind.exceptions import SegmindError  # type: ignore[import-untyped]

        kind = "sequential segmind.run" if threads == 1 else f"SDK pool of {threads}"
        print(f"  {kind}: up to {jobs} jobs, {time_box:g} s", flush=True)
        with self._observed(label, server, sample=sample, on_sample=None) as (
            workdir,
            emulator,
            t0,
            clock0,
            samplers,
        ):
            client = SegmindClient(api_key=KEY, base_url=f"{emulator.url}/v1")
            images = httpx.Client(timeout=30.0)  # the image URL is a CDN link: any HTTP client
            lock = threading.Lock()
            seeds = iter(range(1, jobs + 1))
            deadline = t0 + time_box
            completions: list[float] = []
            errors: dict[str, int] = {}
            refused = attempted = 0

            def take() -> int | None:
                nonlocal attempted
                with lock:
                    if time.monotonic() >= deadline:
                        return None
                    seed = next(seeds, None)
                    attempted += seed is not None
                    return seed

            def note(error: str) -> None:
                with lock:
                    errors[error] = errors.get(error, 0) + 1

            def worker() -> None:
                nonlocal refused
                while (seed := take()) is not None:
                    params = {"prompt": PROMPT, "mode": "base", "seed": seed}
                    try:
                        job = client.submit_async(MODEL, **params)
                    except (SegmindError, httpx.HTTPError) as exc:
                        with lock:
                            refused += 1
                        note(f"submit {getattr(exc, 'status', None) or type(exc).__name__}")
                        continue
                    try:
                        body = job.wait()
                        data = images.get(body["output"]).raise_for_status().content
                        (workdir / f"{seed:05d}.png").write_bytes(data)
                    except Exception as exc:  # a peer's loss, whatever it was
                        note(f"after submit {getattr(exc, 'status', None) or type(exc).__name__}")
                        continue
                    with lock:
                        completions.append(time.monotonic() - t0)

            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            with ThreadPoolExecutor(threads) as pool:
                for future in [pool.submit(worker) for _ in range(threads)]:
                    future.result()
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            duration = time.monotonic() - t0
            client._client.close()
            images.close()
            run = Run(
                label=label,
                completions=completions,
                duration=duration,
                stats=emulator.stats(),
                records=emulator.requests(),
                samples=samplers[0].samples if samplers else [],
                clock0=clock0,
                attempted=attempted,
                refused=refused,
                errors=errors,
                # This process's CPU: the SDK's threads (the sampler's is negligible).
                cpu=_cpu_between(cpu0, cpu1),
            )
        _save(workdir, run)
        return run

    def floor(self, label: str, server: Sequence[str], *, jobs: int, tasks: int, wait: float) -> Run:
        """The HTTP floor of one image: ``tasks`` asyncio tasks, each job a submit, one status
        poll ``wait`` s later (told the latency: no extra polls), the result, the download and
        a file write, through the transport batchgen builds (``batchgen/wire.py``). No ledger,
        no checks, no retries: what batchgen's four requests cost before anything else."""
        from batchgen.api import wire

        print(f"  HTTP floor: {jobs} jobs, {tasks} tasks", flush=True)
        with self._observed(label, server, sample=None, on_sample=None) as (workdir, emulator, t0, clock0, _):
            completions: list[float] = []
            errors: dict[str, int] = {}
            seeds = iter(range(1, jobs + 1))

            async def main() -> None:
                transport = wire.transport(limits=wire.LIMITS)
                headers = {"x-api-key": KEY}
                async with httpx.AsyncClient(transport=transport, headers=headers, timeout=30) as http:

                    async def worker() -> None:
                        for seed in seeds:
                            body = {"prompt": PROMPT, "mode": "base", "seed": seed}
                            submitted = (await http.post(f"{emulator.url}/v2/{MODEL}", json=body)).json()
                            for _ in range(1000):
                                await anyio.sleep(wait)
                                if (await http.get(submitted["status_url"])).json()["status"] == "COMPLETED":
                                    break
                            result = (await http.get(submitted["response_url"])).json()
                            data = (await http.get(result["output"])).content
                            await anyio.Path(workdir / f"{seed:05d}.png").write_bytes(data)
                            completions.append(time.monotonic() - t0)

                    async with anyio.create_task_group() as tg:
                        for _ in range(tasks):
                            tg.start_soon(worker)

            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            try:
                anyio.run(main)
            except Exception as exc:  # a peer's failure is a figure, not a crash
                errors[type(exc).__name__] = 1
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            run = Run(
                label=label,
                completions=completions,
                duration=time.monotonic() - t0,
                stats=emulator.stats(),
                records=emulator.requests(),
                samples=[],
                clock0=clock0,
                attempted=jobs,
                errors=errors,
                cpu=_cpu_between(cpu0, cpu1),
            )
        _save(workdir, run)
        return run


def _cpu_between(before: resource.struct_rusage, after: resource.struct_rusage) -> float:
    """CPU seconds (user + system) between two ``getrusage`` readings."""
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# --- scenarios -------------------------------------------------------------------------


@dataclass
class Outcome:
    """One scenario's row of the table, its details and its curves for the plot."""

    name: str
    title: str
    server: str  # the emulator's flags
    command: str  # batchgen's flags
    limit: str
    batchgen: str
    peers: str
    target: str
    met: bool | None
    details: list[str]
    runs: list[Run]
    marks: list[tuple[float, str]] = field(default_factory=list)  # vertical lines on the plot
    panels: list[Panel] = field(default_factory=list)  # more plots beside images-over-time


@dataclass
class Panel:
    """One more plot for a scenario: points per label."""

    title: str
    xlabel: str
    ylabel: str
    series: dict[str, tuple[list[float], list[float]]]
    marks: list[tuple[float, str]] = field(default_factory=list)
    hline: tuple[float, str] | None = None
    log: bool = False


def _flags(values: Sequence[str]) -> str:
    return " ".join(values)


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _lost(run: Run) -> str:
    text = f"lost {run.lost}"
    if run.refused:
        text += f", {run.refused} refused at submit"
    return text


def _peer_errors(run: Run) -> str:
    if not run.errors:
        return "no errors"
    return ", ".join(f"{k}: {v}" for k, v in sorted(run.errors.items()))


def _workers_limit(run: Run, workers: int) -> float:
    """Images per second ``workers`` can make at this run's mean inference time."""
    return workers / run.mean_service()


def _ratio(rate: float | None, limit: float) -> float | None:
    return None if rate is None else rate / limit


def _pool_size(run: Run) -> tuple[int, str]:
    if run.peak_in_flight:
        return run.peak_in_flight, "batchgen's peak in flight"
    return 8, "8: batchgen's peak in flight unknown"


def worker_bound(b: Bench) -> Outcome:
    """Worker-bound, latency unknown to batchgen: 16 workers, 0.25 s a job."""
    workers, latency = 16, 0.25
    server = ["--time-scale", f"{latency / BASE_MEAN:.5f}", "--workers", str(workers), *SMALL]
    jobs = b.size(1280, 320)
    bg = b.batchgen("batchgen", server, jobs)
    size, why = _pool_size(bg)
    pool = b.sdk(f"SDK pool ({size})", server, jobs=jobs, threads=size, time_box=b.size(45, 15))
    seq = b.sdk("sequential run", server, jobs=jobs, threads=1, time_box=b.size(20, 10))
    limit = _workers_limit(bg, workers)
    ratio = _ratio(bg.rate(), limit)
    pool_ratio = _ratio(pool.rate(), _workers_limit(pool, workers))
    seq_ratio = _ratio(seq.rate(), _workers_limit(seq, workers))
    return Outcome(
        name="worker-bound",
        title="1. Worker-bound, latency unknown",
        server=_flags(server),
        command="(defaults)",
        limit=f"{workers} workers / {bg.mean_service():.3f} s = {limit:.1f} img/s",
        batchgen=f"**{_num(ratio)}** ({_num(bg.rate(), '.1f')} img/s), {_lost(bg)}",
        peers=f"pool ({size}): {_num(pool_ratio)}, {_lost(pool)}; sequential: {_num(seq_ratio, '.3f')}",
        target=">= 0.9, 0 lost",
        met=ratio is not None and ratio >= 0.9 and bg.lost == 0 and bg.completed == jobs,
        details=[
            f"{jobs} jobs; rates are steady state: images saved between 10 % and 90 % of the run's images.",
            f"batchgen: {bg.completed}/{jobs} images in {bg.duration:.1f} s, peak in flight "
            f"{bg.peak_in_flight}, server queue peak {bg.stats['peak_queue_depth']}, "
            f"{bg.polls_per_image:.2f} polls/image, CPU {_num(bg.cpu_ms, '.1f')} ms/image "
            f"({100 * (bg.cpu or 0) / bg.duration:.0f} % of a core); the server's workers were busy "
            f"{bg.busy(workers):.0%} of the time (the SDK pool's: {pool.busy(workers):.0%}).",
            f"SDK pool: {size} threads ({why}), {pool.completed} images in {pool.duration:.1f} s, "
            f"{pool.polls_per_image:.2f} polls/image; {_peer_errors(pool)}.",
            f"sequential `run`: {seq.completed} images in {seq.duration:.1f} s "
            f"({_num(seq.rate(), '.2f')} img/s); {_peer_errors(seq)}.",
        ],
        runs=[bg, pool, seq],
    )


def rpm_bound(b: Bench) -> Outcome:
    """Rpm-bound, told only ``--rpm``: 600 submits a minute, 2.2 s a job, 64 workers."""
    rpm = 600
    server = ["--rpm", str(rpm), "--time-scale", "0.1", "--workers", "64", *SMALL]
    flags = ["--rpm", str(rpm)]
    jobs = b.size(1000, 200)
    warmup = b.size(60.0, 0.0)
    bg = b.batchgen("batchgen", server, jobs, flags)
    size, why = _pool_size(bg)
    pool = b.sdk(f"SDK pool ({size})", server, jobs=100 * jobs, threads=size, time_box=b.size(90, 20))
    seq = b.sdk("sequential run", server, jobs=jobs, threads=1, time_box=b.size(45, 10))

    def per_minute(run: Run, *, after: float = warmup) -> float | None:
        rate = run.rate(after=after)
        return None if rate is None else 60 * rate

    ratio = _ratio(per_minute(bg), rpm)
    share = bg.rate_limited / max(1, bg.api_requests)
    window = "after the first minute" if warmup else "(quick: no warm-up minute)"
    return Outcome(
        name="rpm-bound",
        title="2. Rpm-bound, told only --rpm",
        server=_flags(server),
        command=_flags(flags),
        limit=f"{rpm} submits/min",
        batchgen=f"**{_num(ratio)}** ({_num(per_minute(bg), '.0f')}/min), 429s {share:.1%} of requests, "
        f"{_lost(bg)}",
        peers=f"pool ({size}): {_num(_ratio(per_minute(pool), rpm))}, 429s {pool.rate_limited}, "
        f"{_lost(pool)}; sequential: {_num(_ratio(per_minute(seq, after=0.0), rpm), '.3f')}",
        target=">= 0.9, 0 lost",
        met=ratio is not None and ratio >= 0.9 and bg.lost == 0 and bg.completed == jobs,
        details=[
            f"{jobs} jobs; images/min {window}, between 10 % and 90 % of the images saved.",
            f"batchgen: {bg.completed}/{jobs} images in {bg.duration:.1f} s, {bg.rate_limited} 429s "
            f"of {bg.api_requests} requests, {bg.polls_per_image:.2f} polls/image, peak in flight "
            f"{bg.peak_in_flight}.",
            f"SDK pool: {size} threads ({why}), {pool.attempted} jobs started in {b.size(90, 20)} s, "
            f"{pool.completed} images, {pool.rate_limited} 429s; {_peer_errors(pool)}. The SDK does "
            "not retry a 429: each refused submit is a job the caller must redo.",
            f"sequential `run`: {seq.completed} images in {seq.duration:.1f} s (far below the limit: its "
            f"rate over the whole time box); {_peer_errors(seq)}.",
        ],
        runs=[bg, pool, seq],
    )


def rpm_polls(b: Bench) -> Outcome:
    """Rpm-bound with every request counted: told ``--rpm-counts-polls``, and not told."""
    rpm = 300
    server = ["--rpm", str(rpm), "--rpm-counts-polls", "--time-scale", "0.1", "--workers", "64", *SMALL]
    told_flags = ["--rpm", str(rpm), "--rpm-counts-polls"]
    untold_flags = ["--rpm", str(rpm)]
    jobs = b.size(150, 60)
    warmup = b.size(60.0, 0.0)
    told = b.batchgen("batchgen, told", server, jobs, told_flags)
    untold = b.batchgen("batchgen, --rpm only", server, jobs, untold_flags)

    def figures(run: Run) -> tuple[float | None, float, str]:
        end = max(run.submits) if run.submits else run.duration
        per_minute = run.counted_per_minute(warmup, end)
        ratio = _ratio(per_minute, rpm)
        images = run.rate(after=warmup)
        share = run.rate_limited / max(1, run.api_requests)
        later = [r["status_polls"] for r in run.records if run.at(r["submitted"]) >= warmup]
        polls = statistics.fmean(later) if later else math.nan
        text = (
            f"**{_num(ratio)}** of rpm ({_num(per_minute, '.0f')} req/min), **{polls:.2f} polls/image** "
            f"({run.polls_per_image:.2f} over the whole run), "
            f"{_num(None if images is None else 60 * images, '.0f')} img/min, 429s {share:.1%}, {_lost(run)}"
        )
        return ratio, polls, text

    told_ratio, told_polls, told_text = figures(told)
    untold_ratio, untold_polls, untold_text = figures(untold)
    met = all(
        r is not None and r >= 0.9 and polls <= 1.5 and run.lost == 0 and run.completed == jobs
        for r, polls, run in ((told_ratio, told_polls, told), (untold_ratio, untold_polls, untold))
    )
    window = "after the first minute, until the last submit" if warmup else "(quick: no warm-up minute)"
    return Outcome(
        name="rpm-polls",
        title="3. Rpm-bound, polls counted",
        server=_flags(server),
        command=f"told: {_flags(told_flags)}; not told: {_flags(untold_flags)}",
        limit=f"{rpm} requests/min (submit + polls + result: at best {rpm / 3:.0f} img/min)",
        batchgen=f"told: {told_text}; not told: {untold_text}",
        peers="-",
        target=">= 0.9, <= 1.5 polls/image",
        met=met,
        details=[
            f"{jobs} jobs per run; accepted requests (submits, polls, result fetches) per minute {window} "
            "(from `/_emulator/stats` sampled every 0.5 s); polls/image of the jobs submitted from then on "
            "(request log); images/min between 10 % and 90 % of the images, after the first minute.",
            f"told: {told.completed}/{jobs} images in {told.duration:.1f} s, {told.rate_limited} 429s of "
            f"{told.api_requests} requests, peak in flight {told.peak_in_flight}.",
            f"not told: {untold.completed}/{jobs} images in {untold.duration:.1f} s, {untold.rate_limited} "
            f"429s of {untold.api_requests} requests, peak in flight {untold.peak_in_flight}, "
            f"learned rpm {untold.summary.get('learned_rpm')}, polls counted "
            f"{untold.summary.get('polls_counted')}.",
        ],
        runs=[told, untold],
        panels=[
            Panel(
                "3. accepted requests per minute (last 60 s)",
                "seconds since start",
                "requests/min",
                {run.label: _per_minute_series(run) for run in (told, untold)},
                hline=(rpm, f"{rpm} rpm"),
            )
        ],
    )


def _per_minute_series(run: Run, window: float = 60.0) -> tuple[list[float], list[float]]:
    """Accepted submits + polls + result fetches over the last ``window`` s, per minute."""
    xs: list[float] = []
    ys: list[float] = []
    for t, _ in run.samples:
        if t < 5.0:
            continue
        value = run.counted_per_minute(max(0.0, t - window), t)
        if value is not None:
            xs.append(t)
            ys.append(value)
    return xs, ys


def _detection_text(run: Run) -> tuple[float, float, str]:
    fractions = [f for _, f in run.detection()]
    median, p90 = statistics.median(fractions), quantile(fractions, 0.9)
    return (
        median,
        p90,
        f"delay/latency median {median:.1%}, p90 {p90:.1%}, {run.polls_per_image:.2f} polls/image",
    )


def realistic(b: Bench) -> Outcome:
    """Segmind's latency (base ~22 s) scaled down 20x: poll cadence and detection delay."""
    workers = 16
    server = ["--time-scale", "0.05", "--workers", str(workers), *SMALL]
    jobs = b.size(300, 100)
    bg = b.batchgen("batchgen", server, jobs)
    size, why = _pool_size(bg)
    pool = b.sdk(f"SDK pool ({size})", server, jobs=jobs, threads=size, time_box=b.size(30, 10))
    seq = b.sdk("sequential run", server, jobs=jobs, threads=1, time_box=b.size(20, 8))
    median, p90, text = _detection_text(bg)
    _, _, pool_text = _detection_text(pool)
    _, _, seq_text = _detection_text(seq)
    ratio = _ratio(bg.rate(), _workers_limit(bg, workers))
    return Outcome(
        name="realistic",
        title="4. Realistic latency, scaled 1/20",
        server=_flags(server),
        command="(defaults)",
        limit=f"{_workers_limit(bg, workers):.1f} img/s ({workers} workers); detection within ~10 %",
        batchgen=f"{text}; **{_num(ratio)}** of the worker limit, {_lost(bg)}",
        peers=f"pool ({size}): {pool_text}; sequential: {seq_text}",
        target="median delay <= 10 % of latency, >= 0.9",
        met=median <= 0.10 and ratio is not None and ratio >= 0.9 and bg.lost == 0,
        details=[
            "The emulator's default latency (base: 22 s mean, +-25 %) at `--time-scale 0.05`: a "
            f"job takes {bg.mean_service():.2f} s on a worker here, 20 times less than on Segmind, and "
            "every poll interval scales with it.",
            "Detection delay: from the server finishing a job (`end` in the request log) to the first "
            "answer that told a client it was done (`first_completed_at`), over the job's "
            "submit-to-done time on the server (its latency, queue included).",
            f"batchgen: {bg.completed}/{jobs} images in {bg.duration:.1f} s, peak in flight "
            f"{bg.peak_in_flight}, server queue peak {bg.stats['peak_queue_depth']}, workers busy "
            f"{bg.busy(workers):.0%}; p90 delay {p90:.1%}.",
            f"SDK pool: {size} threads ({why}); the SDK polls every 1 s whatever the latency.",
        ],
        runs=[bg, pool, seq],
        panels=[
            Panel(
                "4. per job: detection delay / latency",
                "server finished at (s)",
                "delay / latency",
                {
                    run.label: (
                        [run.at(r["end"]) for r, _ in run.detection()],
                        [f for _, f in run.detection()],
                    )
                    for run in (bg, pool, seq)
                },
                hline=(0.1, "10 %"),
                log=True,
            )
        ],
    )


def latency_shift(b: Bench) -> Outcome:
    """The latency goes 4x up, then back down, mid-run (``POST /_emulator/config``)."""
    rpm, scale = 600, 0.05
    server = ["--rpm", str(rpm), "--time-scale", str(scale), "--workers", "64", *SMALL]
    flags = ["--rpm", str(rpm)]
    jobs = b.size(450, 300)
    plan = [(jobs // 3, scale * 4), (2 * jobs // 3, scale)]  # (after this many submits, time scale)
    changes: list[tuple[float, float]] = []  # (emulator clock, new time scale)

    def shift(emulator: Emulator, t: float, stats: Json) -> None:
        if len(changes) < len(plan) and stats["submits_accepted"] >= plan[len(changes)][0]:
            new = plan[len(changes)][1]
            emulator.configure(time_scale=new)
            changes.append((float(emulator.stats()["clock"]), new))

    bg = b.batchgen("batchgen", server, jobs, flags, sample=0.05, on_sample=shift)
    bounds = [c for c, _ in changes]
    phases: list[list[tuple[Json, float]]] = [[] for _ in range(len(bounds) + 1)]
    for record, fraction in bg.detection():
        phases[sum(1 for c in bounds if record["submitted"] >= c)].append((record, fraction))
    steady = phases[0][len(phases[0]) // 3 :]  # the first phase, once batchgen has learned it
    steady_polls = statistics.fmean(r["status_polls"] for r, _ in steady)
    estimates = replay_estimates(bg.records, bounds)
    rows, notes = [], []
    adapted_all = True
    late_steady, busy_steady = _misbehaving(steady, steady_polls)
    for items, (_, new), estimate in zip(phases[1:], changes, estimates, strict=True):
        direction = "up 4x" if new > scale else "down 4x"
        ends = sorted(r["end"] for r, _ in items)
        after = [item for item in items if len(ends) >= 10 and item[0]["submitted"] >= ends[9]]
        late, busy = _misbehaving(after, steady_polls)
        late_all, busy_all = _misbehaving(items, steady_polls)
        adapted_all &= estimate is not None and estimate <= 10 and late <= 0.05 and busy <= 0.05
        rows.append(
            f"latency {direction}: estimate right again after **{_num(estimate, 'd')}** completions; "
            f"jobs submitted after the 10th: {late:.0%} detected late, {busy:.0%} over-polled"
        )
        by_order = sorted(items, key=lambda item: item[0]["end"])
        notes.append(
            f"latency {direction}: of all {len(items)} jobs of the new latency, {late_all:.0%} detected "
            f"late and {busy_all:.0%} over-polled; of the {len(after)} submitted after the 10th finished, "
            f"{late:.0%} and {busy:.0%}. Jobs in order of completion: 1-10 {_describe(by_order[:10])}; "
            f"11-30 {_describe(by_order[10:30])}; the rest {_describe(by_order[30:])}."
        )
    rate = bg.rate()
    ratio = None if rate is None else 60 * rate / rpm
    marks = [(bg.at(c), f"x{new / scale:g}") for c, new in changes]
    done = [(bg.at(r["submitted"]), f, float(r["status_polls"])) for items in phases for r, f in items]
    return Outcome(
        name="latency-shift",
        title="5. Latency 4x up, then down",
        server=_flags(server) + f"; then time_scale {scale * 4:g}, then {scale:g}",
        command=_flags(flags),
        limit="re-adapted within 10 completions",
        batchgen="; ".join(rows) + f"; {_num(ratio)} of rpm, {_lost(bg)}",
        peers="-",
        target="<= 10 completions",
        met=adapted_all and bg.lost == 0,
        details=[
            f"{jobs} jobs at {rpm} rpm (told), 64 workers: no queue, so a job's latency is its "
            f"inference time: {BASE_MEAN * scale:.1f} s, then {BASE_MEAN * scale * 4:.1f} s from the "
            f"{plan[0][0]}th submit, then {BASE_MEAN * scale:.1f} s again from the {plan[1][0]}th "
            '(`POST /_emulator/config {"time_scale": ...}`; a new time scale applies to later submits).',
            '"Estimate right again after k completions": batchgen\'s own '
            "`batchgen.control.latency.LatencyModel`, "
            "replayed on every completion in the order batchgen was told of them (`first_completed_at` "
            "in the request log, with the server's `inference_time`), is within 25 % of the new median "
            "latency from the k-th completion of the new latency on, until the next change.",
            '"Detected late": told done more than 50 % of its latency after it finished; "over-polled": '
            "more than twice the steady phase's mean status polls. Judged on the jobs submitted after the "
            "10th job of the new latency finished on the server (earlier ones were planned before 10 "
            "completions could be seen): met if the estimate is right within 10 completions and at most "
            "5 % of those jobs are late or over-polled.",
            f"steady phase (the last two thirds of the first phase): {_describe(steady)}; "
            f"{late_steady:.0%} detected late, {busy_steady:.0%} over-polled.",
            *notes,
        ],
        runs=[bg],
        marks=marks,
        panels=[
            Panel(
                "5. per job: detection delay / latency",
                "submitted at (s)",
                "delay / latency",
                {"batchgen": ([t for t, _, _ in done], [f for _, f, _ in done])},
                marks=marks,
                hline=(0.1, "10 %"),
                log=True,
            ),
            Panel(
                "5. per job: status polls",
                "submitted at (s)",
                "status polls",
                {"batchgen": ([t for t, _, _ in done], [p for _, _, p in done])},
                marks=marks,
            ),
        ],
    )


def replay_estimates(records: list[Json], changes: Sequence[float]) -> list[int | None]:
    """Per change: after how many completions of the new latency batchgen's latency model,
    fed every completion in the order batchgen was told of it, is within 25 % of the new
    median latency and stays there until the next change (None: never)."""
    import anyio

    from batchgen.control.latency import LatencyModel, Observation

    told = sorted(
        (r for r in records if r["first_completed_at"] is not None), key=lambda r: r["first_completed_at"]
    )

    def phase(r: Json) -> int:
        return sum(1 for c in changes if r["submitted"] >= c)

    async def replay() -> list[tuple[int, float]]:
        model = LatencyModel()  # its events need a running event loop
        trace = []
        for r in told:
            service_class = (r["mode"], r["steps_num"])
            model.observe(
                Observation(
                    service_class,
                    sent_at=r["submitted"],
                    accepted_at=r["submitted"],
                    done_by=r["first_completed_at"],
                    service=r["inference_time"],
                )
            )
            trace.append((phase(r), model.service_time(service_class) or math.nan))
        return trace

    trace = anyio.run(replay)
    found: list[int | None] = []
    for i in range(1, len(changes) + 1):
        new = [r["inference_time"] for r in told if phase(r) == i]
        if not new:
            found.append(None)
            continue
        target = statistics.median(new)
        # From the first completion of the new latency to the first of the next one.
        seen = 0
        steps: list[tuple[int, bool]] = []
        for p, estimate in trace:
            if p > i:
                break
            seen += p == i
            if seen:
                steps.append((seen, abs(estimate / target - 1) <= 0.25))
        right = None
        for k, ok in reversed(steps):
            if not ok:
                break
            right = k
        found.append(right)
    return found


def _describe(items: Sequence[tuple[Json, float]]) -> str:
    """Median detection delay (a fraction of latency) and mean status polls of some jobs."""
    if not items:
        return "n/a"
    delay = statistics.median(f for _, f in items)
    polls = statistics.fmean(r["status_polls"] for r, _ in items)
    return f"delay {delay:.0%} of latency, {polls:.1f} polls"


def _misbehaving(items: Sequence[tuple[Json, float]], steady_polls: float) -> tuple[float, float]:
    """Shares of jobs detected late (delay > 50 % of latency) and over-polled (more than
    twice the steady mean)."""
    if not items:
        return math.nan, math.nan
    late = sum(1 for _, f in items if f > 0.5) / len(items)
    busy = sum(1 for r, _ in items if r["status_polls"] > 2 * steady_polls) / len(items)
    return late, busy


def client_cost(b: Bench) -> Outcome:
    """What batchgen itself costs: CPU per image and peak RSS at 20,000 jobs."""
    server = ["--time-scale", "0.001", "--workers", "256", *SMALL]
    jobs = b.size(20_000, 2_000)
    bg = b.batchgen("batchgen", server, jobs, sample=None, timeout=1800.0)
    size, why = _pool_size(bg)
    pool = b.sdk(f"SDK pool ({size})", server, jobs=jobs, threads=size, time_box=b.size(30, 10), sample=None)
    floor = b.floor("HTTP floor", server, jobs=b.size(5_000, 2_000), tasks=size, wait=0.03)
    cpu_ms = bg.cpu_ms or 0.0
    return Outcome(
        name="client-cost",
        title="6. Client cost",
        server=_flags(server),
        command="(defaults)",
        limit="none binds: ~22 ms jobs on 256 workers; the client's CPU is the limit",
        batchgen=f"**{cpu_ms:.1f} ms CPU/image**, peak RSS {bg.rss_mib or 0:.0f} MiB, "
        f"{_num(bg.rate(), '.0f')} img/s, {_lost(bg)}",
        peers=f"pool ({size}): {_num(pool.cpu_ms, '.1f')} ms CPU/image, {_num(pool.rate(), '.0f')} img/s, "
        f"{_lost(pool)}; HTTP floor: {_num(floor.cpu_ms, '.1f')} ms CPU/image "
        f"(batchgen {_num(cpu_ms / floor.cpu_ms if floor.cpu_ms else None, '.2f')}x)",
        target="<= 3 ms CPU/image, 0 lost",
        met=cpu_ms <= 3.0 and bg.lost == 0 and bg.completed == jobs,
        details=[
            f"{jobs:,} jobs. batchgen's CPU (user + system) and peak RSS are those of its own process "
            "(`os.wait4`), start-up and manifest expansion included; the emulator runs in another process.",
            f"batchgen: {bg.completed:,}/{jobs:,} images in {bg.duration:.1f} s, "
            f"{(bg.cpu or 0):.1f} CPU s ({100 * (bg.cpu or 0) / bg.duration:.0f} % of a core), "
            f"{bg.api_requests / max(1, bg.completed):.2f} API requests/image plus one download, "
            f"peak in flight {bg.peak_in_flight}.",
            f"SDK pool: {size} threads ({why}), {pool.completed} images in {pool.duration:.1f} s, "
            f"{_lost(pool)}; {_peer_errors(pool)}; its CPU is the bench process's during the run (GIL "
            "contention of its threads included).",
            f"HTTP floor: {floor.completed:,} images in {floor.duration:.1f} s by {size} asyncio tasks, each "
            "image a submit, one status poll (told the latency), the result, the download and a file "
            "write through batchgen's own transport; nothing else (no ledger, checks or retries). "
            f"{_num(floor.cpu_ms, '.1f')} ms CPU/image: what the four HTTP requests alone cost here. "
            f"{_peer_errors(floor)}.",
        ],
        runs=[bg, pool, floor],
    )


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Bench], Outcome]


SCENARIOS = [
    Scenario("worker-bound", worker_bound),
    Scenario("rpm-bound", rpm_bound),
    Scenario("rpm-polls", rpm_polls),
    Scenario("realistic", realistic),
    Scenario("latency-shift", latency_shift),
    Scenario("client-cost", client_cost),
]


# --- the report ------------------------------------------------------------------------


def machine() -> str:
    """nproc, CPU model, Python, load: what the figures were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"nproc {cores}, CPU {model}, Python {platform.python_version()} "
        f"({platform.system()} {platform.release()}), load average at start {load}"
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def report(outcomes: Sequence[Outcome], *, command: str, started: datetime, host: str, elapsed: float) -> str:
    lines = [
        "# Benchmarks",
        "",
        "batchgen against `batchgen emulator` (uvicorn, its own process, a fresh one per client run), "
        "run as a user would: `batchgen run MANIFEST --base-url URL --out DIR` plus only the flags "
        "shown, a dummy `SEGMIND_API_KEY`. Peers: Segmind's SDK `segmind==1.3.0` with its defaults "
        "(1 s poll interval), as a thread pool of `submit_async(...).wait()` as large as batchgen's "
        "peak in flight, and as a sequential `run` loop, both time-boxed. Every image is downloaded "
        "and written to disk by every client. Figures are ratios to the limit that binds, because "
        "this machine is shared and noisy.",
        "",
        f"- command: `{command}`",
        f"- date: {started:%Y-%m-%d %H:%M} UTC, {elapsed / 60:.1f} minutes",
        f"- machine: {host}",
        "- plot: [benchmarks.png](benchmarks.png) (images saved over time, one panel per scenario)",
        "",
        "| scenario | emulator flags | `batchgen run` flags | binding limit | batchgen | peers (SDK) "
        "| target | met? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        met = "n/a" if o.met is None else ("yes" if o.met else "**no**")
        cells = [o.title, f"`{o.server}`", f"`{o.command}`", o.limit, o.batchgen, o.peers, o.target, met]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    for o in outcomes:
        lines += [f"## {o.title}", ""]
        lines += [f"- {d}" for d in o.details]
        lines.append("")
    return "\n".join(lines)


def plot(outcomes: Sequence[Outcome], path: Path) -> None:
    """Images saved over time, one panel per scenario, batchgen and peers on each; then the
    scenarios' extra panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[Panel] = []
    for o in outcomes:
        curves = {}
        for run in o.runs:
            times = sorted(run.completions)
            curves[run.label] = ([0.0, *times], [float(i) for i in range(len(times) + 1)])
        panels.append(Panel(o.title, "seconds since start", "images saved", curves, marks=o.marks))
    for o in outcomes:
        panels.extend(o.panels)
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    for i, (ax, panel) in enumerate(zip(axes.flat, panels, strict=False)):
        for label, (xs, ys) in panel.series.items():
            if i < len(outcomes):
                ax.step(xs, ys, where="post", label=label)
            else:
                ax.plot(xs, ys, marker=".", markersize=3, linestyle="none", label=label)
        for t, label in panel.marks:
            ax.axvline(t, color="grey", linestyle=":", linewidth=1)
            ax.annotate(f" {label}", (t, 1.0), xycoords=("data", "axes fraction"), va="top", color="grey")
        if panel.hline is not None:
            ax.axhline(panel.hline[0], color="black", linestyle="--", linewidth=0.8, label=panel.hline[1])
        if panel.log:
            ax.set_yscale("log")
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _kept_findings(path: Path) -> str:
    """The hand-written findings of an earlier report (everything after the marker)."""
    if not path.exists():
        return ""
    text = path.read_text()
    at = text.find(FINDINGS)
    return text[at:] if at >= 0 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer jobs and shorter time boxes (a smoke run)"
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where to write benchmarks.md/.png")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (ledgers, logs)")
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    command = shlex.join(["python", "bench/scenarios.py", *sys.argv[1:]])
    started = datetime.now(UTC)
    host = machine()
    begin = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="batchgen-bench-"))
    outcomes = []
    try:
        bench = Bench(scratch, quick=args.quick)
        bench.warm()
        for scenario in chosen:
            print(f"{scenario.name} ({time.monotonic() - begin:.0f} s)", flush=True)
            outcome = scenario.run(bench)
            print(
                f"  batchgen: {outcome.batchgen}\n  peers: {outcome.peers}\n  met: {outcome.met}", flush=True
            )
            outcomes.append(outcome)
    finally:
        if args.keep:
            print(f"scratch kept: {scratch}")
        else:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
    md = args.out / "benchmarks.md"
    findings = _kept_findings(md)
    text = report(outcomes, command=command, started=started, host=host, elapsed=time.monotonic() - begin)
    md.write_text(text + ("\n" + findings if findings else "\n" + FINDINGS + "\n"))
    plot(outcomes, args.out / "benchmarks.png")
    print(f"wrote {md} and {args.out / 'benchmarks.png'} in {(time.monotonic() - begin) / 60:.1f} min")


if __name__ == "__main__":
    main()
