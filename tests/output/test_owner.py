"""Whose folder: a run refuses an output folder whose ledger belongs to another shard or manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from batchgen.cli.main import main
from batchgen.errors import UsageError
from batchgen.output.owner import check_owner
from batchgen.output.replay import JobRecord, LedgerState, RunRecord

REPO = Path(__file__).resolve().parents[2]


def state(*, manifest: str | None = "/m/a.yaml", sha: str = "aaa", shard: str | None = None) -> LedgerState:
    s = LedgerState()
    s.runs.append(
        RunRecord(started_at=0.0, manifest=manifest, manifest_sha256=sha, settings={"shard": shard})
    )
    s.records["k1"] = JobRecord(key="k1", state="completed")
    return s


def check(s: LedgerState, *, manifest: str | None = "/m/a.yaml", sha: str = "aaa", shard: str | None = None,
          keys: tuple[str, ...] = ("k1",)) -> None:  # fmt: skip
    check_owner(s, Path("OUT"), manifest=manifest, manifest_sha256=sha, shard=shard, keys=keys)


def test_the_same_batch_is_accepted() -> None:
    """The same manifest, edited (same path) or moved (same sha256), or both with a job in common; an empty ledger."""
    check(state())
    check(state(), sha="edited")
    check(state(), manifest="/elsewhere/a.yaml")
    check(state(), manifest="/elsewhere/b.yaml", sha="edited")  # k1 is done here: the same batch
    check(LedgerState(), shard="2/3", manifest="/m/other.yaml")
    check(state(manifest=None), manifest=None, keys=("zz",))  # jobs from Python: only the shard counts


def test_another_shard_is_refused_naming_both() -> None:
    """Shard 2/3 into shard 1/3's folder, a shard into a whole batch's, or the whole batch into a shard's."""
    with pytest.raises(UsageError, match=r"OUT holds shard 1/3 of /m/a.yaml .*this run is shard 2/3"):
        check(state(shard="1/3"), shard="2/3")
    with pytest.raises(UsageError, match=r"holds the whole batch \(no --shard\).*this run is shard 1/2"):
        check(state(), shard="1/2")
    with pytest.raises(UsageError, match=r"holds shard 1/2 .*this run is the whole batch"):
        check(state(shard="1/2"))


def test_another_manifest_is_refused_naming_it() -> None:
    """Another path, another sha256 and no job in common: another batch."""
    with pytest.raises(
        UsageError, match=r"OUT holds the batch of another manifest, /m/a.yaml .* /m/b.yaml's"
    ):
        check(state(), manifest="/m/b.yaml", sha="bbb", keys=("k9",))


def test_shards_run_one_after_the_other_into_one_out_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --shard 1/2 --out X` then `--shard 2/2 --out X`: exit 2 naming both shards; X unchanged."""
    out = tmp_path / "out"
    demo = str(REPO / "manifests" / "demo.yaml")
    argv = ["run", demo, "--emulate", "--out", str(out), "--no-report"]
    assert main([*argv, "--shard", "1/2"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main([*argv, "--shard", "2/2"]) == 2
    err = capsys.readouterr().err
    assert f"{out} holds shard 1/2 of {REPO / 'manifests' / 'demo.yaml'}" in err
    assert "this run is shard 2/2: give each shard its own --out" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert json.loads((out / "summary.json").read_text())["shard"] == "1/2"
    assert main([*argv, "--shard", "1/2"]) == 0  # its own shard resumes


def test_another_manifest_into_the_same_out_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """demo.yaml's folder given to sweep.yaml: exit 2, naming the folder's manifest."""
    out = tmp_path / "out"
    assert (
        main(["run", str(REPO / "manifests" / "demo.yaml"), "--emulate", "--out", str(out), "--no-report"])
        == 0
    )
    capsys.readouterr()
    sweep = tmp_path / "sweep.yaml"
    shutil.copy(REPO / "manifests" / "sweep.yaml", sweep)
    assert main(["run", str(sweep), "--emulate", "--out", str(out)]) == 2
    assert "holds the batch of another manifest" in capsys.readouterr().err
