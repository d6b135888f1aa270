"""`batchgen tidy OUT`: images of jobs no longer in the manifest, listed by status and set aside."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from batchgen.cli.main import main
from batchgen.output.lock import lock_output

REPO = Path(__file__).resolve().parents[2]
OLD = [
    f"images/{style}/{subject}-202.png"
    for style in ("studio_photograph", "watercolor")
    for subject in ("lighthouse_on_a_cliff", "red_fox_in_the_snow", "tea_house_in_a_bamboo_forest")
]


def edited_demo(tmp_path: Path) -> tuple[Path, Path]:
    """demo.yaml run, then its seed 202 changed to 303: six jobs leave the manifest, six come in."""
    manifest = tmp_path / "demo.yaml"
    shutil.copy(REPO / "manifests" / "demo.yaml", manifest)
    out = tmp_path / "out"
    argv = ["run", str(manifest), "--emulate", "--out", str(out), "--no-report"]
    assert main(argv) == 0
    manifest.write_text(manifest.read_text().replace("seed: [101, 202]", "seed: [101, 303]"))
    assert main(argv) == 0
    return manifest, out


def test_status_lists_the_images_of_jobs_no_longer_in_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After the edit, status names the six old images (text and JSON); the new ones are not among them."""
    _, out = edited_demo(tmp_path)
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"6 images of jobs no longer in the manifest are still in images/ (batchgen tidy {out}" in text
    assert all(f"    {file}\n" in text for file in OLD)
    assert main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed_images"] == sorted(OLD)


def test_tidy_moves_them_aside_and_a_rerun_is_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run moves nothing; tidy moves the six to removed/<time>/ with their paths, the current twelve
    stay; then nothing is left to do, status lists none, and a rerun still skips all twelve."""
    manifest, out = edited_demo(tmp_path)
    current = sorted(
        str(p.relative_to(out)) for p in (out / "images").rglob("*.png") if str(p.relative_to(out)) not in OLD
    )
    assert len(current) == 12
    capsys.readouterr()
    assert main(["tidy", str(out), "--dry-run"]) == 0
    assert "6 images of jobs no longer in the manifest (--dry-run: nothing moved)" in capsys.readouterr().out
    assert all((out / file).is_file() for file in OLD)
    assert main(["tidy", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "6 images of jobs no longer in the manifest moved to " in printed
    (folder,) = (out / "removed").iterdir()
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png")) == sorted(
        f[len("images/") :] for f in OLD
    )
    assert not any((out / file).exists() for file in OLD)
    assert sorted(str(p.relative_to(out)) for p in (out / "images").rglob("*.png")) == current
    assert main(["tidy", str(out)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed_images"] == []
    assert main(["run", str(manifest), "--emulate", "--out", str(out), "--no-report"]) == 0
    assert json.loads((out / "summary.json").read_text())["jobs"]["skipped"] == 12


def test_a_new_job_written_over_an_old_name_is_not_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The prompt edited, the filename the same: the new job's image replaced the old one; not set aside."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("jobs:\n  - prompt: a fox\n    seed: [1, 2]\noutput:\n  filename: 'img-{seed}'\n")
    out = tmp_path / "out"
    argv = ["run", str(manifest), "--emulate", "--out", str(out), "--no-report"]
    assert main(argv) == 0
    manifest.write_text(manifest.read_text().replace("a fox", "a red fox"))
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["jobs"]["removed"] == 2 and status["removed_images"] == []


def test_tidy_refuses_a_folder_in_use_or_without_its_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run holding the folder, a manifest gone, no ledger: exit 2 with the reason, nothing moved
    (and no lock file left in a folder that is not a run's)."""
    manifest, out = edited_demo(tmp_path)
    capsys.readouterr()
    with lock_output(out):
        assert main(["tidy", str(out)]) == 2
    assert "another batchgen run is using" in capsys.readouterr().err
    manifest.unlink()
    assert main(["tidy", str(out)]) == 2
    assert "cannot tell which images are no longer in the manifest" in capsys.readouterr().err
    assert all((out / file).is_file() for file in OLD)
    (tmp_path / "empty").mkdir()
    assert main(["tidy", str(tmp_path / "empty")]) == 2
    assert "no ledger" in capsys.readouterr().err
    assert list((tmp_path / "empty").iterdir()) == []
