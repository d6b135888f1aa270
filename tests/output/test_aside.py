"""Setting images aside: moved under OUT/removed/<UTC time>/ with their paths, never overwriting."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.errors import UsageError
from batchgen.output.aside import set_aside

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def images(out: Path, *files: str) -> None:
    for file in files:
        path = out / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(file.encode())


def test_files_move_with_their_paths_and_empty_folders_go(tmp_path: Path) -> None:
    """images/a/x.png -> removed/<time>/a/x.png, bytes intact; a/ left empty is removed, b/ kept."""
    images(tmp_path, "images/a/x.png", "images/b/y.png", "images/b/z.png")
    target = set_aside(tmp_path, ["images/a/x.png", "images/b/y.png"], now=NOW)
    assert target == tmp_path.resolve() / "removed" / "20270115T080000Z"
    assert (target / "a" / "x.png").read_bytes() == b"images/a/x.png"
    assert (target / "b" / "y.png").read_bytes() == b"images/b/y.png"
    assert not (tmp_path / "images" / "a").exists() and (tmp_path / "images" / "b" / "z.png").is_file()


def test_a_second_time_in_the_same_second_gets_its_own_folder(tmp_path: Path) -> None:
    """Nothing set aside earlier is overwritten: the second folder is <time>-2."""
    images(tmp_path, "images/x.png")
    first = set_aside(tmp_path, ["images/x.png"], now=NOW)
    images(tmp_path, "images/x.png")
    second = set_aside(tmp_path, ["images/x.png"], now=NOW)
    assert first is not None and second == first.with_name(first.name + "-2")
    assert (first / "x.png").is_file() and (second / "x.png").is_file()


def test_delete_deletes(tmp_path: Path) -> None:
    """--delete: the files are gone and no removed/ folder is made."""
    images(tmp_path, "images/x.png")
    assert set_aside(tmp_path, ["images/x.png"], now=NOW, delete=True) is None
    assert not (tmp_path / "images" / "x.png").exists() and not (tmp_path / "removed").exists()


@pytest.mark.parametrize("file", ["ledger.jsonl", "images/../ledger.jsonl", "thumbs/x.jpg"])
def test_only_files_under_images_are_moved(tmp_path: Path, file: str) -> None:
    """A path not under images/ is refused before anything moves."""
    images(tmp_path, "images/x.png")
    with pytest.raises(UsageError, match="not under images/"):
        set_aside(tmp_path, ["images/x.png", file], now=NOW)
    assert (tmp_path / "images" / "x.png").is_file()


def test_a_removed_folder_leading_outside_is_refused(tmp_path: Path) -> None:
    """OUT/removed a symlink out of OUT: nothing is moved through it."""
    out = tmp_path / "out"
    images(out, "images/x.png")
    (tmp_path / "elsewhere").mkdir()
    (out / "removed").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match="leads outside"):
        set_aside(out, ["images/x.png"], now=NOW)
    assert (out / "images" / "x.png").is_file() and not any((tmp_path / "elsewhere").iterdir())
