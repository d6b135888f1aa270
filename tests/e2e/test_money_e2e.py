"""Never paying twice through real kills: a `batchgen run` process SIGKILLed and rerun, over a socket."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from tests.support.outdir import assert_all_images_decode, keys, ledger
from tests.support.processes import REPO, env, run_args, run_cli, stats, wait_for, write_manifest

pytestmark = pytest.mark.e2e

# Five kills at growing depths leave some 55 jobs done and the rest to the rerun: 80 jobs
# cover every kill mid-run with submits in transit (200, as before, proved nothing more).
JOBS = 80


def in_transit(out: Path) -> int:
    """Submits whose POST went out and whose answer is not in the ledger yet."""
    return len(keys(out, "submitting") - keys(out, "submitted"))


def deep_enough(out: Path, completed: int) -> bool:
    return len(keys(out, "completed")) >= completed and in_transit(out) >= 1


def kill_when(manifest: Path, out: Path, base_url: str, ready: Callable[[], bool], *extra: str) -> None:
    """Start `batchgen run`, SIGKILL it once ``ready()``."""
    proc = subprocess.Popen(
        run_args(manifest, out, base_url, "--concurrency", "16", *extra),
        env=env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: ready() or proc.poll() is not None, timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("history", [True, False], ids=["history", "no-history"])
def test_five_kills_mid_submit_then_a_rerun_pay_for_nothing_twice(
    tmp_path: Path, emulator_server: Callable[..., str], history: bool
) -> None:
    """Killed five times with submits in transit (the emulator holds each answer 0.3 s), rerun each
    time. With the request history every image is made and nothing is paid twice (the emulator's
    history shows a request at once, so the runs are told a lag of 0). Without it the submits
    that were in transit are not known whether paid: the rerun leaves them (exit 1, paying
    nothing twice) until told --resubmit-uncertain, and then says how many it sent again."""
    base_url = emulator_server(time_scale=0.002, workers=16, answer_delay=0.3, history=history)
    manifest = write_manifest(tmp_path, seeds=JOBS)
    out = tmp_path / "out"
    lag = ("--history-lag", "0")
    lost = 0
    for kill in range(5):
        # Kill at a different depth each time, always with answers on their way.
        target = len(keys(out, "completed")) + 5 + 3 * kill
        kill_when(manifest, out, base_url, partial(deep_enough, out, target), *lag)
        lost += in_transit(out)
    assert lost >= 5
    result = run_cli(run_args(manifest, out, base_url, "--concurrency", "16", *lag))
    recovered = [e for e in ledger(out) if e["event"] == "submitted" and e.get("recovered")]
    if history:
        assert result.returncode == 0, result.stderr
        assert_all_images_decode(out, JOBS)
        assert stats(base_url)["duplicate_submits"] == 0
        assert recovered
        return
    assert result.returncode == 1, result.stderr
    assert stats(base_url)["duplicate_submits"] == 0 and not recovered
    assert "request history unavailable" in result.stderr
    assert "not known whether paid" in result.stdout
    result = run_cli(run_args(manifest, out, base_url, "--concurrency", "16", "--resubmit-uncertain"))
    assert result.returncode == 0, result.stderr
    assert_all_images_decode(out, JOBS)
    assert stats(base_url)["duplicate_submits"] >= 1
    # The last rerun reports the submits it had to send again unchecked.
    assert "submits sent again unchecked" in result.stdout
