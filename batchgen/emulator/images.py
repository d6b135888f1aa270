"""The emulator's images: real PNG or JPEG files a person can tell apart.

Each image is a flat colour derived from a hash of the request, with the prompt,
seed, mode and aspect ratio written on it, at the aspect ratio the job asked for.
Rendering is deterministic, so identical parameters give byte-identical files.
"""

from __future__ import annotations

import hashlib
import io
import textwrap
from collections import OrderedDict

from PIL import Image, ImageDraw, ImageFont

from batchgen.emulator.config import ImageFormat
from batchgen.manifest.params import BriaParams, aspect_ratio_size

__all__ = ["CONTENT_TYPES", "ImageCache", "render_image"]

CONTENT_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg"}
_EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpeg"}


def _colour(key: str) -> tuple[int, int, int]:
    """A mid-bright colour from a hash, so black or white text stays readable on it."""
    digest = hashlib.sha256(key.encode()).digest()
    return (64 + digest[0] % 160, 64 + digest[1] % 160, 64 + digest[2] % 160)


def render_image(params: BriaParams, *, key: str, image_format: ImageFormat, long_side: int) -> bytes:
    """Encode one image for these parameters (``key`` is their canonical text)."""
    width, height = aspect_ratio_size(params.aspect_ratio, long_side)
    background = _colour(key)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    brightness = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    ink = (0, 0, 0) if brightness > 140 else (255, 255, 255)
    size = max(10, min(width, height) // 14)
    font = ImageFont.load_default(size=size)
    chars_per_line = max(8, int(width / (size * 0.6)))
    lines = textwrap.wrap(params.prompt, chars_per_line)[: max(1, height // (size * 2) - 2)]
    lines += ["", f"seed {params.seed}", f"{params.mode} {params.aspect_ratio} {params.medium}"]
    draw.multiline_text((size // 2, size // 2), "\n".join(lines), fill=ink, font=font, spacing=size // 4)
    # A border in the ink colour makes the frame (and so the aspect ratio) visible.
    draw.rectangle((0, 0, width - 1, height - 1), outline=ink, width=max(1, size // 6))
    out = io.BytesIO()
    if image_format == "jpeg":
        image.save(out, format="JPEG", quality=85)
    else:
        image.save(out, format="PNG")
    return out.getvalue()


class ImageCache:
    """Rendered images by request key, least recently used evicted first."""

    def __init__(self, *, image_format: ImageFormat, long_side: int, capacity: int = 256) -> None:
        self.image_format: ImageFormat = image_format
        self.extension = _EXTENSIONS[image_format]
        self.content_type = CONTENT_TYPES[image_format]
        self._long_side = long_side
        self._capacity = capacity
        self._images: OrderedDict[str, bytes] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        """The cached image for ``key``, or None when it has not been rendered yet."""
        data = self._images.get(key)
        if data is not None:
            self._images.move_to_end(key)
        return data

    def render(self, params: BriaParams, key: str) -> bytes:
        """Render (the slow part; callers run it in a worker thread) without caching."""
        return render_image(params, key=key, image_format=self.image_format, long_side=self._long_side)

    def put(self, key: str, data: bytes) -> None:
        """Keep a rendered image, evicting the least recently used beyond capacity."""
        self._images[key] = data
        self._images.move_to_end(key)
        while len(self._images) > self._capacity:
            self._images.popitem(last=False)
