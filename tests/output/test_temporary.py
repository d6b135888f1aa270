"""Temporaries under OUT: one naming, removed when a write fails, and by the next run when a
process was killed between write and rename."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import batchgen
from batchgen.emulator import EmulatorConfig
from batchgen.output.temporary import remove_stale_temporaries, replace_whole, temporary_path


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_a_temporary_is_hidden_beside_its_file_and_names_the_process(tmp_path: Path) -> None:
    """`.summary.json.<pid>.tmp` next to summary.json: hidden, never taken for the file itself."""
    assert temporary_path(tmp_path / "summary.json") == tmp_path / f".summary.json.{os.getpid()}.tmp"


def test_a_failed_write_removes_its_temporary_and_names_the_file(tmp_path: Path) -> None:
    """A write that fails half-way leaves neither the temporary nor a half file, and its error
    names the file the user knows, not the temporary."""
    target = tmp_path / "report.html"
    target.write_text("the old page")

    def half(part: Path) -> None:
        part.write_text("half a pa")
        raise OSError(28, "No space left on device", str(part))

    with pytest.raises(OSError) as info:
        replace_whole(target, half)
    assert info.value.filename == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    assert target.read_text() == "the old page"
    replace_whole(target, lambda part: part.write_text("the new page"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    assert target.read_text() == "the new page"


def test_only_stale_temporaries_of_batchgen_naming_are_removed(tmp_path: Path) -> None:
    """Of a dead process's temporaries in OUT, thumbs/ and grids/: removed; a live process's
    (a `batchgen report` still writing), other names, images and other folders: kept."""
    dead = _dead_pid()
    (tmp_path / "thumbs").mkdir()
    (tmp_path / "grids").mkdir()
    (tmp_path / "images").mkdir()
    stale = [
        tmp_path / f".summary.json.{dead}.tmp",
        tmp_path / f".report.html.{dead}.tmp",
        tmp_path / "thumbs" / f".0123456789abcdef01234567.jpg.{dead}.tmp",
        tmp_path / "grids" / f".01-style.png.{dead}.tmp",
        tmp_path / f".summary.json.{2**31 + 5}.tmp",  # no process can have that pid
    ]
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            kept = [
                tmp_path / f".report.html.{live.pid}.tmp",
                tmp_path / "notes.txt",
                tmp_path / ".summary.json.tmp",
                tmp_path / f"summary.json.{dead}.tmp",
                tmp_path / "images" / f".cat.png.{dead}.tmp",
                tmp_path / f".x.{dead}.tmp.bak",
            ]
            for path in stale + kept:
                path.write_text("x")
            assert remove_stale_temporaries(tmp_path) == sorted(stale)
            assert all(path.exists() for path in kept)
            assert not any(path.exists() for path in stale)
        finally:
            live.kill()


def test_a_stale_temporary_symlink_is_removed_not_followed(tmp_path: Path) -> None:
    """A temporary that is a symlink loses the link; its target is untouched."""
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    (tmp_path / f".summary.json.{_dead_pid()}.tmp").symlink_to(target)
    assert len(remove_stale_temporaries(tmp_path)) == 1
    assert target.read_text() == "keep"


def test_the_next_run_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    """A run killed while writing summary.json, the report, a thumbnail or a grid leaves their
    temporaries; the rerun removes them and writes the real files."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("jobs:\n  - prompt: a cat\n    seeds: 2\noutput:\n  filename: '{index}.png'\n")
    out = tmp_path / "out"
    config = EmulatorConfig(time_scale=0.001, image_size=32)
    anyio.run(lambda: batchgen.run(manifest, out_dir=out, emulate=config, progress=False))
    dead = _dead_pid()
    left = [
        out / f".summary.json.{dead}.tmp",
        out / f".report.html.{dead}.tmp",
        out / "thumbs" / f".aaaaaaaaaaaaaaaaaaaaaaaa.jpg.{dead}.tmp",
        out / "grids" / f".01-seed.png.{dead}.tmp",
    ]
    for path in left:
        path.write_text("half")
    summary = anyio.run(lambda: batchgen.run(manifest, out_dir=out, emulate=config, progress=False))
    assert summary.exit_code == 0
    assert not any(path.exists() for path in left)
    assert not list(out.rglob("*.tmp"))
    assert (out / "summary.json").is_file() and (out / "report.html").is_file()
