"""Image files under ``OUT/images``: written to ``.part``, verified, hashed, renamed into place.

A download goes to ``<final>.part`` (in memory while it is small) and is counted; on
:meth:`PartFile.commit` the bytes must be a whole image of the format they claim (a
truncated or corrupt file, an HTML page, another format: :class:`ImageInvalid`): a PNG or
JPEG by its structure (:mod:`batchgen.output.structure`: CRCs, IEND, EOI; no pixel is
decoded, which at Bria's 1024 px cost 5-17 ms of CPU an image), anything else decoded
completely by Pillow. Only then is the file renamed into place with :func:`os.replace`, so ``OUT/images`` never holds a
half-written image. On an exception or a cancellation the ``.part`` file is removed.
A failure to write (disk full, file size limit, permissions) is
:class:`~batchgen.errors.LocalWriteError`: the run's problem, not the download's.

The file's extension follows its real content (the last step of the output-path rule,
:func:`batchgen.manifest.paths.with_format_extension`): a JPEG answer for ``cat.png`` is saved as
``cat.jpg``. The path that was actually written is :attr:`SavedImage.file`; that is
what the ledger records.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import io
import logging
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import BinaryIO

import aiofiles
import anyio
from aiofiles.threadpool.binary import AsyncBufferedIOBase
from PIL import Image

from batchgen.output.embed import ImageInfo, embed
from batchgen.errors import ImageInvalid, LocalWriteError
from batchgen.manifest.paths import with_format_extension
from batchgen.output.layout import IMAGES_DIR, PART_SUFFIX
from batchgen.output.structure import PNG_SIGNATURE, StructureError, check_structure

__all__ = [
    "CONTENT_TYPE_FORMATS",
    "ImageInvalid",
    "PartFile",
    "SavedImage",
    "decode_data_uri",
    "file_matches",
    "open_part",
    "remove_stale_parts",
    "sha256_file",
]

log = logging.getLogger("batchgen")

SPILL = 4 * 1024 * 1024  # bytes of an image kept in memory before they go to its .part file

# Image MIME type -> Pillow format name (aliases servers are known to send included).
CONTENT_TYPE_FORMATS: dict[str, str] = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/pjpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/x-ms-bmp": "BMP",
    "image/tiff": "TIFF",
}


@dataclass(frozen=True, slots=True)
class SavedImage:
    """An image verified and renamed into place."""

    file: str  # relative to OUT, POSIX separators, e.g. "images/cat.jpg"
    sha256: str
    bytes: int
    format: str  # Pillow's name: "PNG", "JPEG", ...
    width: int
    height: int
    mtime_ns: int | None = None  # the file's modification time once in place (see file_matches)


def _resolve_inside(out_dir: Path, relpath: str) -> Path:
    """``out_dir/images/relpath``, refusing names that would escape ``images/``."""
    rel = PurePosixPath(relpath)
    if not relpath or rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"image path {relpath!r} must be relative and stay inside {IMAGES_DIR}/")
    return out_dir / IMAGES_DIR / rel


def _check_image(source: Path | bytes, claimed: str | None, label: str) -> tuple[str, int, int]:
    """Check the image (a file, or its bytes); (format, width, height) or ImageInvalid.

    PNG and JPEG (what the API serves) by their structure (:mod:`batchgen.output.structure`:
    every PNG chunk's CRC and IEND, every JPEG segment to EOI), without decoding a pixel;
    anything else is decoded completely by Pillow."""
    data = source.read_bytes() if isinstance(source, Path) else source
    head = data[:8]
    found = "PNG" if head == PNG_SIGNATURE else "JPEG" if head[:2] == b"\xff\xd8" else None
    if found is None:
        return _decode_image(data, claimed, label)
    if claimed is not None and claimed != found:
        raise ImageInvalid(f"{label}: the server said {claimed} but the data is {found}", file=label)
    try:
        shape = check_structure(data, found)
    except StructureError as exc:
        raise ImageInvalid(f"{label}: not a complete image ({exc})", file=label) from None
    return shape.format, shape.width, shape.height


def _decode_image(source: bytes, claimed: str | None, label: str) -> tuple[str, int, int]:
    """Decode the image completely (formats without a structure check); (format, width, height)."""

    def opened() -> Image.Image:
        return Image.open(io.BytesIO(source))

    try:
        with opened() as im:
            im.verify()  # checksums / structure (PNG CRCs)
        with opened() as im:
            im.load()  # every pixel: a truncated file fails here
            image_format = im.format or "unknown"
            width, height = im.size
    except Image.DecompressionBombError as exc:
        raise ImageInvalid(f"{label}: {exc}", file=label) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports bad data as any of these (UnidentifiedImageError is an OSError).
        raise ImageInvalid(f"{label}: not a complete image ({exc})", file=label) from None
    if claimed is not None and claimed != image_format:
        raise ImageInvalid(f"{label}: the server said {claimed} but the data is {image_format}", file=label)
    return image_format, width, height


def _embedded(
    data: bytes, image_format: str, info: ImageInfo, width: int, height: int, label: str
) -> bytes | None:
    """``data`` with ``info`` inserted, or None if it stays as it is."""
    try:
        return embed(data, image_format, info, width=width, height=height)
    except ValueError as exc:
        # The image passed its check; only its layout surprised us.
        log.warning("%s: parameters not embedded (%s)", label, exc)
        return None


def _write_all(file: BinaryIO, data: bytes) -> None:
    """Write all of ``data`` to an unbuffered file (a full disk takes only part of a write)."""
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _claimed_format(content_type: str | None) -> str | None:
    """The format a Content-Type announces, or None when it says nothing useful."""
    if not content_type:
        return None
    mime = content_type.split(";", 1)[0].strip().lower()
    # application/octet-stream and friends claim nothing; an unknown image/* type is
    # left to Pillow (it may well decode it).
    return CONTENT_TYPE_FORMATS.get(mime)


class PartFile:
    """An image being written to ``<final>.part``; an async context manager.

    Use::

        async with open_part(out_dir, "cat.png") as part:
            async for chunk in response.aiter_bytes():
                await part.write(chunk)
            saved = await part.commit(content_type=response.headers.get("content-type"))

    Leaving the block without a successful :meth:`commit` (an exception, a
    cancellation, or no commit at all) removes the ``.part`` file.
    """

    def __init__(self, out_dir: Path, relpath: str) -> None:
        """Use :func:`open_part`."""
        self.out_dir = out_dir
        self.relpath = relpath
        self.final_path = _resolve_inside(out_dir, relpath)
        self.part_path = self.final_path.with_name(self.final_path.name + PART_SUFFIX)
        self._open = False
        self._file: AsyncBufferedIOBase | None = None  # once the image outgrew SPILL
        self._pending = bytearray()  # written, not yet on disk
        self._spilled = False  # the image outgrew SPILL: its start is in the .part file
        self._size = 0
        self._saved: SavedImage | None = None

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    async def __aenter__(self) -> PartFile:
        self._open = True
        return self

    def _make_folder(self) -> None:
        """Create the image's folder; refuse one that resolves outside ``OUT/images``.

        :func:`batchgen.output.ledger.check_output` checked the folders at the start of the run;
        this catches a symlink made since, before anything is written through it.
        """
        folder = self.part_path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            images = (self.out_dir / IMAGES_DIR).resolve()
            if not folder.resolve().is_relative_to(images):
                raise LocalWriteError(
                    f"cannot write {self.part_path}: its folder leads outside {images} through a symlink",
                    path=str(self.part_path),
                    reason="symlink out of the images folder",
                )
        except OSError as exc:
            raise LocalWriteError.from_os_error("write", self.part_path, exc) from None

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk`` to the image.

        An image is kept in memory up to :data:`SPILL` bytes and written at
        :meth:`commit`, in the one worker-thread call that also verifies, embeds, hashes
        and renames it: thread hops are most of what saving a small image costs. A larger
        one streams to its ``.part`` file (aiofiles) from then on. Nothing is hashed as it
        streams in: the hash is of the file as saved, parameters embedded, so a hash of the
        download would be thrown away (1 ms of CPU for a 1.6 MiB PNG).
        """
        if not self._open:
            raise RuntimeError("PartFile used outside its `async with` block, or after commit")
        self._pending += chunk
        self._size += len(chunk)
        if len(self._pending) < SPILL:
            return
        data, self._pending = bytes(self._pending), bytearray()
        try:
            if self._file is None:
                # Shielded: cancelled during the threaded open, the file would be left open.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._make_folder)
                    self._file = await aiofiles.open(self.part_path, "wb", opener=_open_no_follow)
                    self._spilled = True
            assert self._file is not None
            await self._file.write(data)
        except OSError as exc:  # ENOSPC, EFBIG, EIO: the disk, not the download
            raise LocalWriteError.from_os_error("write", self.part_path, exc) from None

    async def commit(self, *, content_type: str | None = None, info: ImageInfo | None = None) -> SavedImage:
        """Verify the image and rename it into place; raises :class:`ImageInvalid` if bad.

        ``content_type`` is the server's Content-Type, if any: when it names an image
        type, the data must be that type. The final name follows the real format
        (:func:`batchgen.manifest.paths.with_format_extension`). ``info``, if given, is embedded
        in the file (:mod:`batchgen.output.embed`, pixels untouched) after it was verified;
        the sha256 and size are then those of the file as saved.
        """
        if not self._open:
            raise RuntimeError("PartFile.commit() called outside its `async with` block or twice")
        self._open = False
        label = f"{IMAGES_DIR}/{self.relpath}"
        if self._size == 0:
            raise ImageInvalid(f"{label}: empty download", file=label)
        data, self._pending = bytes(self._pending), bytearray()
        claimed = _claimed_format(content_type)
        with anyio.CancelScope(shield=True):  # renamed and recorded as saved, or neither
            if self._file is not None:
                file, self._file = self._file, None
                try:
                    await file.write(data)
                    await file.close()
                except OSError as exc:
                    raise LocalWriteError.from_os_error("write", self.part_path, exc) from None
            saved = await anyio.to_thread.run_sync(self._finish, data, claimed, label, info)
        self._saved = saved
        return saved

    def _finish(self, rest: bytes, claimed: str | None, label: str, info: ImageInfo | None) -> SavedImage:
        """In a worker thread: check, embed, write (all of ``rest``, or what embedding
        changed in a spilled file), rename."""
        spilled = self._spilled
        data = self.part_path.read_bytes() if spilled else rest
        image_format, width, height = _check_image(data, claimed, label)
        new = _embedded(data, image_format, info, width, height, label) if info is not None else None
        if new is not None:
            data = new
        digest, size = hashlib.sha256(data).hexdigest(), len(data)
        if new is not None or not spilled:
            if not spilled:
                self._make_folder()
            try:
                with open(self.part_path, "wb", buffering=0, opener=_open_no_follow) as file:
                    _write_all(file, data)
            except OSError as exc:
                raise LocalWriteError.from_os_error("write", self.part_path, exc) from None
        relpath = with_format_extension(self.relpath, image_format)
        final = _resolve_inside(self.out_dir, relpath)
        try:
            os.replace(self.part_path, final)
        except OSError as exc:
            raise LocalWriteError.from_os_error("rename into place", final, exc) from None
        self.final_path = final
        try:
            mtime_ns: int | None = os.stat(final).st_mtime_ns
        except OSError:
            mtime_ns = None  # only the fast resume check goes without it
        return SavedImage(
            file=f"{IMAGES_DIR}/{relpath}",
            sha256=digest,
            bytes=size,
            format=image_format,
            width=width,
            height=height,
            mtime_ns=mtime_ns,
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._saved is not None:
            return
        self._open = False
        self._pending = bytearray()
        # Cleanup must finish even when we are leaving because of a cancellation.
        with anyio.CancelScope(shield=True):
            if self._file is not None:
                file, self._file = self._file, None
                with contextlib.suppress(OSError):  # the flush of a file being thrown away
                    await file.close()
            with contextlib.suppress(OSError):  # never hide the error that brought us here
                await anyio.Path(self.part_path).unlink(missing_ok=True)


def _open_no_follow(path: str, flags: int) -> int:
    """``open()``'s opener for ``.part`` files: never through a symlink planted in their place."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o666)


def open_part(out_dir: Path, relpath: str) -> PartFile:
    """A :class:`PartFile` for ``out_dir/images/relpath`` (use it with ``async with``).

    ``relpath`` is the job's filename (relative to ``images/``); it may not be absolute
    or contain ``..`` (ValueError).
    """
    return PartFile(out_dir, relpath)


def remove_stale_parts(out_dir: Path) -> list[Path]:
    """Delete ``.part`` files a killed run left under ``OUT/images``; return what was removed.

    Only safe while holding the output lock (:func:`batchgen.output.ledger.lock_output`): no
    other run can be writing them then.
    """
    images = out_dir / IMAGES_DIR
    removed: list[Path] = []
    if not images.is_dir():
        return removed
    # rglob does not descend into symlinked folders; a .part that is itself a symlink is
    # removed too (the link, not its target), so nothing is ever written through it.
    for path in sorted(images.rglob("*" + PART_SUFFIX)):
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file's content."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_WHOLE_SECOND = 1_000_000_000


def file_matches(
    out_dir: Path, file: str, sha256: str, *, size: int | None = None, mtime_ns: int | None = None
) -> bool:
    """Whether ``out_dir/file`` exists and its content has the given sha256 (resume check).

    With the ``size`` and ``mtime_ns`` the ledger recorded when the file was saved, a file
    whose size and modification time are still exactly those is taken as unchanged
    without reading it: hashing every image of a 100,000-image folder on each rerun and
    ``batchgen status`` would read it all (about 150 GB at Bria's sizes). What this
    trusts: nothing rewrites an image with the same number of bytes *and* sets its
    modification time back to the nanosecond (``touch -r``, or ``cp -p`` / ``rsync -t``
    of another file of the same size, would), and after a power cut, a filesystem that
    does not show a file's new size before its data (ext4's default ``data=ordered``
    does not; images are not fsync'ed). A time in whole seconds (a filesystem that keeps
    no finer times, where a rewrite within the second would not show) is not trusted;
    any other difference, or no recorded time (older ledgers), is settled by the hash.
    """
    path = out_dir / file
    try:
        if size is not None and mtime_ns is not None and mtime_ns % _WHOLE_SECOND:
            found = os.stat(path)
            if found.st_size == size and found.st_mtime_ns == mtime_ns:
                return True
        return sha256_file(path) == sha256.lower()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return False


def decode_data_uri(uri: str, *, max_bytes: int | None = None) -> tuple[bytes, str | None]:
    """The bytes and media type of a ``data:`` URI (base64 or percent-encoded).

    Raises :class:`ImageInvalid` when ``uri`` is not a well-formed data URI, or when its
    length says it decodes to more than ``max_bytes``: judged before anything is decoded,
    so a 200 MB URI costs no 150 MB of memory to refuse.
    """
    if not uri[:5].lower() == "data:":
        raise ImageInvalid("not a data: URI")
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise ImageInvalid("data: URI without a comma")
    parts = [p.strip() for p in header.split(";")]
    is_base64 = len(parts) > 1 and parts[-1].lower() == "base64"
    media_type = parts[0].lower() if parts[0] else None
    if max_bytes is not None:
        # At least this many bytes once decoded (whitespace in base64 is ignored: counted out).
        if is_base64:
            size = (len(payload) - sum(map(payload.count, " \t\r\n="))) * 3 // 4
        else:
            size = len(payload) // 3  # "%xx" is the longest spelling of one byte
        if size > max_bytes:
            raise ImageInvalid(f"inline image of about {size:,} bytes is over the {max_bytes:,}-byte cap")
    if is_base64:
        try:
            data = base64.b64decode("".join(payload.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageInvalid(f"data: URI with invalid base64 ({exc})") from None
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageInvalid(f"inline image of {len(data):,} bytes is over the {max_bytes:,}-byte cap")
    return data, media_type
