"""--shard K/N: disjoint shards that together are the whole plan, stable under edits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen.cli.main import main
from batchgen.manifest.shard import Shard
from batchgen.outcome.read import read_status
from tests.support.clock import current_loop

REPO = Path(__file__).resolve().parents[2]
CATALOG = str(REPO / "manifests" / "catalog.yaml")


def _plan(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["plan", *argv, "--jsonl"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_shards_are_disjoint_and_together_the_whole_plan(capsys: pytest.CaptureFixture[str], n: int) -> None:
    """The union of shards 1..N of `plan --jsonl` is the unsharded plan, each job exactly once."""
    whole = _plan(capsys, CATALOG)
    parts = [_plan(capsys, CATALOG, "--shard", f"{k}/{n}") for k in range(1, n + 1)]
    keys = [job["key"] for part in parts for job in part]
    assert len(keys) == len(set(keys)) == len(whole)
    assert sorted(map(str, keys)) == sorted(str(job["key"]) for job in whole)
    for part in parts:  # each keeps the manifest's order, index and filename
        indices = [job["index"] for job in part]
        assert indices == sorted(indices)


def test_a_job_keeps_its_shard_when_the_manifest_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Adding jobs ahead of others moves no existing job to another shard (keys are content hashes)."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("jobs:\n  - prompt: a red fox\n    seed: '1-30'\n")
    before = {str(j["key"]): k for k in (1, 2, 3) for j in _plan(capsys, str(manifest), "--shard", f"{k}/3")}
    manifest.write_text(
        "jobs:\n  - prompt: a blue jay\n    seed: '1-9'\n  - prompt: a red fox\n    seed: '1-30'\n"
    )
    after = {str(j["key"]): k for k in (1, 2, 3) for j in _plan(capsys, str(manifest), "--shard", f"{k}/3")}
    assert before.items() <= after.items()


@pytest.mark.parametrize("text", ["0/3", "4/3", "1", "a/b", "1/0", "-1/3"])
def test_bad_shards_are_usage_errors(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    """K/N with 1 <= K <= N, else exit 2 naming it."""
    with pytest.raises(SystemExit) as caught:
        main(["validate", CATALOG, "--shard", text])
    assert caught.value.code == 2
    assert "shard" in capsys.readouterr().err


def test_shard_parse_and_folder_suffix() -> None:
    """`2/3` parses; the default folder of shard 2 of 3 ends in -shard-2-of-3."""
    shard = Shard.parse(" 2 / 3 ")
    assert (shard.index, shard.count, str(shard), shard.suffix) == (2, 3, "2/3", "-shard-2-of-3")
    assert Shard(1, 1).holds("0" * 64) and Shard(1, 1).holds("f" * 64)


def test_each_shard_runs_in_its_own_folder_and_status_counts_its_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --shard K/N` writes output/<name>-shard-K-of-N/; its status counts only that shard."""
    monkeypatch.chdir(tmp_path)
    demo = str(REPO / "manifests" / "demo.yaml")
    sizes = []
    for k in (1, 2):
        assert main(["run", demo, "--emulate", "--no-report", "--shard", f"{k}/2"]) == 0
        out = tmp_path / "output" / f"demo-shard-{k}-of-2"
        summary = json.loads((out / "summary.json").read_text())
        assert summary["shard"] == f"{k}/2" and summary["exit_code"] == 0
        status = read_status(out)
        assert status.total == summary["jobs"]["total"] == status.completed
        assert status.rerun == {"skip": status.total}
        sizes.append(status.total)
    assert sum(sizes) == 12
    capsys.readouterr()
    assert main(["validate", demo, "--shard", "1/2"]) == 0
    assert f"{sizes[0]} jobs in shard 1/2" in capsys.readouterr().out


@pytest.fixture
def anyio_backend(virtual_time: object) -> object:
    """The async test here runs on virtual time (tests/support/clock.py)."""
    return virtual_time


@pytest.mark.anyio
async def test_merged_status_of_the_shards_equals_the_status_of_one_unsharded_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`batchgen status S1 S2 S3` (shard folders) says what `status` of one whole run says:
    jobs by state, failures by reason, what a rerun would do."""
    from batchgen.emulator import EmulatorConfig
    from batchgen.engine.runner import run
    from batchgen.engine.settings import RunSettings
    from batchgen.outcome.read import merge_status

    manifest = tmp_path / "m.yaml"
    manifest.write_text("jobs:\n  - prompt: 'a {word} owl'\n    grid:\n      word: [forbidden, snowy, barn]\n"
                        "      seed: '1-8'\n")  # fmt: skip
    loop = current_loop()

    async def run_into(out: Path, shard: str | None) -> None:
        config = EmulatorConfig(blocked_terms=("forbidden",), time_scale=0.002, workers=8, clock=loop.time)
        settings = RunSettings(report=False)
        await run(manifest, out_dir=out, emulate=config, settings=settings, shard=shard, wall_clock=loop.wall)

    whole = tmp_path / "whole"
    await run_into(whole, None)
    shards = [tmp_path / f"shard-{k}" for k in (1, 2, 3)]
    for k, out in enumerate(shards, 1):
        await run_into(out, f"{k}/3")
    one = read_status(whole).to_json()
    merged = merge_status([read_status(out) for out in shards]).to_json()
    jobs = {
        "total": 24, "completed": 16, "failed": 8, "in_flight": 0, "not_known_whether_paid": 0, "expired": 0,
        "not_started": 0,
    }  # fmt: skip
    assert one["jobs"] == merged["jobs"] == {**jobs, "removed": 0}
    assert one["failures"] == merged["failures"]
    assert one["rerun"] == merged["rerun"] == {"skip": 16, "skip failed": 8}
    assert merged["folders"] == [str(out) for out in shards]
    capsys.readouterr()
    assert main(["status", *map(str, shards)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("3 folders, merged: ") and "  completed    16" in text
