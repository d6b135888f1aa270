"""Peak RSS of ``batchgen run`` at 20,000 jobs, with and without the end-of-run report.

A benchmark, not a test. For each case it starts a served emulator (its own process, so
its memory is not counted; ``--time-scale 0.001 --workers 256 --image-size 64``, as
``bench/scenarios.py`` client-cost), runs ``batchgen run MANIFEST --base-url URL --out
DIR`` on a fresh folder under ``/usr/bin/time -v`` and prints the run's peak RSS and wall
time; then, on the folder the report run left, ``batchgen report OUT`` (the same page,
read from the folder). Run it on an idle machine::

    python bench/report_memory.py [--jobs 20000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SERVER = ("--time-scale", "0.001", "--workers", "256", "--image-size", "64")
PROMPT = "A lighthouse on a cliff at dawn"


def write_manifest(path: Path, jobs: int) -> Path:
    """``jobs`` base-mode jobs: one prompt, a seed grid (bench/scenarios.py's manifest)."""
    path.write_text(
        "name: bench\ndefaults:\n  mode: base\njobs:\n"
        f'  - prompt: "{PROMPT}"\n    grid:\n      seed: "1-{jobs}"\n'
        'output:\n  filename: "{index:05d}.png"\n'
    )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_emulator(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [sys.executable, "-m", "batchgen", "emulator", "--port", str(port), *SERVER]
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/_emulator/stats", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the emulator did not start: {log.read_text()}")


def measured(argv: list[str], log: Path) -> tuple[float, float, int]:
    """Run ``argv`` under /usr/bin/time -v: (peak RSS MiB, wall seconds, exit code)."""
    env = {k: v for k, v in os.environ.items() if k != "BATCHGEN_BASE_URL"}
    env["SEGMIND_API_KEY"] = "bench-dummy-key"
    start = time.perf_counter()
    with log.open("wb") as sink:
        done = subprocess.run(["/usr/bin/time", "-v", *argv], stdout=sink, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", log.read_text(errors="replace"))
    return (int(found.group(1)) / 1024 if found else float("nan")), wall, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-report-memory-"))
    manifest = write_manifest(root / "bench.yaml", args.jobs)
    try:
        for n in range(args.repeat):
            for case, extra in (("--no-report", ["--no-report"]), ("with the report", [])):
                out = root / f"out-{n}-{'report' if not extra else 'none'}"
                proc, url = start_emulator(root / "emulator.log")
                try:
                    argv = [sys.executable, "-m", "batchgen", "run", str(manifest), "--base-url", url,
                            "--out", str(out), "--no-progress"]  # fmt: skip
                    rss, wall, code = measured(argv + extra, root / "run.log")
                finally:
                    proc.terminate()
                    proc.wait()
                print(
                    f"run {case:<16} {args.jobs:,} jobs: peak RSS {rss:6.1f} MiB, {wall:5.1f} s, exit {code}"
                )
                if not extra:
                    argv = [sys.executable, "-m", "batchgen", "report", str(out)]
                    rss, wall, code = measured(argv, root / "report.log")
                    print(
                        f"batchgen report OUT afterwards: peak RSS {rss:6.1f} MiB, {wall:5.1f} s, exit {code}"
                    )
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
