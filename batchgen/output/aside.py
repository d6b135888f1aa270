"""Set images aside: move files out of ``OUT/images/`` into ``OUT/removed/<UTC time>/``.

``batchgen tidy`` uses it for the images of jobs no longer in the manifest, which a
rerun leaves where they are (indistinguishable, in the folder, from current ones). A
file keeps its path under ``images/`` inside the new folder, so nothing is overwritten
and a file can be moved back by hand; nothing is deleted unless asked. Call it holding
:func:`~batchgen.output.lock.lock_output`: no run may be writing the folder meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from batchgen.errors import LocalWriteError, UsageError
from batchgen.output.layout import IMAGES_DIR, REMOVED_DIR

__all__ = ["set_aside"]


def _folder(root: Path, now: float) -> Path:
    """A new ``OUT/removed/<UTC time>/`` (``-2``, ``-3`` if one that second exists)."""
    removed = root / REMOVED_DIR
    if os.path.lexists(removed) and not removed.resolve().is_relative_to(root):
        raise UsageError(f"{removed} leads outside {root}; batchgen moves nothing through it")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    for n in range(1, 1000):
        folder = removed / (stamp if n == 1 else f"{stamp}-{n}")
        if not os.path.lexists(folder):
            return folder
    raise UsageError(f"{removed}: too many folders named {stamp}")


def _prune_empty(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``stop`` while they are empty."""
    while folder != stop and folder.is_relative_to(stop):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def set_aside(out_dir: Path, files: Sequence[str], *, now: float, delete: bool = False) -> Path | None:
    """Move each of ``files`` (relative to OUT, under ``images/``) to ``OUT/removed/<UTC time>/``
    under the same path, or delete them with ``delete``; the folder they went to (None if deleted).

    Folders under ``images/`` left empty are removed. Raises
    :class:`~batchgen.errors.UsageError` for a file not under ``images/`` and
    :class:`~batchgen.errors.LocalWriteError` if one cannot be moved (those before it are moved).
    """
    root = out_dir.resolve()
    images = root / IMAGES_DIR
    paths = []
    for file in files:
        relative = PurePosixPath(file)
        if relative.parts[:1] != (IMAGES_DIR,) or ".." in relative.parts:
            raise UsageError(f"{file}: not under {IMAGES_DIR}/")
        paths.append((root / file, PurePosixPath(*relative.parts[1:])))
    target = None if delete else _folder(root, now)
    for source, under in paths:
        try:
            if target is None:
                source.unlink()
            else:
                destination = target / under
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.rename(source, destination)  # one filesystem (both under OUT): atomic
        except OSError as exc:
            raise LocalWriteError.from_os_error("delete" if delete else "move aside", source, exc) from None
        with contextlib.suppress(OSError):
            _prune_empty(source.parent, images)
    return target
