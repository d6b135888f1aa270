"""`batchgen status` takes the manifest's jobs the way the run did: the same job cap, the same shard."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from batchgen.cli.main import main
from batchgen.output.ledger import format_ts


def status_json(out: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["status", str(out), "--json"]) == 0
    shown: dict[str, object] = json.loads(capsys.readouterr().out)
    return shown


def test_status_applies_the_cap_the_run_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A manifest grown past the run's --max-jobs is not expanded by status, which says why."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("jobs:\n  - prompt: a lighthouse\n    seed: '1-8'\n")
    out = tmp_path / "out"
    argv = ["run", str(manifest), "--emulate", "--time-scale", "0.001", "--max-jobs", "10"]
    assert main([*argv, "--no-report", "--no-progress", "-q", "--out", str(out)]) == 0
    capsys.readouterr()
    assert status_json(out, capsys)["manifest_problem"] is None
    manifest.write_text("jobs:\n  - prompt: a lighthouse\n    seed: '1-12'\n")
    shown = status_json(out, capsys)
    assert "expands to 12 jobs, more than the limit of 10" in str(shown["manifest_problem"])
    jobs = shown["jobs"]
    assert isinstance(jobs, dict) and (jobs["completed"], jobs["total"]) == (8, None)


def test_status_of_an_older_ledger_applies_the_default_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ledger that recorded no cap gets the default one: a 10**12-job manifest is refused, not expanded."""
    manifest = tmp_path / "big.yaml"
    axes = "".join(f'      l{i}: "1-1000"\n' for i in range(3))
    manifest.write_text(f'jobs:\n  - prompt: "{{l0}} {{l1}} {{l2}}"\n    grid:\n{axes}      seed: "1-1000"\n')
    out = tmp_path / "out"
    out.mkdir()
    sha = hashlib.sha256(manifest.read_bytes()).hexdigest()
    started = {
        "event": "run_started", "key": "", "ts": format_ts(1_800_000_000.0), "manifest": str(manifest),
        "manifest_sha256": sha, "settings": {}, "version": "0",
    }  # fmt: skip
    (out / "ledger.jsonl").write_text(json.dumps(started) + "\n")
    shown = status_json(out, capsys)
    assert "expands to 1,000,000,000,000 jobs, more than the limit of 100,000" in str(
        shown["manifest_problem"]
    )


def test_status_after_a_run_from_a_relative_path_sees_no_change_until_a_source_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest with wildcards and rows run as `m.yaml` is unchanged for status; an edit to either shows."""
    (tmp_path / "wildcards").mkdir()
    (tmp_path / "wildcards/colours.txt").write_text("red\nblue\n")
    (tmp_path / "p.csv").write_text("sku\nA1\n")
    (tmp_path / "m.yaml").write_text("jobs:\n  - prompt: a __colours__ {sku}\n    rows: p.csv\n")
    monkeypatch.chdir(tmp_path)
    argv = ["run", "m.yaml", "--emulate", "--time-scale", "0.001", "--out", "out"]
    assert main([*argv, "--no-report", "--no-progress", "-q"]) == 0
    capsys.readouterr()
    shown = status_json(tmp_path / "out", capsys)
    assert (shown["manifest_changed"], shown["warnings"]) == (False, [])
    assert main(["report", "out"]) == 0
    capsys.readouterr()
    assert "changed since the run" not in (tmp_path / "out/report.html").read_text()
    (tmp_path / "wildcards/colours.txt").write_text("red\nblue\ngreen\n")
    assert status_json(tmp_path / "out", capsys)["manifest_changed"] is True
    assert main(["report", "out"]) == 0
    capsys.readouterr()
    assert "changed since the run" in (tmp_path / "out/report.html").read_text()
    (tmp_path / "wildcards/colours.txt").write_text("red\nblue\n")
    assert status_json(tmp_path / "out", capsys)["manifest_changed"] is False
    (tmp_path / "p.csv").write_text("sku\nA2\n")
    assert status_json(tmp_path / "out", capsys)["manifest_changed"] is True
