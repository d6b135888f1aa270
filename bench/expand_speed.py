"""How long a 100,000-job manifest takes to validate, to plan, and to its first submit.

A benchmark, not a test. Two manifests of ``--jobs`` jobs each: a grid (100 prompts x
seeds, a folder per colour) and a CSV of one row per job (an aspect ratio column, most
cells set). For each, in its own process as a user runs it:

- ``batchgen validate M`` and ``batchgen plan M`` (the table and the estimate of every
  job): wall time from start to exit, CPU and peak RSS (``os.wait4``);
- ``batchgen run M --base-url URL --out DIR`` against ``batchgen emulator`` (its own
  process, so its CPU and memory are not counted): the wall time from start to the
  emulator's first accepted submit (``/_emulator/stats`` read every 5 ms), and the run's
  peak RSS up to then (it is killed at once: only its start is measured).

Each figure is the median of ``--repeat`` runs; the load average is printed with them,
because the machine may be shared::

    python bench/expand_speed.py [--jobs 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
SERVER = ("--time-scale", "0.001", "--workers", "64", "--image-size", "64")
COLORS = ("red", "blue", "green", "black", "white", "navy", "olive", "grey", "pink", "teal")
ITEMS = ("bag", "mug", "lamp", "chair", "vase", "clock", "shoe", "hat", "scarf", "belt")


def write_grid(folder: Path, jobs: int) -> Path:
    """A grid: 10 colours x 10 items x ``jobs // 100`` seeds, one folder per colour."""
    path = folder / "grid.yaml"
    path.write_text(
        "name: grid\ndefaults:\n  mode: fast\n  aspect_ratio: '4:3'\njobs:\n"
        '  - prompt: "A {color} {item}, studio photo"\n'
        "    grid:\n"
        f"      color: [{', '.join(COLORS)}]\n"
        f"      item: [{', '.join(ITEMS)}]\n"
        f'      seed: "1-{max(1, jobs // 100)}"\n'
        'output:\n  filename: "{color}/{item}-{seed}.png"\n'
    )
    return path


def write_csv(folder: Path, jobs: int) -> Path:
    """A CSV of ``jobs`` products (sku, name, colour, an aspect_ratio cell on 2 rows of 3)."""
    with (folder / "rows.csv").open("w", newline="") as file:
        out = csv.writer(file)
        out.writerow(["sku", "name", "color", "material", "aspect_ratio"])
        for i in range(jobs):
            ratio = ("1:1", "4:5", "")[i % 3]
            out.writerow([f"SKU-{i:06d}", ITEMS[i % 10], COLORS[i // 10 % 10], "cotton", ratio])
    path = folder / "csv.yaml"
    path.write_text(
        "name: rows\ndefaults:\n  mode: base\n  aspect_ratio: '4:5'\njobs:\n"
        '  - prompt: "Studio packshot of a {color} {name} made of {material}"\n'
        "    rows: rows.csv\n    seed: 1234\n"
        'output:\n  filename: "{sku}.png"\n'
    )
    return path


def batchgen() -> list[str]:
    """The command a user types: the venv's ``batchgen`` script next to this Python."""
    script = Path(sys.executable).with_name("batchgen")
    return [str(script)] if script.exists() else [sys.executable, "-m", "batchgen"]


@dataclass
class Sample:
    """One command's wall time (to exit, or to the first submit), CPU seconds and peak RSS."""

    wall: float
    cpu: float
    rss_mib: float


def timed(argv: Sequence[str], cwd: Path) -> Sample:
    """Run ``argv`` to its end; its wall time, CPU and peak RSS (this process only)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}"
        )
    proc.stderr.close()
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Emulator:
    """``batchgen emulator`` in its own process on a free port."""

    def __init__(self, log: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._log = log.open("wb")
        argv = [*batchgen(), "emulator", "--host", "127.0.0.1", "--port", str(port), *SERVER]
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, timeout=30.0)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.submits()
                return
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def submits(self) -> int:
        """Submits accepted so far."""
        accepted: int = self.http.get("/_emulator/stats").raise_for_status().json()["submits_accepted"]
        return accepted

    def close(self) -> None:
        """Stop the process and release its files."""
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.http.close()
        self._log.close()


def first_submit(manifest: Path, emulator: Emulator, out: Path) -> Sample:
    """``batchgen run`` from its start to the emulator's first accepted submit; then killed."""
    before = emulator.submits()
    env = {**os.environ, "SEGMIND_API_KEY": "bench"}
    argv = [*batchgen(), "run", str(manifest), "--base-url", emulator.url, "--out", str(out), "--no-report"]
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=out.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while emulator.submits() == before:
            if proc.poll() is not None:
                raise RuntimeError(f"batchgen run exited {proc.returncode} before a submit")
            if time.perf_counter() - started > 300:
                raise RuntimeError("no submit within 300 s")
            time.sleep(0.005)
        wall = time.perf_counter() - started
    finally:
        proc.send_signal(signal.SIGKILL)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = -9
    shutil.rmtree(out, ignore_errors=True)
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def median(samples: Sequence[Sample]) -> Sample:
    """The median of each figure."""
    return Sample(
        statistics.median(s.wall for s in samples),
        statistics.median(s.cpu for s in samples),
        statistics.median(s.rss_mib for s in samples),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per manifest (a multiple of 100)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command (the median is shown)")
    args = parser.parse_args()
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"| manifest ({args.jobs:,} jobs) | command | wall s | CPU s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        emulator = Emulator(folder / "emulator.log")
        try:
            for manifest in (write_grid(folder, args.jobs), write_csv(folder, args.jobs)):
                commands: list[tuple[str, object]] = [
                    ("validate", [*batchgen(), "validate", str(manifest)]),
                    ("plan", [*batchgen(), "plan", str(manifest)]),
                    ("run: first submit", None),
                ]
                for label, argv in commands:
                    samples = []
                    for i in range(args.repeat):
                        if argv is None:
                            samples.append(first_submit(manifest, emulator, folder / f"out-{i}"))
                        else:
                            assert isinstance(argv, list)
                            samples.append(timed(argv, folder))
                    m = median(samples)
                    walls = ", ".join(f"{s.wall:.2f}" for s in samples)
                    print(
                        f"| {manifest.stem} | {label} | **{m.wall:.2f}** ({walls}) | {m.cpu:.2f} |"
                        f" {m.rss_mib:.0f} |",
                        flush=True,
                    )
        finally:
            emulator.close()
    print(f"load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
