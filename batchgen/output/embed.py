"""Generation parameters inside every image, inserted at byte level: pixels are never re-encoded.

What goes in (:class:`ImageInfo`): the job's key, the request id, its index, the model,
every parameter as sent, its labels, the manifest's sha256 and, for a prompt made from a
template, the template as written (``Template:``, as sd-dynamic-prompts writes it). Two
forms of it:

- ``parameters``: A1111's "infotext" (what AUTOMATIC1111, ComfyUI's and Civitai's
  readers, ``sd-parsers`` and other "PNG info" tools show): the prompt, a line
  ``Negative prompt: ...``, then one line of ``Key: value`` pairs separated by ``, ``
  (a value holding ``,``, ``:`` or a newline is written as a JSON string)::

      Isometric greenhouse, pastel colors
      Negative prompt: no storms
      Steps: 30, Sampler: default, CFG scale: 5, Seed: 12, Size: 512x512, Model: bria-text-to-image, ...

  Bria has no sampler setting; ``Sampler: default`` (the model's own) is written because
  A1111 always writes one and some readers need it to recognise the format.
- ``batchgen``: the same facts as JSON (:meth:`ImageInfo.to_json`), for tools.

**PNG**: two text chunks, keywords ``parameters`` and ``batchgen``, inserted just before
the first ``IDAT`` (where A1111 writes them, so readers that stop at the image data
still find them): ``tEXt`` when the text is Latin-1, else ``iTXt`` (UTF-8). Text chunks
with those keywords already in the file are dropped, so embedding twice replaces.
``Image.open(p).info["parameters"]`` reads it.

**JPEG**: the infotext in an EXIF ``UserComment`` (``UNICODE`` prefix, UTF-16), where
A1111 writes it and its readers look, unless the file already carries EXIF (it is then
left as it is: rewriting another writer's EXIF is not byte-level); and the JSON in a
``COM`` segment (``Image.open(p).info["comment"]``). Both go after the leading
``APPn`` segments (JFIF's ``APP0`` must stay first).

Any other format (the API documents PNG or JPEG URLs) is left untouched: :func:`embed`
returns None.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from batchgen.manifest.template import render_value
from batchgen.output.structure import PNG_SIGNATURE, png_chunks

__all__ = [
    "INFO_KEY",
    "PARAMETERS_KEY",
    "ImageInfo",
    "embed",
    "infotext",
    "read_info",
]

PARAMETERS_KEY = "parameters"
INFO_KEY = "batchgen"

# A1111 names for Bria's parameters, in the order A1111 writes its own first.
_INFOTEXT_NAMES: tuple[tuple[str, str], ...] = (
    ("steps_num", "Steps"),
    ("text_guidance_scale", "CFG scale"),
    ("seed", "Seed"),
    ("mode", "Mode"),
    ("aspect_ratio", "Aspect ratio"),
    ("medium", "Medium"),
    ("prompt_enhancement", "Prompt enhancement"),
    ("enhance_image", "Enhance image"),
    ("prompt_content_moderation", "Prompt content moderation"),
    ("content_moderation", "Content moderation"),
    ("ip_signal", "IP signal"),
)

_FREE_TEXT = frozenset({"prompt", "negative_prompt"})  # written on lines of their own
_PNG_TEXT_TYPES = (b"tEXt", b"iTXt", b"zTXt")
_SEGMENT_MAX = 65533  # a JPEG segment's payload: a 16-bit length that counts itself


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageInfo:
    """What a saved image carries about how it was made."""

    key: str
    request_id: str | None
    index: int
    model: str
    params: Mapping[str, Any]
    labels: Mapping[str, Any] = field(default_factory=dict)
    manifest_sha256: str | None = None
    version: str = ""
    template: str | None = None  # the prompt as written, when the prompt was made from it

    def to_json(self) -> dict[str, Any]:
        """The ``batchgen`` chunk's JSON object."""
        out = {
            "batchgen": self.version,
            "key": self.key,
            "request_id": self.request_id,
            "index": self.index,
            "model": self.model,
            "params": dict(self.params),
            "labels": dict(self.labels),
            "manifest_sha256": self.manifest_sha256,
        }
        if self.template is not None:
            out["template"] = self.template
        return out


def _quote(value: object) -> str:
    """A1111's quoting of one infotext value."""
    text = render_value(value)
    if "," in text or ":" in text or "\n" in text or '"' in text:
        return json.dumps(text, ensure_ascii=False)
    return text


def infotext(info: ImageInfo, *, width: int, height: int) -> str:
    """A1111's "parameters" text for an image of ``width`` x ``height``."""
    params = info.params
    pairs: list[tuple[str, object]] = []
    names = dict(_INFOTEXT_NAMES)
    for name, label in _INFOTEXT_NAMES[:3]:
        if name in params:
            pairs.append((label, params[name]))
        if name == "steps_num":
            pairs.append(("Sampler", "default"))
    pairs.append(("Size", f"{width}x{height}"))
    pairs.append(("Model", info.model))
    for name, label in _INFOTEXT_NAMES[3:]:
        if name in params:
            pairs.append((label, params[name]))
    pairs.extend((names.get(k, k), v) for k, v in params.items() if k not in names and k not in _FREE_TEXT)
    if info.template is not None:
        pairs.append(("Template", info.template))
    if info.request_id:
        pairs.append(("Request id", info.request_id))
    if info.version:
        pairs.append(("Version", f"batchgen {info.version}"))
    lines = [render_value(params.get("prompt", ""))]
    negative = params.get("negative_prompt")
    if negative:
        lines.append(f"Negative prompt: {render_value(negative)}")
    lines.append(", ".join(f"{label}: {_quote(value)}" for label, value in pairs))
    return "\n".join(lines)


# --- PNG --------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_text(keyword: str, text: str) -> bytes:
    """A tEXt chunk if ``text`` is Latin-1, else an uncompressed iTXt (UTF-8)."""
    key = keyword.encode("latin-1")
    try:
        return _png_chunk(b"tEXt", key + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:
        # keyword, null, compression flag 0, method 0, empty language tag and translated keyword
        return _png_chunk(b"iTXt", key + b"\0\0\0\0\0" + text.encode("utf-8"))


def _png_keyword(data: bytes, start: int) -> bytes:
    (length,) = struct.unpack(">I", data[start : start + 4])
    body = data[start + 8 : start + 8 + length]
    return body.split(b"\0", 1)[0]


def _embed_png(data: bytes, texts: Mapping[str, str]) -> bytes:
    chunks = png_chunks(data)
    first_idat = next((start for start, _, kind in chunks if kind == b"IDAT"), None)
    if first_idat is None:
        raise ValueError("PNG without image data")
    keywords = {k.encode("latin-1") for k in texts}
    out = [data[: len(PNG_SIGNATURE)]]
    for start, end, kind in chunks:
        if start == first_idat:
            out.extend(_png_text(k, v) for k, v in texts.items())
        if kind in _PNG_TEXT_TYPES and _png_keyword(data, start) in keywords:
            continue  # an earlier copy of ours: replaced
        out.append(data[start:end])
    out.append(data[chunks[-1][1] :])  # anything after IEND, kept as it was
    return b"".join(out)


# --- JPEG -------------------------------------------------------------------------


def _exif_user_comment(text: str) -> bytes:
    """An APP1 Exif payload holding only ExifIFD.UserComment (UNICODE, UTF-16 big-endian)."""
    comment = b"UNICODE\0" + text.encode("utf-16-be")
    # TIFF header (big-endian), IFD0 at 8 with one entry: the Exif IFD pointer (0x8769).
    exif_ifd = 8 + 2 + 12 + 4
    ifd0 = struct.pack(">H", 1) + struct.pack(">HHII", 0x8769, 4, 1, exif_ifd) + struct.pack(">I", 0)
    # Exif IFD with one entry: UserComment (0x9286), UNDEFINED (7), its bytes after the IFD.
    data_at = exif_ifd + 2 + 12 + 4
    exif = (
        struct.pack(">H", 1) + struct.pack(">HHII", 0x9286, 7, len(comment), data_at) + struct.pack(">I", 0)
    )
    return b"Exif\0\0" + b"MM\0\x2a" + struct.pack(">I", 8) + ifd0 + exif + comment


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _embed_jpeg(data: bytes, parameters: str, info_json: str) -> bytes:
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    pos = 2
    has_exif = False
    # Skip the leading APPn segments (APP0 JFIF must stay first); drop our own old COM.
    while pos + 4 <= len(data) and data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xEF:
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if data[pos + 1] == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\0\0":
            has_exif = True
        pos += 2 + length
    if pos > len(data):
        raise ValueError("truncated JPEG segment")
    rest = data[pos:]
    ours = info_json.encode("utf-8")
    # A COM segment of ours right here is from an earlier embed: replace it.
    if rest[:2] == b"\xff\xfe":
        (length,) = struct.unpack(">H", rest[2:4])
        if rest[4 : 4 + len(b'{"batchgen"')] == b'{"batchgen"':
            rest = rest[2 + length :]
    inserted = b""
    exif = _exif_user_comment(parameters)
    if not has_exif and len(exif) <= _SEGMENT_MAX:
        inserted += _jpeg_segment(0xE1, exif)
    if len(ours) <= _SEGMENT_MAX:
        inserted += _jpeg_segment(0xFE, ours)
    return data[:pos] + inserted + rest


# --- entry points -----------------------------------------------------------------


def embed(data: bytes, image_format: str, info: ImageInfo, *, width: int, height: int) -> bytes | None:
    """``data`` with ``info`` inserted, or None for a format that is left untouched.

    ``image_format`` is Pillow's name of the decoded format (``"PNG"``, ``"JPEG"``).
    Raises ValueError when the file's structure is not what its format says.
    """
    parameters = infotext(info, width=width, height=height)
    info_json = json.dumps(info.to_json(), ensure_ascii=False, separators=(",", ":"))
    if image_format == "PNG":
        return _embed_png(data, {PARAMETERS_KEY: parameters, INFO_KEY: info_json})
    if image_format == "JPEG":
        return _embed_jpeg(data, parameters, info_json)
    return None


def read_info(path: Path) -> dict[str, Any] | None:
    """The ``batchgen`` JSON embedded in an image file, or None if it has none."""
    try:
        with Image.open(path) as im:
            raw = im.info.get(INFO_KEY)
            if raw is None and im.format == "JPEG":
                raw = im.info.get("comment")
    except (OSError, ValueError):
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        return None
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and INFO_KEY in obj else None
