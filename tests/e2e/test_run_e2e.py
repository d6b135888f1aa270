"""`batchgen run` as a real process against a real emulator process (a real socket)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support.logs import unlogged
from tests.support.outdir import assert_all_images_decode, assert_whole_lines, keys, ledger
from tests.support.processes import (
    REPO,
    accepted_ids,
    configure,
    env,
    run_args,
    run_cli,
    stats,
    wait_for,
    write_manifest,
)

pytestmark = pytest.mark.e2e

SCALE = 0.01  # base mode: 22 s of inference becomes 0.22 s
FAST = 0.001  # 22 ms: for the part of a batch no signal has to land in


def test_demo_manifest_runs_with_emulate(tmp_path: Path) -> None:
    """The README's first command, `batchgen run manifests/demo.yaml --emulate`, makes every image, exit 0."""
    out = tmp_path / "demo"
    result = run_cli(
        [
            sys.executable,
            "-m",
            "batchgen",
            "run",
            str(REPO / "manifests" / "demo.yaml"),
            "--emulate",
            "--out",
            str(out),
        ],
        key=None,
    )
    assert result.returncode == 0, result.stderr
    assert "12/12 jobs done" in result.stdout
    images = list((out / "images").rglob("*.png"))
    assert len(images) == 12
    for path in images:
        with Image.open(path) as im:
            im.load()


def test_missing_key_is_a_usage_error(tmp_path: Path) -> None:
    """Without SEGMIND_API_KEY (and no --emulate) the run exits 2 with a clear message, nothing sent."""
    manifest = write_manifest(tmp_path, seeds=2)
    result = run_cli(run_args(manifest, tmp_path / "out", "http://127.0.0.1:9"), key=None)
    assert result.returncode == 2
    assert "SEGMIND_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigkill_mid_run_then_rerun_completes(tmp_path: Path, emulator_server: Callable[..., str]) -> None:
    """A run killed with SIGKILL mid-way and run again completes the batch; every image decodes."""
    base_url = emulator_server(time_scale=SCALE, workers=4)
    manifest = write_manifest(tmp_path, seeds=30)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        run_args(manifest, out, base_url),
        env=env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(keys(out, "completed")) >= 6)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(keys(out, "completed")) < 30
    done_before = keys(out, "completed")
    in_flight = {e["key"]: e["request_id"] for e in ledger(out) if e["event"] == "submitted"}
    in_flight = {k: rid for k, rid in in_flight.items() if k not in done_before}
    configure(base_url, time_scale=FAST)  # the rest of the batch need not be slow
    # A submit the kill cut off before the server got it is in doubt; the emulator's history
    # shows every request at once, so the rerun is told a lag of 0 and settles it at once.
    result = run_cli(run_args(manifest, out, base_url, "--history-lag", "0"))
    assert result.returncode == 0, result.stderr
    assert_all_images_decode(out, 30)
    completed = [e for e in ledger(out) if e["event"] == "completed"]
    assert len({e["key"] for e in completed}) == 30
    # Jobs in flight at the kill were polled again, and submits whose answers the kill cut
    # off were found in the request history: nothing was paid for twice.
    assert stats(base_url)["duplicate_submits"] == 0
    finished_as = {e["key"]: e["request_id"] for e in completed}
    assert all(finished_as[k] == rid for k, rid in in_flight.items())


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"]
)
def test_signal_finishes_in_flight_and_exits_130(
    tmp_path: Path, emulator_server: Callable[..., str], signum: signal.Signals
) -> None:
    """Ctrl-C / SIGTERM / SIGHUP (the terminal closed, ssh dropped) stops submitting, waits for the
    jobs in flight, leaves the ledger whole, writes summary.json, exit 130."""
    base_url = emulator_server(time_scale=SCALE, workers=3)
    manifest = write_manifest(tmp_path, seeds=24)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        run_args(manifest, out, base_url),
        env=env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(keys(out, "completed")) >= 3)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stdout
    assert "waiting up to" in stderr
    # Every job that was submitted finished: nothing was left in flight.
    assert keys(out, "submitted") == keys(out, "completed")
    assert len(keys(out, "completed")) < 24
    assert ledger(out)[-1]["event"] == "run_finished"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_code"] == 130 and summary["exit_name"] == "interrupted"
    assert summary["stopped"]["interrupted"] is True
    assert summary["jobs"]["completed"] == len(keys(out, "completed"))
    assert summary["jobs"]["not_run"] == 24 - summary["jobs"]["completed"]
    # Priced by the answers (the interrupted end reads no history), not null.
    assert summary["cost"]["usd"] == pytest.approx(0.04 * summary["jobs"]["completed"])
    assert summary["cost"]["unpriced_requests"] == 0
    configure(base_url, time_scale=FAST)  # the rest of the batch need not be slow
    result = run_cli(run_args(manifest, out, base_url))
    assert result.returncode == 0, result.stderr
    assert_all_images_decode(out, 24)
    assert stats(base_url)["duplicate_submits"] == 0


def test_sigterm_with_nothing_in_flight_stops_without_waiting_the_grace(
    tmp_path: Path, emulator_server: Callable[..., str]
) -> None:
    """SIGTERM when every job is done or waits for the history (its submit in doubt): exit 130
    at once, not after --grace; nothing sent twice, each intent left for the rerun."""
    # Half the submits are answered after 3 s, past --request-timeout 1: in doubt, and the
    # history (lagging a day) never settles them within the run.
    base_url = emulator_server(
        time_scale=FAST, workers=8, answer_delay=3.0, answer_delay_rate=0.5, history_lag=86400.0
    )
    manifest = write_manifest(tmp_path, seeds=8)
    out = tmp_path / "out"
    args = run_args(manifest, out, base_url, "--request-timeout", "1", "--grace", "60")
    proc = subprocess.Popen(
        args, env=env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: keys(out, "uncertain") and len(keys(out, "completed") | keys(out, "uncertain")) == 8)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert took < 15, f"stopped {took:.1f} s after SIGTERM with nothing in flight (grace 60 s)"
    assert "no job in flight to wait for" in stderr
    doubts = keys(out, "uncertain") - keys(out, "completed")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["jobs"]["not_known_whether_paid"] == len(doubts) > 0
    assert summary["submits_in_doubt"]["why_not_known"]
    last = {e["key"]: e["event"] for e in ledger(out) if e["key"]}
    assert all(last[key] == "uncertain" for key in doubts)
    assert stats(base_url)["duplicate_submits"] == 0


def test_second_ctrl_c_stops_at_once_and_the_rerun_resumes(
    tmp_path: Path, emulator_server: Callable[..., str]
) -> None:
    """A second Ctrl-C exits 130 without waiting; the rerun polls what was in flight, pays nothing twice."""
    # One worker: jobs queue up, so plenty are in flight when the second Ctrl-C lands.
    base_url = emulator_server(time_scale=SCALE, workers=1)
    manifest = write_manifest(tmp_path, seeds=10)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        run_args(manifest, out, base_url), env=env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for(lambda: len(keys(out, "submitted")) >= 8)
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        # The first Ctrl-C was handled (the lines before it are the start's estimate).
        assert any(b"waiting up to" in proc.stderr.readline() for _ in range(5))
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    left = keys(out, "submitted") - keys(out, "completed")
    assert left, "the second Ctrl-C should not have waited for the jobs in flight"
    result = run_cli(run_args(manifest, out, base_url))
    assert result.returncode == 0, result.stderr
    assert_all_images_decode(out, 10)
    assert stats(base_url)["duplicate_submits"] == 0


def test_invalid_key_exits_3_after_one_request(tmp_path: Path, emulator_process: Callable[..., str]) -> None:
    """A 401 stops the run at once: exit 3, the reason printed, after one single request."""
    base_url = emulator_process("--api-key", "the-right-key", "--time-scale", str(SCALE))
    manifest = write_manifest(tmp_path, seeds=30)
    result = run_cli(run_args(manifest, tmp_path / "out", base_url), key="a-wrong-key")
    assert result.returncode == 3
    assert "401" in result.stdout + result.stderr
    assert "a-wrong-key" not in result.stdout + result.stderr
    assert "a-wrong-key" not in (tmp_path / "out" / "ledger.jsonl").read_text()
    assert stats(base_url)["rejected"]["401"] == 1


def test_api_key_is_written_nowhere(tmp_path: Path, emulator_process: Callable[..., str]) -> None:
    """A successful run sends the key, yet it is in no output file, log line or ledger line."""
    key = "sk-e2e-0123456789abcdef"
    base_url = emulator_process("--api-key", key, "--time-scale", str(SCALE))
    manifest = write_manifest(tmp_path, seeds=4)
    out = tmp_path / "out"
    result = run_cli(run_args(manifest, out, base_url), key=key)
    assert result.returncode == 0, result.stderr
    assert_all_images_decode(out, 4)
    assert key not in result.stdout + result.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_no_credits_stops_submitting_and_exits_3(tmp_path: Path, emulator_server: Callable[..., str]) -> None:
    """406: no new submits, the accepted jobs still finish, exit 3."""
    base_url = emulator_server(credits=5, time_scale=SCALE)
    manifest = write_manifest(tmp_path, seeds=20)
    out = tmp_path / "out"
    result = run_cli(run_args(manifest, out, base_url))
    assert result.returncode == 3, result.stderr
    assert "406" in result.stdout
    assert len(keys(out, "completed")) == 5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_code"] == 3 and summary["stopped"]["fatal"] == "406 insufficient credits"
    assert summary["first_error"]["code"] == 406
    assert stats(base_url)["submits_accepted"] == 5


def test_blocked_prompt_fails_with_detail_and_exit_1(
    tmp_path: Path, emulator_process: Callable[..., str]
) -> None:
    """A blocked prompt is a `failed` ledger line with the detail; the others complete; exit 1."""
    base_url = emulator_process("--blocked-terms", "forbidden", "--time-scale", str(SCALE))
    manifest = write_manifest(tmp_path, seeds=3, blocked=True)
    out = tmp_path / "out"
    result = run_cli(run_args(manifest, out, base_url))
    assert result.returncode == 1, result.stderr
    failed = [e for e in ledger(out) if e["event"] == "failed"]
    assert len(failed) == 1
    assert "forbidden" in failed[0]["error"]
    assert failed[0]["retryable"] is False
    assert len(keys(out, "completed")) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_code"] == 1 and summary["exit_name"] == "jobs_failed"
    assert summary["jobs"]["failed"] == 1 and summary["jobs"]["completed"] == 3
    assert summary["first_error"] == summary["last_error"]
    assert summary["first_error"]["code"] == 422 and "forbidden" in summary["first_error"]["error"]
    assert summary["first_error"]["key"] == failed[0]["key"]


def test_second_run_on_the_same_output_is_refused(
    tmp_path: Path, emulator_server: Callable[..., str]
) -> None:
    """While one run writes to OUT, a second `batchgen run` on it exits 2 with a clear message."""
    base_url = emulator_server(time_scale=SCALE, workers=1)
    manifest = write_manifest(tmp_path, seeds=20)
    out = tmp_path / "out"
    first = subprocess.Popen(
        run_args(manifest, out, base_url),
        env=env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: bool(keys(out, "submitted")))
        second = run_cli(run_args(manifest, out, base_url))
        assert second.returncode == 2
        assert "another batchgen run" in second.stderr
    finally:
        first.kill()
        first.wait()


def status_of(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli([sys.executable, "-m", "batchgen", "status", str(out), *extra], key=None)


def test_status_while_a_run_is_going_and_after(tmp_path: Path, emulator_server: Callable[..., str]) -> None:
    """`batchgen status` reads a live run without disturbing it: running, counts adding up, then finished."""
    # The run is frozen (SIGSTOP) while status looks, so the moment it sees is one with
    # jobs done and jobs to do however slowly each `status` process starts; it holds its
    # lock and its pid all the while, as a run blocked on the network would.
    base_url = emulator_server(time_scale=SCALE, workers=2)
    manifest = write_manifest(tmp_path, seeds=16)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        run_args(manifest, out, base_url),
        env=env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(keys(out, "completed")) >= 2)
        proc.send_signal(signal.SIGSTOP)
        try:
            live = status_of(out, "--json")
            text = status_of(out)
        finally:
            proc.send_signal(signal.SIGCONT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert live.returncode == 0, live.stderr
    data = json.loads(live.stdout)
    assert data["running"] is True and data["pid"] == proc.pid
    jobs = data["jobs"]
    assert jobs["total"] == 16 and jobs["completed"] >= 2
    assert (
        jobs["completed"] + jobs["failed"] + jobs["in_flight"] + jobs["expired"] + jobs["not_started"] == 16
    )
    assert jobs["completed"] < 16, "the run finished before it was frozen: make the jobs slower"
    assert data["images_per_minute"] > 0
    assert "run in progress (pid" in text.stdout and "if this run stopped now, a rerun would" in text.stdout
    assert proc.returncode == 0, stderr  # status took no lock: the run went on undisturbed
    after = json.loads(status_of(out, "--json").stdout)
    assert after["running"] is False and after["jobs"]["completed"] == 16 and after["rerun"] == {"skip": 16}


def _file_size_limit(limit: int) -> Callable[[], None]:
    """preexec_fn: a real per-file size limit (RLIMIT_FSIZE). Python ignores SIGXFSZ, so a
    write past it fails with EFBIG, the way a full disk fails with ENOSPC."""

    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def run_limited(args: list[str], limit: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env=env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_file_size_limit(limit),
    )


def test_an_image_that_cannot_be_written_stops_the_run_with_exit_4(
    tmp_path: Path, emulator_process: Callable[..., str]
) -> None:
    """A write error on an image (EFBIG from a real file size limit; ENOSPC alike) stops the run:
    exit 4, one clear message naming the file, no traceback, no .part left, every accepted
    request in the ledger; the rerun without the limit finishes without paying twice."""
    base_url = emulator_process("--time-scale", str(SCALE), "--image-size", "1024")  # about 34 KB each
    manifest = write_manifest(tmp_path, seeds=4)
    out = tmp_path / "out"
    result = run_limited(run_args(manifest, out, base_url), 16 * 1024)
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot write {out}/images/" in result.stderr
    assert ".png.part: File too large" in result.stderr
    assert "stopped: cannot write" in result.stdout and "rerun to finish" in result.stdout
    assert not list((out / "images").glob("*.part"))
    assert_whole_lines(out)
    assert not keys(out, "failed")  # the disk's fault, not the jobs'
    recorded = {e["request_id"] for e in ledger(out) if e["event"] == "submitted"}
    assert accepted_ids(base_url) == recorded
    rerun = run_cli(run_args(manifest, out, base_url))
    assert rerun.returncode == 0, rerun.stderr
    assert_all_images_decode(out, 4)
    assert stats(base_url)["duplicate_submits"] == 0


def test_a_ledger_that_cannot_be_written_prints_the_unrecorded_request_ids(
    tmp_path: Path, emulator_process: Callable[..., str]
) -> None:
    """When the ledger itself cannot grow, the run stops with exit 4, the ledger keeps whole lines,
    and every accepted request is either in it or printed on stderr: nothing paid is lost."""
    base_url = emulator_process("--time-scale", str(SCALE), "--image-size", "32")  # images of ~0.5 KB
    manifest = write_manifest(tmp_path, seeds=12)
    out = tmp_path / "out"
    result = run_limited(run_args(manifest, out, base_url), 2500)  # room for about 5 lines
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot write the ledger {out}/ledger.jsonl: File too large" in result.stderr
    assert_whole_lines(out)
    recorded = {e["request_id"] for e in ledger(out) if e["event"] == "submitted"}
    printed = {line.split()[2] for line in unlogged(result.stderr) if line.startswith("unrecorded request ")}
    accepted = accepted_ids(base_url)
    assert printed, result.stderr  # the limit was hit after at least one more submit
    assert accepted == recorded | printed
    assert not recorded & printed
    assert f"{len(printed)} accepted requests are not in the ledger" in result.stdout
    rerun = run_cli(run_args(manifest, out, base_url))
    assert rerun.returncode == 0, rerun.stderr
    assert_all_images_decode(out, 12)
    # The unrecorded requests had their "submitting" line: the rerun finds them in the
    # request history and pays for nothing twice.
    assert stats(base_url)["duplicate_submits"] == 0
    recovered = [e for e in ledger(out) if e["event"] == "submitted" and e.get("recovered")]
    assert {e["request_id"] for e in recovered} == printed


def test_a_ledger_that_cannot_take_its_first_line_exits_4_before_any_submit(tmp_path: Path) -> None:
    """Not even run_started fits: exit 4 at once, nothing submitted, the ledger empty but whole."""
    manifest = write_manifest(tmp_path, seeds=2)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "batchgen", "run", str(manifest), "--out", str(out), "--emulate"]
    result = run_limited(args, 64)
    assert result.returncode == 4, result.stderr
    assert unlogged(result.stderr.strip())[-1] == (
        f"cannot write the ledger {out}/ledger.jsonl: File too large; nothing was submitted"
    )
    assert (out / "ledger.jsonl").read_bytes() == b""


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs (a real full disk: ENOSPC); skipped where mounting is not allowed (not root)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_cleanly_and_the_rerun_finishes(
    small_tmpfs: Path, tmp_path: Path, emulator_process: Callable[..., str]
) -> None:
    """The issue's case, on a real 1 MB tmpfs: exit 4 (not 1), no traceback, whole ledger lines,
    every accepted request in the ledger or on stderr; with room again the rerun finishes."""
    # 512 px images, about 15 KB each: some 60 fill the disk. 44 ms jobs: the disk fills
    # mid-run all the same, with jobs in flight.
    base_url = emulator_process("--time-scale", "0.002")
    manifest = write_manifest(tmp_path, seeds=100)
    out = small_tmpfs / "out"
    result = run_cli(run_args(manifest, out, base_url))
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    assert "No space left on device" in result.stderr
    assert_whole_lines(out)
    recorded = {e["request_id"] for e in ledger(out) if e["event"] == "submitted"}
    printed = {line.split()[2] for line in unlogged(result.stderr) if line.startswith("unrecorded request ")}
    assert accepted_ids(base_url) == recorded | printed
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    rerun = run_cli(run_args(manifest, out, base_url))
    assert rerun.returncode == 0, rerun.stderr
    assert_all_images_decode(out, 100)
    # Nothing that was accepted is paid again: recorded requests are polled, unrecorded
    # ones are found in the request history by their submitting lines.
    assert stats(base_url)["duplicate_submits"] == 0


def test_ctrl_c_of_a_paced_run_leaves_the_unsent_jobs_not_started(
    tmp_path: Path, emulator_process: Callable[..., str]
) -> None:
    """Told --rpm 30, interrupted after a few submits: only the submits that left have a
    `submitting` line (written once the rate slot is granted), so `batchgen status` shows the
    rest as not started, with nothing to look up in the history and nothing in doubt."""
    base_url = emulator_process("--time-scale", "0.02", "--workers", "8", "--image-size", "16")
    manifest = write_manifest(tmp_path, seeds=20)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        run_args(manifest, out, base_url, "--rpm", "30"),
        env=env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(keys(out, "submitted")) >= 3)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    accepted = stats(base_url)["submits_accepted"]
    assert len(keys(out, "submitting")) == len(keys(out, "submitted")) == accepted < 20
    status = run_cli([sys.executable, "-m", "batchgen", "status", str(out), "--json"])
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["jobs"]["not_started"] == 20 - accepted
    assert report["jobs"]["not_known_whether_paid"] == 0
    assert report["rerun"].get("reconcile", 0) == 0
