"""`batchgen run` as a real process under a low open-file limit, against a real emulator process."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
LIMIT = 64


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))  # soft and hard: nothing to raise


@pytest.mark.parametrize("concurrency", ["auto", "60"])
def test_a_run_under_ulimit_n_64_completes(
    emulator_process: Callable[..., str], tmp_path: Path, concurrency: str
) -> None:
    """ulimit -n 64 (hard too), answers taking 100 ms so connections stay open: the run keeps
    its jobs in flight under what the limit leaves and finishes every job (exit 0), where it
    used to stop with "Too many open files" (exit 4) on every rerun."""
    base_url = emulator_process("--time-scale", "0.005", "--latency", "100", "--workers", "100")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "jobs:\n  - prompt: a lighthouse\n    mode: fast\n    seeds: 60\noutput:\n  filename: '{index}.png'\n"
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchgen",
            "run",
            str(manifest),
            "--out",
            str(out),
            "--base-url",
            base_url,
            "--concurrency",
            concurrency,
            "--no-progress",
            "--no-report",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limited,
        cwd=tmp_path,
        env={**os.environ, "SEGMIND_API_KEY": "k", "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Too many open files" not in done.stderr
    assert "the open-file limit (64" in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["jobs"]["completed"] == 60
    peak = re.search(r"peak in flight (\d+)", done.stdout)
    assert peak is not None and 1 <= int(peak[1]) <= (LIMIT - 32) // 2
    assert len(list((out / "images").glob("*.png"))) == 60
