"""Where a result says its image is: the image URL(s) in a model's ``output``, whatever its shape."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from batchgen.api.answer import Unreadable, parse_json

__all__ = ["find_image_urls"]


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/=\s_-]+")
# Magic numbers of the formats an image model can plausibly return.
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"RIFF", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


def _bare_base64_image(text: str) -> str | None:
    """A data URI for a bare base64 image, or None if ``text`` is not one."""
    if len(text) < 32 or not _BASE64_TEXT.fullmatch(text):
        return None
    compact = "".join(text.split())
    try:
        raw = base64.b64decode(compact + "=" * (-len(compact) % 4), altchars=b"-_", validate=False)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(_IMAGE_MAGIC):
        return None
    return "data:application/octet-stream;base64," + base64.b64encode(raw).decode("ascii")


def _candidates(output: Any, depth: int = 0) -> list[str]:
    """Every URL, data URI or base64 image found anywhere in ``output``, in document order."""
    if depth > 8:  # a provider body is shallow; deeper nesting is not worth following
        return []
    if isinstance(output, str):
        text = output.strip()
        lowered = text.lower()
        if lowered.startswith(("http://", "https://")):
            return [text]
        if lowered.startswith("data:"):
            return [text]
        if text[:1] in ("{", "[", '"'):
            try:
                inner = parse_json(text.encode("utf-8", "replace"))
            except Unreadable:
                return []
            return _candidates(inner, depth + 1)
        uri = _bare_base64_image(text)
        return [uri] if uri else []
    if isinstance(output, Mapping):
        found: list[str] = []
        for value in output.values():
            found.extend(_candidates(value, depth + 1))
        return found
    if isinstance(output, list | tuple):
        found = []
        for item in output:
            found.extend(_candidates(item, depth + 1))
        return found
    return []


def _looks_like_image(candidate: str) -> bool:
    lowered = candidate.lower()
    if lowered.startswith("data:"):
        return lowered.startswith(("data:image/", "data:application/octet-stream"))
    return urlsplit(lowered).path.endswith(_IMAGE_SUFFIXES)


def find_image_urls(output: Any) -> list[str]:
    """The image URL(s) in a model ``output``, whatever its shape, best first.

    Shapes handled (docs/segmind-api.md): a URL string, a list of URLs, a JSON object, a
    stringified JSON copy of the provider's body, a data URI, bare base64 image bytes
    (returned as a data URI). When some candidates look like images (an image file
    suffix or an image data URI) only those are returned, so that a provider body's
    other links (a status URL, a webhook) are not mistaken for the picture.
    """
    seen: dict[str, None] = {}
    for candidate in _candidates(output):
        seen.setdefault(candidate, None)
    candidates = list(seen)
    images = [c for c in candidates if _looks_like_image(c)]
    return images or candidates
