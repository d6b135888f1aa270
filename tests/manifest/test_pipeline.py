"""The one manifest -> jobs pipeline: cap, expansion, duplicates, shards, as every command sees it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen.cli.main import main
from batchgen.errors import ManifestError, UsageError
from batchgen.manifest.expand import expand
from batchgen.manifest.load import load_manifest
from batchgen.manifest.pipeline import ExpansionCounts, manifest_jobs
from batchgen.manifest.shard import Shard

SEEDS = "jobs:\n  - prompt: a {c}\n    grid:\n      c: [red, red, blue]\n      seed: '1-10'\n"


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_shards_partition_the_manifest_and_total_counts_every_job(tmp_path: Path) -> None:
    """The shards are disjoint and together hold every job; total and duplicates are the whole's."""
    path = write(tmp_path, SEEDS)
    every = [job.key for job in expand(load_manifest(path))]
    seen: list[str] = []
    for k in (1, 2, 3):
        found = manifest_jobs(path, shard=Shard(k, 3))
        keys = [job.key for job in found]
        assert all(Shard(k, 3).holds(key) for key in keys)
        assert (found.total, found.duplicates) == (20, 10)
        seen += keys
    assert len(every) == 20 and sorted(seen) == sorted(every)


def test_count_is_what_validate_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """count() is a full pass (the shard's jobs, the whole's duplicates, the warnings), as validate says."""
    path = write(tmp_path, SEEDS)
    in_shard = len(list(manifest_jobs(path, shard=Shard(2, 3))))
    counts = manifest_jobs(path, shard=Shard(2, 3)).count()
    assert counts == ExpansionCounts(jobs=in_shard, duplicates=10, warnings=0)
    assert main(["validate", str(path), "--shard", "2/3"]) == 0
    noun = "job" if in_shard == 1 else "jobs"
    assert (
        capsys.readouterr().out
        == f"{path}: ok, {in_shard} {noun} in shard 2/3, 10 duplicates dropped, 0 warnings\n"
    )


def test_validate_and_plan_take_the_same_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """plan --jsonl streams exactly the jobs validate counts, shard by shard."""
    path = write(tmp_path, SEEDS)
    for k in (1, 2, 3):
        assert main(["plan", str(path), "--jsonl", "--shard", f"{k}/3"]) == 0
        planned = [json.loads(line)["key"] for line in capsys.readouterr().out.splitlines()]
        assert planned == [job.key for job in manifest_jobs(path, shard=Shard(k, 3))]


def _keys_before_the_clash(path: Path) -> list[str]:
    """The keys of a manifest's jobs; the clash is raised after the last one."""
    keys: list[str] = []
    with pytest.raises(ManifestError):
        for job in expand(load_manifest(path)):
            keys.append(job.key)
    return keys


def test_a_clash_anywhere_refuses_every_shard(tmp_path: Path) -> None:
    """Two jobs writing one file refuse the manifest even in a shard that holds neither of them."""
    path = write(tmp_path, "jobs:\n  - prompt: a\n    seed: [1, 2]\noutput:\n  filename: same.png\n")
    keys = _keys_before_the_clash(path)
    assert len(keys) == 2
    bystander = next(k for k in range(1, 9) if not any(Shard(k, 8).holds(key) for key in keys))
    found = manifest_jobs(path, shard=Shard(bystander, 8))
    with pytest.raises(ManifestError, match="would both write same.png"):
        list(found)


def test_the_cap_comes_before_any_job_and_the_date_fills_names(tmp_path: Path) -> None:
    """Above the cap nothing is built; a path is loaded with the run's date for {date}."""
    path = write(tmp_path, "name: n-{date}\n" + SEEDS + "output:\n  filename: '{date}/{index}'\n")
    with pytest.raises(UsageError, match="expands to 30 jobs, more than the limit of 29"):
        manifest_jobs(path, max_jobs=29)
    found = manifest_jobs(path, max_jobs=30, date="2026-03-01")
    first = next(iter(found))
    assert (found.manifest.name, first.filename) == ("n-2026-03-01", "2026-03-01/0.png")
