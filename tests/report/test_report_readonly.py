"""``batchgen report`` on a folder it may not write: one line naming the file, exit 4, no traceback."""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Linux capabilities that let root write where the permission bits say no.
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER = 1, 2, 3


def _obey_permissions() -> None:
    """In the child before exec: as root, give up the capabilities that ignore permission bits
    (a bounding-set drop: the program exec'd next never has them), so a read-only folder is
    read-only to it as to any user."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _read_only(path: Path) -> None:
    for sub in [path, *path.rglob("*")]:
        sub.chmod(stat.S_IMODE(sub.stat().st_mode) & ~0o222)


@pytest.mark.e2e
@pytest.mark.parametrize("made", [False, True], ids=["first-report", "report-again"])
def test_report_on_a_read_only_folder_exits_4_naming_the_file(tmp_path: Path, made: bool) -> None:
    """A run's folder made read-only: `batchgen report` says which file it cannot write (the
    thumbnails folder the first time, report.html once thumbnails exist), exits 4, and leaves
    the folder as it was."""
    shutil.copy(REPO / "manifests" / "demo.yaml", tmp_path / "demo.yaml")
    run = [
        "run",
        "demo.yaml",
        "--emulate",
        "--out",
        "out",
        "--no-progress",
        *([] if made else ["--no-report"]),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "batchgen", *run], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    _read_only(out)
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    try:
        report = subprocess.run(
            [sys.executable, "-m", "batchgen", "report", "out"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=_obey_permissions,
        )
    finally:
        for sub in [out, *out.rglob("*")]:
            sub.chmod(stat.S_IMODE(sub.stat().st_mode) | 0o200)
    assert report.returncode == 4, report.stderr
    expected = "out/report.html" if made else "out/thumbs"
    assert report.stderr == f"error: cannot write {expected}: Permission denied\n"
    assert report.stdout == ""
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
