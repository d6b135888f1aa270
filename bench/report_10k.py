"""How long `batchgen report` takes for a run of 10,000 images, and how big the page is.

A benchmark, not a test. It writes a synthetic output folder: a manifest (40 seeds x 25
guidance-and-steps pairs x 10 styles = 10,000 jobs), a ledger with a ``completed`` line
per job (and a few ``failed``), and 10,000 small PNGs; then times, separately,

- the first report (thumbnails made for every image: the one-off cost),
- a second report (thumbnails already there: what every later run's end costs),

and prints the page's size. Run it on an idle machine::

    python bench/report_10k.py [--jobs 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image

from batchgen.manifest.expand import expand
from batchgen.manifest.load import load_manifest
from batchgen.outcome.read import read_status
from batchgen.output.ledger import format_ts
from batchgen.report.page import write_report

MANIFEST = """\
name: bench-report
defaults:
  mode: fast
jobs:
  - prompt: "A {{style}} teapot"
    grid:
      style: [{styles}]
      text_guidance_scale: [3, 4, 5, 6, 7]
      steps_num: [20, 30, 40, 45, 50]
      seed: "1-{seeds}"
report:
  rows: seed
  columns: text_guidance_scale
output:
  filename: "{{style}}/{{index:05d}}"
"""


def build(out: Path, jobs: int) -> Path:
    """A manifest of about ``jobs`` jobs, its ledger and images under ``out``."""
    seeds = max(1, jobs // 250)
    styles = ", ".join(f"style{i}" for i in range(10))
    manifest = out.parent / "bench.yaml"
    manifest.write_text(MANIFEST.format(styles=styles, seeds=seeds))
    sha = hashlib.sha256(manifest.read_bytes()).hexdigest()
    t0 = time.time() - 3600
    lines = [
        json.dumps(
            {"event": "run_started", "key": "", "ts": format_ts(t0), "manifest": str(manifest.resolve()),
             "manifest_sha256": sha, "settings": {}, "version": "bench"}
        )
    ]  # fmt: skip
    buffer = io.BytesIO()
    for job in expand(load_manifest(manifest)):
        ts = format_ts(t0 + job.index * 0.3)
        common = {"key": job.key, "ts": ts, "request_id": f"r{job.index}", "seed": job.seed}
        lines.append(json.dumps({"event": "submitted", **common, "index": job.index,
                                 "params": job.params.to_api(), "labels": dict(job.labels)}))  # fmt: skip
        if job.index % 97 == 5:
            lines.append(
                json.dumps({"event": "failed", **common, "code": 422, "error": "blocked", "retryable": False})
            )
            continue
        buffer.seek(0)
        buffer.truncate()
        Image.new("RGB", (96, 96), (job.index % 256, (job.index // 256) % 256, 120)).save(buffer, "PNG")
        data = buffer.getvalue()
        path = out / "images" / job.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        saved = {
            "file": f"images/{job.filename}",
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
        }
        lines.append(json.dumps({"event": "completed", **common, "inference_time": 5.0, **saved}))
    counts = {"requests": 3 * jobs, "completed": jobs, "wall_time": 3000.0, "rate_limited": 0}
    lines.append(json.dumps({"event": "run_finished", "key": "", "ts": format_ts(t0 + 3000), **counts}))
    (out / "ledger.jsonl").write_text("\n".join(lines) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="build the folder here and keep it (to open the page)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))
    out = root / "out"
    out.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        build(out, args.jobs)
        print(f"built {args.jobs:,} jobs in {time.perf_counter() - start:.1f}s")
        for label in ("first report (every thumbnail and grid made)", "second report (nothing changed)"):
            start = time.perf_counter()
            page = write_report(read_status(out, keep_jobs=True))
            print(f"{label}: {time.perf_counter() - start:.1f}s")
        grids = list((out / "grids").glob("*.png"))
        print(f"report.html: {page.stat().st_size / 2**20:.1f} MiB; {len(grids)} grid PNGs")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
