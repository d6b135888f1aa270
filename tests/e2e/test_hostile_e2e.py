"""The control loop's bounds over a real socket: an emulator process, `batchgen run` as a user runs it."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from batchgen.engine.runner import run
from batchgen.engine.settings import RunSettings
from batchgen.manifest.job import DEFAULT_MODEL, Job, job_key
from batchgen.manifest.params import validate_params
from tests.support.outdir import events, keys, ledger
from tests.support.processes import REPO, env, request_log, run_args, stats, wait_for, write_manifest

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


def one_job(prompt: str, index: int = 0) -> Job:
    """A fast-mode job of ``prompt``, seed ``index + 1``."""
    p = validate_params({"prompt": prompt, "seed": index + 1, "mode": "fast"})
    return Job(
        index=index, key=job_key(DEFAULT_MODEL, p, {}), model=DEFAULT_MODEL, params=p, filename=f"{index}.png"
    )


@pytest.mark.anyio
async def test_an_endless_image_body_is_a_bounded_job_failure(
    tmp_path: Path, emulator_server: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image that never ends is cut at the size cap, retried a bounded number of times, and fails.

    The cap is 64 MiB by default (docs/running.md: every wait has a bound); this run sets
    1 MiB, which proves the same bound without streaming 12 x 64 MiB through the socket.
    """
    assert RunSettings().max_image_bytes == 64 * MIB
    base_url = emulator_server(time_scale=0.001, image_fault="endless")
    monkeypatch.setenv("SEGMIND_API_KEY", "e2e-key")
    out = tmp_path / "out"
    summary = await run(
        [one_job("an endless sea", i) for i in range(2)],
        out_dir=out,
        base_url=base_url,
        settings=RunSettings(max_image_bytes=MIB, seed=1),
        progress=False,
    )
    assert (summary.failed, summary.exit_code) == (2, 1)
    failed = events(out, "failed")
    assert len(failed) == 2 and all(e["retryable"] for e in failed)
    assert all("more than 1,048,576 bytes" in e["error"] for e in failed), failed
    assert all(r["downloads"] <= 6 for r in request_log(base_url))
    assert not list((out / "images").glob("*"))


@pytest.mark.anyio
async def test_a_slow_image_body_hits_the_download_deadline(
    tmp_path: Path, emulator_server: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body that trickles one byte every 2 s fails its download at the deadline, not hours later."""
    base_url = emulator_server(time_scale=0.001, image_fault="slow")
    monkeypatch.setenv("SEGMIND_API_KEY", "e2e-key")
    job = one_job("a slow boat")
    started = time.monotonic()
    summary = await run(
        [job],
        out_dir=tmp_path,
        base_url=base_url,
        settings=RunSettings(download_timeout=0.5, max_attempts=2, seed=1),
        progress=False,
    )
    elapsed = time.monotonic() - started
    assert (summary.failed, summary.exit_code) == (1, 1)
    assert elapsed < 30, f"two 0.5 s download deadlines took {elapsed:.0f} s"
    (failed,) = events(tmp_path, "failed")
    assert failed["retryable"] and "0.5 s" in failed["error"]


def test_sigterm_abandons_stuck_jobs_after_the_grace(
    tmp_path: Path, emulator_server: Callable[..., str]
) -> None:
    """Jobs that never finish: SIGTERM, then `--grace 1` later the run stops, exit 130, ledger whole."""
    base_url = emulator_server(time_scale=0.001, stall_rate=1)
    manifest = write_manifest(tmp_path, seeds=4)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        run_args(manifest, out, base_url, "--grace", "1"),
        env=env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(keys(out, "submitted")) == 4)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "grace over with 4 jobs in flight" in stderr, stderr
    assert "Traceback" not in stderr
    assert took < 15, f"stopped {took:.1f} s after SIGTERM with a 1 s grace"
    assert ledger(out)[-1]["event"] == "run_finished"
    # The stuck jobs stay in the ledger as in flight: a rerun polls them, it does not pay again.
    assert not keys(out, "completed") and not keys(out, "failed")
    assert stats(base_url)["submits_accepted"] == 4
