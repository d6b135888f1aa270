"""Checking a PNG or JPEG by its structure: whole files pass with their size, damaged ones are refused."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from batchgen.output.images import ImageInvalid, open_part
from batchgen.output.structure import StructureError, check_structure, png_chunks


def encoded(fmt: str, size: tuple[int, int] = (96, 64), **options: object) -> bytes:
    """A noisy image (so the JPEG's entropy-coded data holds FF bytes) encoded as ``fmt``."""
    image = Image.effect_noise(size, 60).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("PNG", {}),
        ("PNG", {"optimize": True}),
        ("JPEG", {"quality": 90}),
        ("JPEG", {"progressive": True}),  # several scans
        ("JPEG", {"restart_marker_blocks": 1}),  # RSTn markers inside the entropy-coded data
    ],
)
def test_whole_files_pass_with_the_size_pillow_reads(fmt: str, options: dict[str, object]) -> None:
    """Pillow's own PNGs and JPEGs (progressive, with restart markers) pass, with Pillow's width and height."""
    data = encoded(fmt, (97, 61), **options)
    shape = check_structure(data, fmt)
    with Image.open(io.BytesIO(data)) as im:
        assert (shape.format, shape.width, shape.height) == (im.format, *im.size)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_file_cut_anywhere_is_refused(fmt: str) -> None:
    """Every truncation of the file, to its last byte, is refused (no IEND, no EOI, a cut chunk)."""
    data = encoded(fmt)
    for cut in [*range(1, 64), *range(64, len(data), 97), len(data) - 2, len(data) - 1]:
        with pytest.raises(StructureError):
            check_structure(data[:cut], fmt)


def test_a_png_with_any_changed_byte_fails_its_crc() -> None:
    """One bit flipped in the header, the image data or the end chunk: a CRC says so."""
    data = encoded("PNG")
    for pos in (20, len(data) // 2, len(data) - 6):
        damaged = bytearray(data)
        damaged[pos] ^= 0x01
        with pytest.raises(StructureError, match="fails its CRC"):
            check_structure(bytes(damaged), "PNG")


def test_what_is_not_the_format_is_refused() -> None:
    """An HTML page, a JPEG walked as PNG and the other way round, a PNG without image data."""
    html = b"<!doctype html><html><body>502 Bad Gateway</body></html>"
    with pytest.raises(StructureError, match="not a PNG"):
        check_structure(html, "PNG")
    with pytest.raises(StructureError, match="not a JPEG"):
        check_structure(encoded("PNG"), "JPEG")
    with pytest.raises(StructureError, match="not a PNG"):
        check_structure(encoded("JPEG"), "PNG")
    data = encoded("PNG")
    chunks = png_chunks(data)
    no_idat = data[:8] + b"".join(data[s:e] for s, e, kind in chunks if kind != b"IDAT")
    with pytest.raises(StructureError, match="without image data"):
        check_structure(no_idat, "PNG")


def test_a_jpeg_without_its_scan_is_refused() -> None:
    """Headers and an EOI but no scan (SOS) and its data: not an image."""
    data = encoded("JPEG")
    sos = data.index(b"\xff\xda")
    with pytest.raises(StructureError, match="without a frame or a scan"):
        check_structure(data[:sos] + b"\xff\xd9", "JPEG")


def test_bytes_after_the_end_are_left_as_they_are() -> None:
    """Data after IEND / EOI (some encoders append it) does not make a whole image bad, as with Pillow."""
    for fmt in ("PNG", "JPEG"):
        data = encoded(fmt) + b"trailing"
        assert check_structure(data, fmt).width == 96


def test_a_png_of_zero_pixels_is_refused() -> None:
    """An IHDR that says 0 x 64 (with a correct CRC) is no image."""
    data = bytearray(encoded("PNG"))
    struct.pack_into(">I", data, 16, 0)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    with pytest.raises(StructureError, match="0x64"):
        check_structure(bytes(data), "PNG")


@pytest.mark.anyio
async def test_a_download_with_a_bad_crc_is_not_saved(tmp_path: Path) -> None:
    """A PNG damaged in transit (a flipped bit in its image data) fails commit; nothing is left."""
    data = bytearray(encoded("PNG"))
    data[len(data) // 2] ^= 0x10
    with pytest.raises(ImageInvalid, match="not a complete image .*fails its CRC"):
        async with open_part(tmp_path, "a.png") as part:
            await part.write(bytes(data))
            await part.commit(content_type="image/png")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
