"""Real size: CPU per image at Bria's 1024 px, batchgen beside the floor and the SDK pool.

Bria's images are about a megapixel. Each client gets a fresh ``batchgen emulator``
(``--time-scale 0.001 --workers 64 --image-size 1024``: 1024-pixel PNGs, jobs of about
22 ms, so the clients' CPU, not the server's latency, is what is measured) and makes
the same requests for the same jobs (one prompt, a seed each), downloading every image
and writing it to disk:

- **batchgen**: ``batchgen run MANIFEST --base-url URL --out DIR`` as a user runs it,
  and again with ``--no-report`` (the end-of-run report makes a thumbnail of each image,
  a decode of every pixel that the others do not do);
- **the floor**: a minimal async client (asyncio tasks over batchgen's own transport):
  submit, one status poll after the job's known latency, the result, the download, the
  file written; nothing else (no ledger, no checks, no retries, no embedding);
- **the SDK pool**: Segmind's ``segmind==1.3.0``, ``submit_async(...).wait()`` and the
  download in a pool of threads (its default 1 s poll interval).

CPU is user + system of the client's process (``os.wait4`` for batchgen's; the bench
process's own ``getrusage`` for the floor and the SDK, which run in it), per image
saved. Each client runs ``--repeat`` times, interleaved, and the median is reported;
the figure that matters is batchgen's ratio to the floor measured in the same round.

    python bench/real_size.py [--jobs 400] [--repeat 3] [--out docs] [--keep]

writes the "real-size" section of OUT/benchmarks.md and OUT/benchmarks-real-size.png.
Needs the test and bench extras. Not a test: a measurement; run it when ``uptime`` is low.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from scenarios import Bench, Run
from sections import load, machine, write_section

REPO = Path(__file__).resolve().parents[1]
SERVER = ["--time-scale", "0.001", "--workers", "64", "--image-size", "1024"]
TASKS = 16  # the floor's tasks and the SDK's threads: about batchgen's peak in flight here
TARGET = 1.5  # batchgen's CPU per image over the floor's, at most (issue 19)


@dataclass
class Round:
    """One round: every client once, against a fresh emulator each."""

    load_before: str
    cpu_ms: dict[str, float | None]  # client -> CPU ms per image
    images: dict[str, int]
    seconds: dict[str, float]
    bytes_per_image: float | None = None


def _cpu(run: Run) -> float | None:
    return run.cpu_ms if run.completed else None


def one_round(bench: Bench, jobs: int) -> Round:
    """batchgen (with and without its report), the floor and the SDK pool, once each."""
    found = Round(load_before=load(), cpu_ms={}, images={}, seconds={})
    runs = {
        "batchgen": bench.batchgen("batchgen", SERVER, jobs, sample=None),
        "batchgen --no-report": bench.batchgen(
            "batchgen --no-report", SERVER, jobs, ["--no-report"], sample=None
        ),
        "floor": bench.floor("floor", SERVER, jobs=jobs, tasks=TASKS, wait=0.03),
        "SDK pool": bench.sdk("SDK pool", SERVER, jobs=jobs, threads=TASKS, time_box=600.0, sample=None),
    }
    for label, run in runs.items():
        found.cpu_ms[label] = _cpu(run)
        found.images[label] = run.completed
        found.seconds[label] = run.duration
        if run.errors:
            print(f"  {label}: {run.errors}", flush=True)
        print(f"  {label}: {run.completed} images, {_num(found.cpu_ms[label])} ms CPU/image", flush=True)
    images = sorted(bench.root.rglob("out/images/*.png"))
    if images:
        found.bytes_per_image = statistics.fmean(p.stat().st_size for p in images[-jobs:])
    return found


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _median(rounds: list[Round], label: str) -> float | None:
    values = [r.cpu_ms[label] for r in rounds if r.cpu_ms.get(label) is not None]
    return statistics.median(v for v in values if v is not None) if values else None


def _ratios(rounds: list[Round], label: str) -> list[float]:
    """``label``'s CPU per image over the floor's, round by round (same conditions)."""
    return [
        r.cpu_ms[label] / r.cpu_ms["floor"]  # type: ignore[operator]
        for r in rounds
        if r.cpu_ms.get(label) is not None and r.cpu_ms.get("floor")
    ]


def report(rounds: list[Round], *, jobs: int, command: str, started: datetime, elapsed: float) -> str:
    labels = list(rounds[0].cpu_ms)
    size = [r.bytes_per_image for r in rounds if r.bytes_per_image]
    lines = [
        "## Real size: CPU per image at 1024 px",
        "",
        f"Each client makes the same {jobs} jobs' requests against a fresh `batchgen emulator "
        + " ".join(SERVER)
        + "` and writes every image to disk"
        + (f" (the emulator's PNGs average {statistics.fmean(size) / 1024:.0f} KiB)" if size else "")
        + ". batchgen as a user runs it, and with `--no-report`; the floor: asyncio tasks over "
        f"batchgen's transport doing only the submit, one poll, the result, the download and the "
        f"write; the SDK pool: `segmind==1.3.0` in {TASKS} threads. CPU per image saved, "
        f"user + system; the median of {len(rounds)} rounds, each round every client once, "
        "interleaved; the ratio to the floor is taken within each round.",
        "",
        f"- command: `{command}`",
        f"- date: {started:%Y-%m-%d %H:%M} UTC, {elapsed / 60:.1f} minutes",
        f"- machine: {machine()}; load average before each round: "
        + "; ".join(r.load_before for r in rounds),
        "- plot: [benchmarks-real-size.png](benchmarks-real-size.png)",
        "",
        "| client | CPU ms per image (median) | each round | / floor (median of rounds) | target |",
        "|---|---|---|---|---|",
    ]
    for label in labels:
        ratios = _ratios(rounds, label)
        ratio = statistics.median(ratios) if ratios and label != "floor" else None
        target = ""
        if label.startswith("batchgen") and ratio is not None:
            target = f"<= {TARGET}: {'met' if ratio <= TARGET else '**not met**'}"
        lines.append(
            f"| {label} | {_num(_median(rounds, label))} | "
            + ", ".join(_num(r.cpu_ms.get(label)) for r in rounds)
            + f" | {_num(ratio) if ratio is not None else ('1' if label == 'floor' else '')} | {target} |"
        )
    return "\n".join(lines) + "\n"


def plot(rounds: list[Round], path: Path) -> None:
    """CPU per image of each client, each round a point, the median a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(rounds[0].cpu_ms)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for i, label in enumerate(labels):
        values = [r.cpu_ms[label] for r in rounds if r.cpu_ms.get(label) is not None]
        if not values:
            continue
        ax.bar(i, statistics.median(v for v in values if v is not None), color="#9ecae1")
        ax.plot([i] * len(values), values, "o", color="#08519c", markersize=4)
    floor = _median(rounds, "floor")
    if floor:
        ax.axhline(floor * TARGET, color="black", linestyle="--", linewidth=0.8, label=f"{TARGET}x the floor")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("CPU ms per image")
    ax.set_title("CPU per 1024-pixel image (bars: median; points: rounds)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400, help="jobs per client run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (every client once each)")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where benchmarks.md is")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folders")
    args = parser.parse_args()
    command = shlex.join(["python", "bench/real_size.py", *sys.argv[1:]])
    started, begin = datetime.now(UTC), time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="batchgen-real-size-"))
    rounds: list[Round] = []
    try:
        for n in range(args.repeat):
            print(f"round {n + 1} (load {load()})", flush=True)
            rounds.append(one_round(Bench(scratch / f"round-{n + 1}", quick=False), args.jobs))
            (scratch / "real_size.json").write_text(json.dumps([asdict(r) for r in rounds], indent=1))
    finally:
        if args.keep:
            print(f"scratch kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    text = report(rounds, jobs=args.jobs, command=command, started=started, elapsed=time.monotonic() - begin)
    write_section(args.out / "benchmarks.md", "real-size", text)
    plot(rounds, args.out / "benchmarks-real-size.png")
    figures = json.dumps([asdict(r) for r in rounds], indent=1)
    (args.out / "benchmarks-real-size.json").write_text(figures + "\n")
    print(text)


if __name__ == "__main__":
    main()
