"""The output-path rule: where a job's image goes under ``OUT/images``, in one place.

A job's filename is its manifest's ``output.filename`` template rendered with the
job's values, in three steps:

1. **Each substituted value is cleaned** (:func:`clean_value`) before it goes into the
   template: a ``/`` or ``\\`` inside a value becomes ``_``, so only a ``/`` written in
   the template itself makes a folder (``"Acai bowl / smoothie cup"`` is one name,
   ``SKU/021`` is ``SKU_021``).
2. **The rendered text becomes a safe relative path** (:func:`output_path`): it is
   NFC-normalised; ``/`` and ``\\`` written in the template separate folders; letters,
   marks and digits of every script are kept (``日本の急須`` stays ``日本の急須``), and
   so is any other character every common filesystem accepts; what one of them refuses
   (``< > : " | ? *``, control and bidi-control characters) and whitespace (for shells
   and URLs) becomes ``_``, a run of them and the ``_`` around it one ``_``. Empty, ``.``
   and ``..`` segments are dropped and leading dots removed, so a path can never leave
   the images folder nor hide; Windows device names (``CON``, ``LPT1``, ``COM¹``,
   ``CONIN$``...: :data:`WINDOWS_RESERVED`) get a ``_`` prefix. The extension is
   settled: an image extension is lower-cased, a name without one gets ``.png``. A
   segment longer than :data:`SEGMENT_MAX_BYTES` bytes of UTF-8 is shortened keeping a
   short hash of the whole segment (``<start>-1a2b3c4d.png``), so names that differ only
   at the end stay distinct. A path of more than :data:`MAX_DEPTH` segments (folders and
   file) is refused (:class:`PathTooDeep`): with the segment limit, no path is longer than
   :data:`MAX_PATH_BYTES`, so with room for ``OUT/images/`` it stays under Linux's
   PATH_MAX of 4,096 bytes, and a template thousands of folders deep is an error at
   ``validate``, not a failure after the image is paid for.
3. **The extension follows the image actually received** (:func:`with_format_extension`,
   applied by :mod:`batchgen.output.images` when the image is saved): a JPEG answer for
   ``cat.png`` is saved as ``cat.jpg``.

Because of 3, and because macOS and Windows ignore case in names, two paths are *one
file* when they are equal ignoring case and the image extension: :func:`clash_key` is
what :mod:`batchgen.manifest.expand` compares to refuse a manifest whose jobs would overwrite
each other (``a`` and ``a.png``, ``ABC-1`` and ``abc-1``, ``x.png`` and ``x.jpg``).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from batchgen.manifest.template import render_value

__all__ = [
    "DEFAULT_EXTENSION",
    "FORMAT_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "MAX_DEPTH",
    "MAX_PATH_BYTES",
    "SEGMENT_MAX_BYTES",
    "WINDOWS_RESERVED",
    "PathTooDeep",
    "clash_key",
    "clean_value",
    "image_extension",
    "output_path",
    "with_format_extension",
]

# Pillow format name -> accepted extensions, canonical first.
FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg"),
    "WEBP": (".webp",),
    "GIF": (".gif",),
    "BMP": (".bmp",),
    "TIFF": (".tif", ".tiff"),
}
IMAGE_EXTENSIONS = frozenset(ext for exts in FORMAT_EXTENSIONS.values() for ext in exts)
DEFAULT_EXTENSION = ".png"
# ext4, APFS and NTFS allow 255 (bytes or UTF-16 units) per name; this leaves room for
# the ".part" suffix of downloads and for deep folder trees on Windows.
SEGMENT_MAX_BYTES = 120
# Folders and file of one path: an output tree needs a handful (date/category/style/name).
MAX_DEPTH = 24
MAX_PATH_BYTES = MAX_DEPTH * (SEGMENT_MAX_BYTES + 1) - 1  # 2,903: the segments and their slashes
_HASH_HEX = 8

_REFUSED = frozenset('<>:"/\\|?*')  # by Windows filesystems (NTFS, FAT, exFAT), and / everywhere
_KEPT_FORMAT_CHARS = frozenset("\u200c\u200d")  # zero-width (non-)joiners: parts of words and emoji
# The same rule for ASCII text, as one regex (most names are ASCII; this is the fast path):
# a run of replaced characters, with the underscores around it.
_ASCII_RUN = re.compile(r'_*(?:[\x00-\x20\x7f<>:"|?*]+_*)+')
# Device names Windows will not create a file under, with any extension (lower case):
# Microsoft's "Naming Files, Paths, and Namespaces" lists COM0-9 and LPT0-9 with the
# superscript digits ¹ ² ³, and the console's CONIN$ and CONOUT$ open the console too.
_PORT_DIGITS = "0123456789\u00b9\u00b2\u00b3"
WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$"]
    + [f"{port}{digit}" for port in ("com", "lpt") for digit in _PORT_DIGITS]
)


class PathTooDeep(ValueError):
    """A rendered filename makes more than :data:`MAX_DEPTH` segments; the message says so."""


def clean_value(value: object) -> str:
    """A value as substituted into the filename template: its ``/`` and ``\\`` become ``_``."""
    return render_value(value).replace("/", "_").replace("\\", "_")


def _unsafe(ch: str) -> bool:
    """Whether ``ch`` is replaced: refused by a common filesystem, invisible, or whitespace."""
    if ch in _REFUSED or ch.isspace():
        return True
    category = unicodedata.category(ch)
    if category[0] == "Z":
        return True
    # Control, format (bidi overrides could disguise an extension), surrogate, private
    # use, unassigned.
    return category[0] == "C" and ch not in _KEPT_FORMAT_CHARS


def _clean_segment(raw: str) -> str:
    if raw.isascii():
        segment = _ASCII_RUN.sub("_", raw)
    else:
        segment = _clean_unicode(raw)
    segment = segment.lstrip("._-").rstrip("._")
    if segment.split(".", 1)[0].lower() in WINDOWS_RESERVED:
        segment = "_" + segment
    return segment


def _clean_unicode(raw: str) -> str:
    out: list[str] = []
    pending = False  # inside a run of replaced characters (and the underscores next to them)
    for ch in raw:
        if _unsafe(ch):
            pending = True
            while out and out[-1] == "_":
                out.pop()
            continue
        if pending:
            if ch == "_":
                continue
            out.append("_")
            pending = False
        out.append(ch)
    if pending:
        out.append("_")
    return "".join(out)


def image_extension(name: str) -> str:
    """The image extension of ``name`` in lower case (``".png"``), or ``""`` if it has none."""
    dot = name.rfind(".")
    if dot < 0 or "/" in name[dot:]:
        return ""
    suffix = name[dot:].lower()
    return suffix if suffix in IMAGE_EXTENSIONS else ""


def _shorten(segment: str, suffix: str) -> str:
    """``segment`` (its ``suffix`` kept) cut to SEGMENT_MAX_BYTES with a hash of the whole."""
    if len(segment) * 4 <= SEGMENT_MAX_BYTES or len(segment.encode("utf-8")) <= SEGMENT_MAX_BYTES:
        return segment  # (at most 4 bytes a character)
    digest = hashlib.sha256(segment.encode("utf-8")).hexdigest()[:_HASH_HEX]
    stem = segment[: len(segment) - len(suffix)] if suffix else segment
    room = SEGMENT_MAX_BYTES - len(suffix.encode("utf-8")) - 1 - _HASH_HEX
    cut = stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip("._-")
    return f"{cut}-{digest}{suffix}"


_FOLDERS: dict[str, tuple[str, ...]] = {}  # a rendered folder path -> its cleaned segments


def output_path(rendered: str) -> str:
    """THE output-path rule: a rendered filename template made into a safe relative POSIX path.

    ``rendered`` must have had its values cleaned by :func:`clean_value`; see the module
    docstring for what is kept and replaced. Never empty (``image.png`` at worst), never
    absolute, never with a ``..``, never more than :data:`MAX_DEPTH` segments
    (:class:`PathTooDeep`); the last segment always has an image extension.
    """
    text = unicodedata.normalize("NFC", rendered).replace("\\", "/")
    folder, _, name = text.rpartition("/")
    # Many jobs share a folder (``{color}/...``): its segments are cleaned once.
    folders = _FOLDERS.get(folder)
    if folders is None:
        folders = tuple(segment for segment in map(_clean_segment, folder.split("/")) if segment)
        if len(_FOLDERS) >= 10_000:
            _FOLDERS.clear()
        _FOLDERS[folder] = folders
    parts = list(folders)
    segment = _clean_segment(name)
    if segment:
        parts.append(segment)
    if len(parts) > MAX_DEPTH:
        raise PathTooDeep(
            f"makes a path {len(parts):,} levels deep (folders and file), more than the {MAX_DEPTH} allowed:"
            " the filesystem would refuse it once the image is paid for; use fewer / in the template"
        )
    if not parts:
        parts = ["image"]
    last = parts[-1]
    suffix = image_extension(last)
    if suffix:
        last = last[: -len(suffix)] + suffix
    else:
        suffix = DEFAULT_EXTENSION
        last += suffix
    parts[-1] = last
    return "/".join([*(_shorten(p, "") for p in parts[:-1]), _shorten(last, suffix)])


def clash_key(path: str) -> str:
    """What makes two output paths one file: equal ignoring case and the image extension."""
    suffix = image_extension(path)
    stem = path[: -len(suffix)] if suffix else path
    return unicodedata.normalize("NFC", stem.casefold())


def with_format_extension(relpath: str, image_format: str) -> str:
    """``relpath`` with an extension of ``image_format`` (Pillow's name: ``"JPEG"``).

    A matching extension is kept as written (``cat.jpeg`` for a JPEG); a wrong image
    extension is replaced by the format's canonical one (``cat.png`` -> ``cat.jpg``); a
    name without an image extension gets it appended. A format without a known extension
    leaves the name alone.
    """
    accepted = FORMAT_EXTENSIONS.get(image_format)
    if accepted is None:
        return relpath
    suffix = image_extension(relpath)
    if suffix in accepted:
        return relpath
    if suffix:
        return relpath[: -len(suffix)] + accepted[0]
    return relpath + accepted[0]
