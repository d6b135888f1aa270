"""Scale: 1,000 / 10,000 / 100,000 jobs through the commands a user runs, side by side.

For each size N: a fresh ``batchgen emulator`` process (its own port; ``--time-scale
0.001 --workers 256 --image-size 64 --no-answer-cost``: jobs take about 22 ms, and the
answers carry no ``metrics.cost``, so the request history prices every request, as on an
account whose answers do not), a manifest of N jobs (one prompt, a seed grid), and, each
in its own process exactly as a user types it:

1. ``batchgen plan MANIFEST`` (expansion and the estimate);
2. ``batchgen run MANIFEST --base-url URL --out OUT`` on a fresh folder;
3. the same command again: a no-op rerun of the finished batch;
4. ``batchgen status OUT``;
5. ``batchgen report OUT`` (the thumbnails exist: the run's own report made them).

For each: wall time, CPU (user + system) and peak RSS of that process (``os.wait4``),
and the request-history requests the emulator served meanwhile (its
``/_emulator/stats``); the run's cost and unpriced requests from ``summary.json``. Every
command but the run is repeated (``--repeat``) and its median reported; the run is the
expensive one and runs once per size. Figures are ratios to the run of the same size
(peak RSS, wall) and marginal KiB per job between sizes, because the machine is shared.

    python bench/scale.py [--jobs 1000 10000 100000] [--repeat 3] [--out docs] [--keep]

writes the "scale" section of OUT/benchmarks.md and OUT/benchmarks-scale.png. Needs the
bench extra (matplotlib). Not a test: a measurement; run it when ``uptime`` is low.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from scenarios import KEY, Emulator, served, write_manifest
from sections import load, machine, write_section

REPO = Path(__file__).resolve().parents[1]
SERVER = ("--time-scale", "0.001", "--workers", "256", "--image-size", "64", "--no-answer-cost")
COMMANDS = ("plan", "run", "rerun", "status", "report")


@dataclass
class Measured:
    """One command in its own process."""

    command: str
    wall: float  # seconds
    cpu: float  # seconds, user + system
    rss_mib: float  # peak resident set
    history: int  # request-history requests the emulator served while it ran
    exit_code: int


@dataclass
class Size:
    """Every command at one job count (the repeated ones: each repetition)."""

    jobs: int
    load_before: str
    measured: dict[str, list[Measured]] = field(default_factory=dict)
    cost_usd: float | None = None
    unpriced: int | None = None
    completed: int | None = None

    def median(self, command: str, name: str) -> float:
        return statistics.median(getattr(m, name) for m in self.measured[command])

    def spread(self, command: str, name: str) -> str:
        values = [getattr(m, name) for m in self.measured[command]]
        return f"{min(values):.3g}-{max(values):.3g}" if len(values) > 1 else ""


def measure(command: str, argv: list[str], log: Path, emulator: Emulator | None) -> Measured:
    """Run ``argv`` in its own process; its wall, CPU and peak RSS, and the history requests."""
    env = {k: v for k, v in os.environ.items() if k not in ("SEGMIND_API_KEY", "BATCHGEN_BASE_URL")}
    env["SEGMIND_API_KEY"] = KEY
    before = emulator.stats()["history_requests"] if emulator else 0
    start = time.monotonic()
    with log.open("ab") as sink:
        sink.write(f"$ {shlex.join(argv)}\n".encode())
        sink.flush()
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    after = emulator.stats()["history_requests"] if emulator else 0
    return Measured(
        command=command,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        rss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
        history=after - before,
        exit_code=proc.returncode,
    )


def one_size(root: Path, jobs: int, repeat: int) -> Size:
    """Every command at ``jobs`` jobs, against one fresh emulator."""
    work = root / f"{jobs}"
    work.mkdir(parents=True)
    manifest = write_manifest(work / "bench.yaml", jobs)
    out = work / "out"
    batchgen = [sys.executable, "-m", "batchgen"]
    size = Size(jobs=jobs, load_before=load())
    log = work / "commands.log"
    with served(SERVER, work / "emulator.log") as emulator:
        url = emulator.url
        argv = {
            "plan": [*batchgen, "plan", str(manifest)],
            "run": [*batchgen, "run", str(manifest), "--base-url", url, "--out", str(out), "-q"],
            "status": [*batchgen, "status", str(out)],
            "report": [*batchgen, "report", str(out)],
        }
        argv["rerun"] = argv["run"]
        for command in COMMANDS:
            times = 1 if command == "run" else repeat
            for _ in range(times):
                print(f"  {jobs:,} jobs: {command}", flush=True)
                found = measure(command, argv[command], log, emulator)
                size.measured.setdefault(command, []).append(found)
                print(
                    f"    {found.wall:.1f} s wall, {found.cpu:.1f} s CPU, {found.rss_mib:.0f} MiB, "
                    f"{found.history} history requests, exit {found.exit_code}",
                    flush=True,
                )
            if command == "run":
                summary = json.loads((out / "summary.json").read_text())
                size.cost_usd = summary["cost"]["usd"]
                size.unpriced = summary["cost"]["unpriced_requests"]
                size.completed = summary["jobs"]["completed"]
    return size


# --- the report ------------------------------------------------------------------------


def _kib_per_job(sizes: list[Size], command: str) -> list[str]:
    """Marginal peak RSS per job from each size to the next (the fixed cost of start-up left out)."""
    found = []
    for low, high in zip(sizes, sizes[1:], strict=False):
        grew = (high.median(command, "rss_mib") - low.median(command, "rss_mib")) * 1024
        found.append(f"{grew / (high.jobs - low.jobs):.2f} ({low.jobs:,} to {high.jobs:,})")
    return found


def report(sizes: list[Size], *, command: str, started: datetime, host: str, elapsed: float) -> str:
    lines = [
        "## Scale: 1,000 to 100,000 jobs",
        "",
        "Each command in its own process as a user runs it, against `batchgen emulator "
        + " ".join(SERVER)
        + "` (a fresh one per size; answers without `metrics.cost`, so the request history prices "
        "every request). Peak RSS and CPU from `os.wait4` of that process; history requests from "
        "the emulator's `/_emulator/stats`. The run once per size, every other command "
        "the median of its repetitions (range in brackets).",
        "",
        f"- command: `{command}`",
        f"- date: {started:%Y-%m-%d %H:%M} UTC, {elapsed / 60:.1f} minutes",
        f"- machine: {host}; load average before each size: "
        + "; ".join(f"{s.jobs:,}: {s.load_before}" for s in sizes),
        "- plot: [benchmarks-scale.png](benchmarks-scale.png)",
        "",
        "| jobs | command | wall s | CPU s | peak RSS MiB | history requests | wall / run | peak / run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sizes:
        run_wall, run_rss = s.median("run", "wall"), s.median("run", "rss_mib")
        for c in COMMANDS:
            wall, rss = s.median(c, "wall"), s.median(c, "rss_mib")
            spread = s.spread(c, "wall")
            bad = [m.exit_code for m in s.measured[c] if m.exit_code != 0]
            name = f"`{c}`" + (f" (exit {bad[0]})" if bad else "")
            lines.append(
                f"| {s.jobs:,} | {name} | {wall:.2f}{f' ({spread})' if spread else ''} "
                f"| {s.median(c, 'cpu'):.2f} | {rss:.0f} | {max(m.history for m in s.measured[c])} "
                f"| {'' if c == 'run' else f'{wall / run_wall:.3f}'} "
                f"| {'' if c == 'run' else f'{rss / run_rss:.2f}'} |"
            )
    lines += ["", "Marginal peak RSS per job, KiB (from one size to the next):", ""]
    lines += ["| command | KiB per job |", "|---|---|"]
    for c in COMMANDS:
        lines.append(f"| `{c}` | {'; '.join(_kib_per_job(sizes, c))} |")
    lines += ["", "Each run's outcome (`summary.json`):", ""]
    for s in sizes:
        lines.append(
            f"- {s.jobs:,} jobs: {s.completed:,} completed, cost {s.cost_usd} USD, "
            f"{s.unpriced} requests unpriced"
        )
    return "\n".join(lines) + "\n"


def plot(sizes: list[Size], path: Path) -> None:
    """Peak RSS and wall time against the job count, one line per command."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    jobs = [s.jobs for s in sizes]
    for command in COMMANDS:
        axes[0].plot(jobs, [s.median(command, "rss_mib") for s in sizes], marker="o", label=command)
        axes[1].plot(jobs, [s.median(command, "wall") for s in sizes], marker="o", label=command)
    for ax, title, unit in ((axes[0], "peak RSS", "MiB"), (axes[1], "wall time", "seconds")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("jobs")
        ax.set_ylabel(unit)
        ax.set_title(f"{title} by command", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of every command but the run")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where benchmarks.md is")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folders (ledgers, logs)")
    args = parser.parse_args()
    command = shlex.join(["python", "bench/scale.py", *sys.argv[1:]])
    started, begin = datetime.now(UTC), time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="batchgen-scale-"))
    sizes: list[Size] = []
    try:
        for jobs in sorted(args.jobs):
            print(f"{jobs:,} jobs (load {load()})", flush=True)
            sizes.append(one_size(scratch, jobs, args.repeat))
            (scratch / "scale.json").write_text(json.dumps([asdict(s) for s in sizes], indent=1))
    finally:
        if args.keep:
            print(f"scratch kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    text = report(sizes, command=command, started=started, host=machine(), elapsed=time.monotonic() - begin)
    write_section(args.out / "benchmarks.md", "scale", text)
    plot(sizes, args.out / "benchmarks-scale.png")
    (args.out / "benchmarks-scale.json").write_text(json.dumps([asdict(s) for s in sizes], indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
