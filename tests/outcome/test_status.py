"""`batchgen status`: a run's state read from its ledger without the lock, finished or not."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchgen.cli.main import main
from batchgen.emulator import EmulatorConfig
from batchgen.engine.runner import run
from batchgen.engine.settings import RunSettings
from batchgen.manifest.expand import expand
from batchgen.manifest.job import Job
from batchgen.manifest.load import load_manifest
from batchgen.outcome.read import read_status
from batchgen.outcome.status_text import format_status
from batchgen.output.ledger import format_ts

NOW = 1_800_000_000.0  # the wall clock the hand-written ledgers are read at


def write_manifest(tmp_path: Path, seeds: int = 8) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(
        "name: st\ndefaults:\n  mode: fast\njobs:\n  - prompt: 'A lighthouse at dawn'\n"
        f"    seed: '1-{seeds}'\noutput:\n  filename: 'img-{{seed}}'\n"
    )
    return path


def line(event: str, key: str, ts: float, **fields: Any) -> str:
    return json.dumps({"event": event, "key": key, "ts": format_ts(ts), **fields}) + "\n"


def started(manifest: Path, ts: float) -> str:
    sha = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists() else "0" * 64
    return line("run_started", "", ts, manifest=str(manifest), manifest_sha256=sha, settings={}, version="0")


def complete(out: Path, job: Job, ts: float) -> list[str]:
    """A submitted + completed pair with a real file on disk."""
    data = f"image {job.index}".encode()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "images" / job.filename).write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    return [
        line("submitted", job.key, ts - 30, request_id=f"r{job.index}", index=job.index, seed=job.seed),
        line(
            "completed", job.key, ts, request_id=f"r{job.index}", seed=job.seed,
            inference_time=20.0 + job.index, file=f"images/{job.filename}", sha256=sha, bytes=len(data),
        ),
    ]  # fmt: skip


def test_a_run_with_failures_expired_and_in_flight_jobs(tmp_path: Path) -> None:
    """Each state is counted, failures grouped by reason, and the rerun plan follows the resume rule."""
    manifest = write_manifest(tmp_path, seeds=9)
    jobs = list(expand(load_manifest(manifest)))
    out = tmp_path / "out"
    start = NOW - 7200
    lines = [started(manifest, start)]
    lines += complete(out, jobs[0], start + 60)
    lines += complete(out, jobs[1], start + 90)
    for i, (code, error, retryable) in enumerate(
        [
            (422, "prompt blocked: 'castle'", False),
            (422, "prompt blocked: 'castle'", False),
            (500, "no luck", True),
        ]
    ):
        job = jobs[2 + i]
        lines.append(line("submitted", job.key, start + 10, request_id=f"r{job.index}", index=job.index))
        lines.append(
            line("failed", job.key, start + 100 + i, request_id=f"r{job.index}", code=code, error=error,
                 retryable=retryable)
        )  # fmt: skip
    # Submitted 2 h ago and never finished: past retention. Submitted 10 min ago: in flight.
    lines.append(line("submitted", jobs[5].key, start + 20, request_id="old", index=5))
    lines.append(line("submitted", jobs[6].key, NOW - 600, request_id="recent", index=6))
    lines.append(line("submitted", jobs[7].key, start + 20, request_id="gone", index=7))
    lines.append(line("expired", jobs[7].key, start + 3700, request_id="gone"))
    # jobs[8]: never submitted. The run was killed: no run_finished.
    (out / "ledger.jsonl").write_text("".join(lines))

    status = read_status(out, now=NOW)
    assert status.running_pid is None
    data = status.to_json()
    assert data["jobs"] == {
        "total": 9, "completed": 2, "failed": 3, "in_flight": 2, "not_known_whether_paid": 0, "expired": 1,
        "not_started": 1, "removed": 0,
    }  # fmt: skip
    assert data["failures"] == [
        {"code": 422, "error": "prompt blocked: 'castle'", "retryable": False, "jobs": 2},
        {"code": 500, "error": "no luck", "retryable": True, "jobs": 1},
    ]
    assert data["rerun"] == {"skip": 2, "skip failed": 2, "retry": 1, "recover": 2, "repoll": 1, "submit": 1}
    assert data["in_flight"]["past_retention"] == 1 and data["in_flight"]["oldest_age"] == 7180.0
    assert data["last_error"]["code"] == 500 and data["last_error"]["key"] == jobs[4].key
    text = format_status(status)
    assert "ended without finishing (killed?)" in text
    assert "    2 x 422 permanent: prompt blocked: 'castle'" in text
    assert "  not started  1" in text
    assert "1 past 55m 00s: a rerun asks their requests, then the history, before paying again" in text
    assert (
        "a rerun would: skip 2 done, repoll 1 in flight, fetch 2 images not saved from their requests"
        " (result or history) before paying again, retry 1 failed,"
        " skip 2 failed permanently (--retry-failed retries them), submit 1 not started"
    ) in text


def test_a_deleted_image_is_recovered(tmp_path: Path) -> None:
    """A completed job whose file is gone counts as completed in the ledger; a rerun fetches it again."""
    manifest = write_manifest(tmp_path, seeds=1)
    (job,) = expand(load_manifest(manifest))
    out = tmp_path / "out"
    (out / "ledger.jsonl").parent.mkdir(parents=True)
    (out / "ledger.jsonl").write_text("".join([started(manifest, NOW - 100), *complete(out, job, NOW - 50)]))
    (out / "images" / job.filename).unlink()
    assert read_status(out, now=NOW).to_json()["rerun"] == {"recover": 1}


def test_without_the_manifest_not_started_is_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest that cannot be found is said so; --manifest points at it."""
    manifest = write_manifest(tmp_path, seeds=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "ledger.jsonl").write_text(started(tmp_path / "moved.yaml", NOW - 100))
    status = read_status(out, now=NOW)
    assert status.not_started is None and "moved.yaml not found (pass --manifest)" in status.warnings[0]
    assert "  not started  unknown" in format_status(status)
    assert main(["status", str(out), "--json", "--manifest", str(manifest)]) == 0
    assert json.loads(capsys.readouterr().out)["jobs"]["not_started"] == 3


def test_no_ledger_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`batchgen status` on a folder without a ledger exits 2 and says why."""
    assert main(["status", str(tmp_path)]) == 2
    assert "no ledger" in capsys.readouterr().err


def test_a_finished_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """After a whole run: everything completed, speed known, a rerun skips it all; status wrote nothing."""
    manifest = write_manifest(tmp_path, seeds=6)
    out = tmp_path / "out"
    config = EmulatorConfig(time_scale=0.001, workers=8, image_size=32)

    async def go() -> None:
        summary = await run(
            manifest, out_dir=out, emulate=config, settings=RunSettings(seed=1), progress=False
        )
        assert summary.exit_code == 0

    anyio.run(go)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "not running; last run finished" in text
    assert "  completed    6" in text and "  not started  0" in text
    assert "a rerun would: skip 6 done" in text
    assert main(["status", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["running"] is False and data["images_per_minute"] > 0 and data["manifest"] == str(manifest)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_a_live_lock_with_an_unfinished_run_is_running(tmp_path: Path) -> None:
    """The pid in OUT/.lock, alive, with no run_finished, is a run in progress (the lock is not taken)."""
    manifest = write_manifest(tmp_path, seeds=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "ledger.jsonl").write_text(started(manifest, NOW - 30) + '{"event": "subm')
    (out / ".lock").write_text(f"{os.getpid()}\n")
    status = read_status(out, now=NOW)
    assert status.running_pid == os.getpid()
    assert status.warnings == []  # the half-written line of a live run is not damage
    assert "run in progress (pid" in format_status(status)
    assert "if this run stopped now, a rerun would: submit 2 not started" in format_status(status)


def test_every_rerun_verb_has_words() -> None:
    """`batchgen status` can say every verb of the resume rule's table (none dropped from its plan)."""
    from batchgen.outcome.status_text import _RERUN_WORDS
    from batchgen.output.resume import RERUN_VERBS

    assert set(RERUN_VERBS.values()) == {verb for verb, _ in _RERUN_WORDS}


@pytest.mark.e2e
def test_an_image_that_leads_outside_the_folder_is_named(tmp_path: Path) -> None:
    """images/x as a symlink out of OUT: `batchgen status` and `batchgen report` exit 0 and name it."""
    manifest = write_manifest(tmp_path, seeds=3)
    out = tmp_path / "out"
    config = EmulatorConfig(time_scale=0.001, workers=8, image_size=32)

    async def go() -> None:
        summary = await run(
            manifest, out_dir=out, emulate=config, settings=RunSettings(seed=1, report=False), progress=False
        )
        assert summary.exit_code == 0

    anyio.run(go)
    image = out / "images" / "img-2.png"
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(image.read_bytes())  # the very bytes the ledger recorded
    image.unlink()
    image.symlink_to(elsewhere)

    def batchgen(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "batchgen", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    status = batchgen("status", str(out))
    assert status.returncode == 0, status.stderr
    assert "images/img-2.png: leads outside" in status.stdout
    assert "a rerun would: skip 2 done, resubmit 1" in status.stdout
    report = batchgen("report", str(out))
    assert report.returncode == 0, report.stderr
    assert "images/img-2.png: leads outside" in report.stderr
    assert report.stdout.strip() == str(out / "report.html")
    page = (out / "report.html").read_text()
    assert "images/img-2.png: leads outside" in page
    assert '"f":"images/img-2.png"' not in page  # not in the gallery: not the run's image
