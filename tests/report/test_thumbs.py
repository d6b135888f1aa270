"""Thumbnails: the long side at THUMB_SIZE, the same pixels the general way gives, turned
as the camera says, and palette images resized as colours."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageOps

from batchgen.report.thumbs import THUMB_SIZE, make_thumbnails, thumb_relpath


def _save(path: Path, image: Image.Image, fmt: str, **options: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **options)


def _thumb(out: Path, file: str, sha: str) -> Image.Image:
    assert make_thumbnails(out, [(file, sha)]) == {sha}
    with Image.open(out / thumb_relpath(sha)) as im:
        im.load()
        return im


def _noise(size: tuple[int, int]) -> Image.Image:
    return Image.frombytes("RGB", size, bytes((i * 7919) % 251 for i in range(size[0] * size[1] * 3)))


def test_an_rgb_png_gives_the_pixels_of_the_general_way(tmp_path: Path) -> None:
    """An RGB PNG reduced in place: long side THUMB_SIZE, the JPEG that converting first gives."""
    source = _noise((1024, 768))
    _save(tmp_path / "images" / "a.png", source, "PNG")
    thumb = _thumb(tmp_path, "images/a.png", "a" * 64)
    expected = ImageOps.exif_transpose(source).convert("RGB")
    expected.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    again = io.BytesIO()
    expected.save(again, format="JPEG", quality=80, optimize=True)
    assert thumb.size == (THUMB_SIZE, 192)
    assert (tmp_path / thumb_relpath("a" * 64)).read_bytes() == again.getvalue()


def test_a_turned_jpeg_is_shown_upright(tmp_path: Path) -> None:
    """A JPEG whose EXIF orientation says 'turned 90 degrees' gets a thumbnail turned back (tall)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to view
    _save(tmp_path / "images" / "b.jpg", _noise((800, 400)), "JPEG", exif=exif.tobytes())
    thumb = _thumb(tmp_path, "images/b.jpg", "b" * 64)
    assert thumb.size == (128, THUMB_SIZE)


def test_a_palette_png_is_resized_as_colours(tmp_path: Path) -> None:
    """A palette PNG half red, half blue: the thumbnail blends them at the seam, not nearest indices only."""
    source = Image.new("RGB", (512, 512), "red")
    source.paste(Image.new("RGB", (256, 512), "blue"), (256, 0))
    _save(tmp_path / "images" / "c.png", source.convert("P", palette=Image.Palette.ADAPTIVE, colors=2), "PNG")
    thumb = _thumb(tmp_path, "images/c.png", "c" * 64)
    assert thumb.mode == "RGB" and thumb.size == (THUMB_SIZE, THUMB_SIZE)
    seam = thumb.getpixel((THUMB_SIZE // 2, THUMB_SIZE // 2))
    assert isinstance(seam, tuple) and seam[0] > 40 and seam[2] > 40  # a blend of red and blue
