"""The output folder checked once: nothing batchgen writes leaves it through a symlink,
and every image's path fits the filesystem's limit."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path, PurePosixPath

from batchgen.errors import UsageError
from batchgen.manifest.paths import SEGMENT_MAX_BYTES
from batchgen.output.layout import IMAGES_DIR, LEDGER_NAME, PART_SUFFIX

# What a file name under a folder can take: SEGMENT_MAX_BYTES, an extension that grows when
# the image's format sets it (.png -> .webp), and the ``.part`` of the download.
_FILE_ROOM = SEGMENT_MAX_BYTES + 8 + len(PART_SUFFIX)
PATH_MAX = 4096  # Linux's; the filesystem's own is asked first

__all__ = ["PATH_MAX", "check_output"]


def check_output(out_dir: Path, folders: Collection[str] = ()) -> Path:
    """The output folder resolved, once it is checked that nothing written leaves it.

    OUT itself may be a symlink (the user chose where it points); inside it, ``images/``,
    the ledger and, for each of ``folders`` (the folders of the jobs' files, relative to
    ``images/``) that exists already, that folder must resolve inside OUT. Otherwise a
    :class:`~batchgen.errors.UsageError` names the symlink: images would be written, and
    the ledger appended, somewhere the user never named. Call it holding :func:`lock_output`.
    """
    root = out_dir.resolve()
    images = root / IMAGES_DIR
    checks = [(images, root), (root / LEDGER_NAME, root)]
    prefixes: set[PurePosixPath] = set()
    for folder in folders:
        parts = PurePosixPath(folder).parts
        prefixes.update(PurePosixPath(*parts[: i + 1]) for i in range(len(parts)))
    checks.extend((images / prefix, images) for prefix in sorted(prefixes))
    for path, inside in checks:
        if not os.path.lexists(path):
            continue
        try:
            target = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            raise UsageError(f"cannot resolve {out_dir / path.relative_to(root)}: {exc}") from None
        shown = out_dir / path.relative_to(root)
        if not target.is_relative_to(inside.resolve()):
            raise UsageError(
                f"{shown} leads to {target}, outside {out_dir}; batchgen writes nothing through it"
                " (replace the symlink with a folder, or pass that folder as --out)"
            )
        if inside == images and not target.is_dir():
            raise UsageError(f"{shown} is not a folder, but the manifest's filenames put images in it")
    if os.path.lexists(images) and not images.is_dir():
        raise UsageError(f"{out_dir / IMAGES_DIR} is not a folder")
    ledger = root / LEDGER_NAME
    if os.path.lexists(ledger) and not ledger.is_file():
        raise UsageError(f"{out_dir / LEDGER_NAME} is not a regular file")
    _check_lengths(root, out_dir, folders)
    return root


def _path_max(root: Path) -> int:
    """The longest path the filesystem of ``root`` opens, in bytes (with its NUL)."""
    try:
        return os.pathconf(root, "PC_PATH_MAX")
    except (OSError, ValueError):  # not a POSIX system, or the filesystem does not say
        return PATH_MAX


def _check_lengths(root: Path, out_dir: Path, folders: Collection[str]) -> None:
    """UsageError if an image of one of ``folders`` could get a path longer than the
    filesystem opens: under a deep OUT, the run would pay for images it cannot write."""
    limit = _path_max(root) - 1  # the limit counts the terminating NUL
    images = os.fsencode(root / IMAGES_DIR)
    for folder in {"", *folders}:
        length = len(images) + len(os.fsencode(folder)) + 2 + _FILE_ROOM  # two slashes
        if length > limit:
            where = f"{IMAGES_DIR}/{folder}/" if folder else f"{IMAGES_DIR}/"
            raise UsageError(
                f"an image under {out_dir / where} could have a path of {length:,} bytes, more than this"
                f" filesystem opens ({limit:,}): choose a shorter --out, or fewer folders in output.filename"
            )

