"""Tests of image storage: .part then rename, verification, sha256, the suffix rule."""

from __future__ import annotations

import base64
import hashlib
import os
import io
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from PIL import Image

from batchgen.output import images as storage
from batchgen.output.images import ImageInvalid, decode_data_uri, file_matches, open_part, remove_stale_parts, sha256_file


def make_image(fmt: str, size: tuple[int, int] = (24, 16)) -> bytes:
    """A small deterministic image with some structure, encoded as ``fmt``."""
    image = Image.new("RGB", size)
    image.putdata(
        [((x * 10) % 256, (y * 15) % 256, (x * y) % 256) for y in range(size[1]) for x in range(size[0])]
    )
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


async def save(out: Path, relpath: str, data: bytes, *, content_type: str | None = None, chunk: int = 100):
    async with open_part(out, relpath) as part:
        for start in range(0, len(data), chunk):
            await part.write(data[start : start + chunk])
        return await part.commit(content_type=content_type)


def leftovers(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


@pytest.mark.anyio
async def test_png_is_saved_with_its_sha256_size_and_dimensions(tmp_path: Path) -> None:
    """A valid PNG written in chunks lands at images/<relpath> with correct sha256, size, format."""
    data = make_image("PNG")
    saved = await save(tmp_path, "shoes/red.png", data, content_type="image/png")
    assert saved.file == "images/shoes/red.png"
    assert (saved.sha256, saved.bytes) == (hashlib.sha256(data).hexdigest(), len(data))
    assert (saved.format, saved.width, saved.height) == ("PNG", 24, 16)
    assert (tmp_path / saved.file).read_bytes() == data
    assert leftovers(tmp_path) == ["images/shoes/red.png"]
    assert file_matches(tmp_path, saved.file, saved.sha256)
    assert sha256_file(tmp_path / saved.file) == saved.sha256


@pytest.mark.anyio
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
async def test_truncated_image_is_rejected_and_nothing_is_left(tmp_path: Path, fmt: str) -> None:
    """A download cut short fails commit with ImageInvalid; no .part and no final file remain."""
    data = make_image(fmt, (64, 64))
    with pytest.raises(ImageInvalid, match="not a complete image") as caught:
        await save(tmp_path, "cut.png" if fmt == "PNG" else "cut.jpg", data[: len(data) * 2 // 3])
    assert caught.value.file is not None and caught.value.file.startswith("images/cut.")
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_bytes_that_are_no_image_are_rejected(tmp_path: Path) -> None:
    """An HTML error page or an empty body saved as an image is ImageInvalid."""
    with pytest.raises(ImageInvalid, match="not a complete image"):
        await save(tmp_path, "a.png", b"<html>502 Bad Gateway</html>", content_type="text/html")
    with pytest.raises(ImageInvalid, match="empty download"):
        await save(tmp_path, "a.png", b"")
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_jpeg_named_png_is_saved_with_a_jpg_suffix(tmp_path: Path) -> None:
    """The server sent a JPEG for a .png name: the file is saved as .jpg (the suffix rule)."""
    data = make_image("JPEG")
    saved = await save(tmp_path, "cat.png", data, content_type="image/jpeg")
    assert (saved.file, saved.format) == ("images/cat.jpg", "JPEG")
    assert leftovers(tmp_path) == ["images/cat.jpg"]
    assert saved.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.anyio
async def test_content_type_that_lies_about_the_format_is_rejected(tmp_path: Path) -> None:
    """Data that decodes as JPEG but was announced as image/png is ImageInvalid (re-download)."""
    with pytest.raises(ImageInvalid, match="the server said PNG but the data is JPEG"):
        await save(tmp_path, "cat.png", make_image("JPEG"), content_type="image/png; charset=binary")
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_generic_content_type_claims_nothing(tmp_path: Path) -> None:
    """application/octet-stream (common on CDNs) is not a claim; the data decides."""
    saved = await save(tmp_path, "cat.jpeg", make_image("JPEG"), content_type="application/octet-stream")
    assert saved.file == "images/cat.jpeg"


@pytest.mark.anyio
async def test_part_file_is_removed_when_the_block_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception while downloading removes the .part file (an image past SPILL is on disk)."""
    monkeypatch.setattr(storage, "SPILL", 8)
    with pytest.raises(ConnectionError):
        async with open_part(tmp_path, "a.png") as part:
            await part.write(b"\x89PNG partial")
            assert part.part_path.exists()
            raise ConnectionError("peer went away")
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_part_file_is_removed_on_cancellation(tmp_path: Path) -> None:
    """A download cancelled mid-way (Ctrl-C, timeout) removes the .part file."""
    with anyio.CancelScope() as scope:
        async with open_part(tmp_path, "a.png") as part:
            await part.write(make_image("PNG")[:50])
            scope.cancel()
            await anyio.lowlevel.checkpoint()  # the cancellation is delivered here
            await part.write(b"never written")
    assert scope.cancelled_caught
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_part_file_is_removed_without_commit(tmp_path: Path) -> None:
    """Leaving the block without commit() counts as abandoning the download."""
    async with open_part(tmp_path, "a.png") as part:
        await part.write(make_image("PNG"))
    assert leftovers(tmp_path) == []


def test_image_paths_may_not_escape_images_dir(tmp_path: Path) -> None:
    """Absolute names and .. components are refused before anything is written."""
    for bad in ("../ledger.jsonl", "/etc/passwd", "a/../../b.png", ""):
        with pytest.raises(ValueError, match="inside images/"):
            open_part(tmp_path, bad)


def test_file_matches_checks_presence_and_content(tmp_path: Path) -> None:
    """file_matches is true only for an existing file with exactly the recorded sha256."""
    image = tmp_path / "images" / "a.png"
    image.parent.mkdir()
    image.write_bytes(b"abc")
    digest = hashlib.sha256(b"abc").hexdigest()
    assert file_matches(tmp_path, "images/a.png", digest)
    assert file_matches(tmp_path, "images/a.png", digest.upper())
    assert not file_matches(tmp_path, "images/a.png", hashlib.sha256(b"abd").hexdigest())
    assert not file_matches(tmp_path, "images/missing.png", digest)
    assert not file_matches(tmp_path, "images", digest)


def test_file_matches_trusts_the_recorded_size_and_time_only_to_the_nanosecond(tmp_path: Path) -> None:
    """With the size and mtime_ns recorded at save, an unchanged file is not read; a rewrite of
    the same size with any other time, or a recorded time in whole seconds, is hashed."""
    image = tmp_path / "images" / "a.png"
    image.parent.mkdir()
    image.write_bytes(b"abc")
    digest = hashlib.sha256(b"abc").hexdigest()
    recorded = image.stat().st_mtime_ns // 1000 * 1000 + 123  # a time with a fraction of a second
    os.utime(image, ns=(recorded, recorded))
    wrong = hashlib.sha256(b"xyz").hexdigest()
    # Size and time as recorded: trusted without reading, whatever the digest says.
    assert file_matches(tmp_path, "images/a.png", wrong, size=3, mtime_ns=recorded)
    image.write_bytes(b"abd")  # same size, a new time: hashed, and found changed
    assert not file_matches(tmp_path, "images/a.png", digest, size=3, mtime_ns=recorded)
    whole = 1_700_000_000 * 1_000_000_000
    os.utime(image, ns=(whole, whole))  # a coarse filesystem: never trusted
    assert not file_matches(tmp_path, "images/a.png", digest, size=3, mtime_ns=whole)
    assert file_matches(tmp_path, "images/a.png", hashlib.sha256(b"abd").hexdigest(), size=3, mtime_ns=whole)
    assert not file_matches(tmp_path, "images/gone.png", digest, size=3, mtime_ns=recorded)


@pytest.mark.anyio
async def test_a_saved_image_records_its_modification_time(tmp_path: Path) -> None:
    """SavedImage.mtime_ns is the time of the file in place (what the completed line records)."""
    async with open_part(tmp_path, "t.png") as part:
        await part.write(make_image("PNG"))
        saved = await part.commit()
    assert saved.mtime_ns == (tmp_path / saved.file).stat().st_mtime_ns


def test_decode_data_uri() -> None:
    """Base64 and percent-encoded data URIs decode to bytes and their media type."""
    data = make_image("PNG")
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    assert decode_data_uri(uri) == (data, "image/png")
    assert decode_data_uri("data:,a%20b") == (b"a b", None)
    with pytest.raises(ImageInvalid, match="invalid base64"):
        decode_data_uri("data:image/png;base64,@@@")
    with pytest.raises(ImageInvalid, match="not a data: URI"):
        decode_data_uri("https://images.segmind.com/x.jpeg")
    with pytest.raises(ImageInvalid, match="without a comma"):
        decode_data_uri("data:image/png;base64")


@pytest.mark.anyio
async def test_stale_part_files_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    """remove_stale_parts deletes leftover .part files (a SIGKILLed run) and nothing else."""
    kept = await save(tmp_path, "a/ok.png", make_image("PNG"))
    (tmp_path / "images" / "a" / "b.png.part").write_bytes(b"half")
    (tmp_path / "images" / "c.jpg.part").write_bytes(b"half")
    removed = remove_stale_parts(tmp_path)
    assert sorted(p.name for p in removed) == ["b.png.part", "c.jpg.part"]
    assert leftovers(tmp_path) == [kept.file]
    assert remove_stale_parts(tmp_path / "nothing-here") == []


@pytest.mark.anyio
async def test_a_full_disk_is_a_local_write_error_and_leaves_no_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while writing an image is LocalWriteError naming the file (the run's problem,
    not the download's), and the .part file is removed."""
    import errno

    from batchgen.errors import LocalWriteError

    async def disk_full(chunk: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "SPILL", 4)  # past it, the image streams to its .part
    with pytest.raises(LocalWriteError) as caught:
        async with open_part(tmp_path, "a.png") as part:
            await part.write(b"\x89PNG")
            assert part._file is not None
            part._file.write = disk_full  # type: ignore[method-assign]
            await part.write(b"more")
    assert str(caught.value) == f"cannot write {tmp_path}/images/a.png.part: No space left on device"
    assert caught.value.reason == "No space left on device"
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_a_folder_that_cannot_be_made_is_a_local_write_error(tmp_path: Path) -> None:
    """A file where the image's folder should be is a LocalWriteError, not a traceback."""
    from batchgen.errors import LocalWriteError

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "sku").write_text("a file, not a folder")
    with pytest.raises(LocalWriteError, match=r"cannot write .*images/sku/a.png.part"):
        async with open_part(tmp_path, "sku/a.png") as part:
            await part.write(make_image("PNG"))
            await part.commit()


@pytest.mark.anyio
async def test_a_folder_symlinked_out_of_images_mid_run_is_refused(tmp_path: Path) -> None:
    """A folder made a symlink to elsewhere after the start-up check is still never written through."""
    from batchgen.errors import LocalWriteError

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "sku").symlink_to(elsewhere)
    with pytest.raises(LocalWriteError, match="leads outside"):
        async with open_part(out, "sku/a.png") as part:
            await part.write(make_image("PNG"))
            await part.commit()
    assert list(elsewhere.iterdir()) == []
