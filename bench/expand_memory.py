"""Memory and speed of expanding a large manifest: streamed vs held as a list.

A benchmark, not a test. Expansion is lazy (``batchgen validate`` and ``plan --jsonl``
stream it), while ``batchgen run`` holds the expanded job list so that it can check the
whole manifest before the first paid request. This measures what each costs, per job,
with tracemalloc (Python allocations, not RSS, so other processes do not disturb it):

    python bench/expand_memory.py --jobs 100000
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

from batchgen.manifest.expand import count_jobs, expand
from batchgen.manifest.load import load_manifest

MANIFEST = """\
name: bench
jobs:
  - prompt: "A {{color}} {{item}}, studio photo"
    grid:
      color: [red, blue, green, black, white, navy, olive, grey, pink, teal]
      item: [bag, mug, lamp, chair, vase, clock, shoe, hat, scarf, belt]
      seed: "1-{seeds}"
"""


def peak_bytes(path: Path, *, hold: bool) -> tuple[int, int]:
    """Jobs expanded and the peak traced bytes, streaming them or holding them in a list."""
    manifest = load_manifest(path)
    tracemalloc.start()
    n = len(list(expand(manifest))) if hold else sum(1 for _ in expand(manifest))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return n, peak


def jobs_per_second(path: Path) -> float:
    """Expansion speed, untraced (tracemalloc slows allocation-heavy code several times)."""
    manifest = load_manifest(path)
    started = time.perf_counter()
    n = sum(1 for _ in expand(manifest))
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="a multiple of 100")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(MANIFEST.format(seeds=max(1, args.jobs // 100)))
        print(f"jobs: {count_jobs(load_manifest(path)):,}")
        print(f"expansion: {jobs_per_second(path):,.0f} jobs/s (streamed, untraced)")
        n, streamed = peak_bytes(path, hold=False)
        _, held = peak_bytes(path, hold=True)
    for label, peak in (("streamed", streamed), ("held", held)):
        print(f"{label:>8}: peak {peak / 2**20:.1f} MiB = {peak / n:,.0f} bytes/job")
    print(f"holding the list costs {held / streamed:.1f} x the streamed peak")


if __name__ == "__main__":
    main()
