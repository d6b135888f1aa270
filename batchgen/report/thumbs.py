"""Thumbnails of a run's images, made once with Pillow into ``OUT/thumbs/``.

A thumbnail is named after the sha256 the ledger records for its image
(``thumbs/<first 24 hex>.jpg``), so it is made once per image content: a report written
again (at the end of every run) only makes the ones that are missing, and an image
replaced by a rerun gets a new one. JPEG at quality 80, long side :data:`THUMB_SIZE`;
JPEG sources are decoded at a reduced scale (``draft``), which makes it cheap.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps

from batchgen.output.layout import THUMBS_DIR
from batchgen.output.temporary import replace_whole

__all__ = ["THUMB_SIZE", "make_thumbnails", "thumb_relpath"]

THUMB_SIZE = 256
_ORIENTATION = 0x0112  # the EXIF tag of how the camera was turned


def thumb_relpath(sha256: str) -> str:
    """Where the thumbnail of an image with this sha256 goes, relative to OUT."""
    return f"{THUMBS_DIR}/{sha256[:24]}.jpg"


def _make(out_dir: Path, image: str, sha256: str) -> bool:
    """Make one thumbnail unless it exists; False if the image cannot be read."""
    target = out_dir / thumb_relpath(sha256)
    if target.exists():
        return True
    try:
        with Image.open(out_dir / image) as im:
            im.draft("RGB", (THUMB_SIZE, THUMB_SIZE))  # JPEG: decode at 1/2, 1/4, 1/8 scale
            if im.mode == "RGB" and im.getexif().get(_ORIENTATION, 1) == 1:
                # Bria's images: reduced in place, then copied small. Transposing and
                # converting first made two full-size copies: 13.7 -> 8.7-9.0 ms of CPU for
                # a 1024-pixel PNG, the same pixels. Other modes and rotated images take
                # the general way (a palette must not be resized as indices).
                im.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
                thumb = im.convert("RGB")
            else:
                thumb = ImageOps.exif_transpose(im).convert("RGB")
                thumb.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    replace_whole(target, lambda part: thumb.save(part, format="JPEG", quality=80, optimize=True))
    return True


def make_thumbnails(
    out_dir: Path,
    images: Iterable[tuple[str, str]],
    *,
    workers: int = 2,
    stop: Callable[[], bool] | None = None,
) -> set[str]:
    """Make the missing thumbnails of ``(file relative to OUT, sha256)`` pairs; the sha256s that have one.

    Pillow releases the GIL while decoding and resizing, so a few threads use the cores.
    Once ``stop()`` is true no more are made (the ones left are missing from the result).
    """
    (out_dir / THUMBS_DIR).mkdir(parents=True, exist_ok=True)
    have: set[str] = set()
    # One per content: two threads must not write one thumbnail (its temporary is per process).
    todo: dict[str, str] = {}  # sha256 -> the first image of that content
    for image, sha in images:
        if sha in have or sha in todo:
            continue
        # Most exist already (a report is written at the end of every run): a stat here
        # costs less than a trip through the pool.
        if os.path.exists(out_dir / thumb_relpath(sha)):
            have.add(sha)
        else:
            todo[sha] = image

    def make(pair: tuple[str, str]) -> bool:
        return not (stop is not None and stop()) and _make(out_dir, *pair)

    # A bounded window of futures: one per image at once was 15 MB at 10,000 images.
    window = 8 * max(1, workers)
    pending: deque[tuple[str, Future[bool]]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for sha, image in todo.items():
            pending.append((sha, pool.submit(make, (image, sha))))
            if len(pending) >= window:
                sha, future = pending.popleft()
                if future.result():
                    have.add(sha)
        for sha, future in pending:
            if future.result():
                have.add(sha)
    return have
