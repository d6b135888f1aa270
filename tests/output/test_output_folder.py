"""The output folder: resolved and checked once; nothing is written through a symlink leaving it."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

import batchgen
from batchgen.cli.main import main
from batchgen.emulator import EmulatorConfig
from batchgen.errors import UsageError
from batchgen.output.folder import check_output
from batchgen.output.lock import lock_output

SMALL = EmulatorConfig(time_scale=0.001, image_size=32)


def manifest(tmp_path: Path, filename: str = "{index}.png") -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(f"jobs:\n  - prompt: a cat\n    seeds: 2\noutput:\n  filename: '{filename}'\n")
    return path


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_images_symlinked_outside_is_refused_exit_2_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """OUT/images -> a folder outside OUT: exit 2 with a message naming it, nothing written there."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "images").symlink_to(outside)
    code = main(["run", str(manifest(tmp_path)), "--out", str(out), "--emulate", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{out}/images leads to {outside}, outside {out}; batchgen writes nothing through it" in err
    assert "Traceback" not in err
    assert tree(outside) == []
    assert not (out / "ledger.jsonl").exists()


@pytest.mark.parametrize("name", ["ledger.jsonl", ".lock"])
def test_ledger_or_lock_symlinked_outside_is_refused(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ledger or the lock file as a symlink to a file outside OUT: refused, the target untouched."""
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(target)
    code = main(["run", str(manifest(tmp_path)), "--out", str(out), "--emulate", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "symlink" in err or "leads to" in err
    assert target.read_text() == "keep me\n"


def test_a_jobs_folder_symlinked_outside_is_refused(tmp_path: Path) -> None:
    """A folder the filenames use (images/a, even images/a/b under it) symlinked outside: refused."""
    outside = tmp_path / "elsewhere"
    (outside / "b").mkdir(parents=True)
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "a").symlink_to(outside)
    with pytest.raises(UsageError, match="images/a leads to"):
        check_output(out, {"a/b"})
    with pytest.raises(UsageError, match="images/a leads to"):
        check_output(out, {"a/c"})  # a/c does not exist yet: it would be made outside
    assert check_output(out, {"z/y"}) == out.resolve()


def test_a_file_where_a_jobs_folder_goes_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """images/watercolor is a file but the filenames need a folder: exit 2 at the start, not a
    write error after the requests were paid for."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "watercolor").write_text("oops")
    with pytest.raises(UsageError, match="images/watercolor is not a folder"):
        check_output(tmp_path, {"watercolor/deep"})


def test_symlinks_that_stay_inside_and_a_symlinked_out_are_fine(tmp_path: Path) -> None:
    """OUT itself may be a symlink (the user's choice), and images/ may point inside OUT."""
    real = tmp_path / "real"
    (real / "pics").mkdir(parents=True)
    (real / "images").symlink_to(real / "pics")
    (tmp_path / "out").symlink_to(real)
    assert check_output(tmp_path / "out", {"x"}) == real


@pytest.mark.anyio
async def test_stale_part_files_are_removed_at_the_start_of_a_run(tmp_path: Path) -> None:
    """.part files a killed run left behind are gone after the next run, even a symlinked one."""
    out = tmp_path / "out"
    (out / "images" / "old").mkdir(parents=True)
    (out / "images" / "0.png.part").write_bytes(b"half an image")
    (out / "images" / "old" / "x.png.part").write_bytes(b"half")
    target = tmp_path / "target"
    (out / "images" / "1.png.part").symlink_to(target)  # dangling: opening it would create target
    summary = await batchgen.run(manifest(tmp_path), out_dir=out, emulate=SMALL, progress=False)
    assert summary.exit_code == 0
    assert not list((out / "images").rglob("*.part"))
    assert not target.exists()
    assert sorted(p.name for p in (out / "images").glob("*.png")) == ["0.png", "1.png"]


@pytest.mark.anyio
async def test_a_part_file_symlink_is_never_written_through(tmp_path: Path) -> None:
    """Opening a .part refuses a symlink in its place (O_NOFOLLOW): the target is never created."""
    from batchgen.output.images import open_part

    (tmp_path / "images").mkdir()
    from batchgen.errors import LocalWriteError

    target = tmp_path / "target"
    (tmp_path / "images" / "a.png.part").symlink_to(target)
    with pytest.raises(LocalWriteError, match="Too many levels of symbolic links"):
        async with open_part(tmp_path, "a.png") as part:
            await part.write(png_bytes())
            await part.commit()
    assert not target.exists()


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "PNG")
    return buffer.getvalue()


def test_lock_output_does_not_follow_a_symlinked_lock(tmp_path: Path) -> None:
    """lock_output truncates its lock file: a symlink there is refused, its target kept."""
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    (tmp_path / "out").mkdir()
    os.symlink(target, tmp_path / "out" / ".lock")
    with pytest.raises(UsageError, match="is a symlink"), lock_output(tmp_path / "out"):
        pass
    assert target.read_text() == "keep me\n"


def test_an_out_too_deep_for_the_image_paths_is_refused_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An OUT so deep that OUT/images/<folder>/<name>.part could pass PATH_MAX: exit 2 saying
    how long and what the limit is; no ledger, so nothing was sent."""
    out = tmp_path
    while len(os.fsencode(out)) < 3700:  # each level well under NAME_MAX, the whole under PATH_MAX
        out = out / ("d" * 200)
    out.mkdir(parents=True)
    folders = "/".join(["f" * 100] * 3)
    code = main(["run", str(manifest(tmp_path, folders + "/{index}.png")), "--emulate", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "more than this filesystem opens (4,095): choose a shorter --out" in err
    assert not (out / "ledger.jsonl").exists()
    assert not (out / "images").exists()
    with lock_output(out):  # an image at the top of images/ still fits: that OUT is usable
        assert check_output(out, [""]) == out.resolve()
