"""Temporary files under OUT: one naming for every file written whole and renamed into place,
and the removal of those a killed process left behind.

``summary.json``, ``report.html``, each thumbnail and each contact sheet PNG is written
to ``.<name>.<pid>.tmp`` next to it (:func:`temporary_path`) and renamed over its name,
so a reader sees the old file or the new one, never half of one. A ``kill -9`` between
the two leaves the temporary; :func:`remove_stale_temporaries`, called by a run holding
the output lock, removes the ones of that naming whose process is gone (a ``batchgen
report`` still writing its own, which takes no lock, is left alone) and nothing else.
Images have their own ``<name>.part`` (:mod:`batchgen.output.images`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from batchgen.output.layout import GRIDS_DIR, THUMBS_DIR

__all__ = ["remove_stale_temporaries", "replace_whole", "temporary_path"]

_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>[0-9]{1,10})\.tmp")
# Where temporaries are written, relative to OUT ("": OUT itself).
_FOLDERS = ("", THUMBS_DIR, GRIDS_DIR)


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: ``.<name>.<pid>.tmp`` beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def replace_whole(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` whole: ``write(temporary)``, then rename the temporary over ``path``.
    On any failure (or cancellation) the temporary is removed and the error raised."""
    temporary = temporary_path(path)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is not None and os.fspath(exc.filename) == str(temporary):
            exc.filename = str(path)  # the file the user knows, not its temporary
        raise


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (0 and numbers no pid can be: no)."""
    if pid == os.getpid():
        return True
    if not 0 < pid < 2**31:  # kill(0, ...) would mean the process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """Delete the temporaries (``.<name>.<pid>.tmp``) of processes that are gone, in OUT,
    ``thumbs/`` and ``grids/``; return what was removed. Call it holding the output lock."""
    removed: list[Path] = []
    for folder in _FOLDERS:
        where = out_dir / folder if folder else out_dir
        if where.is_symlink() or not where.is_dir():
            continue
        with os.scandir(where) as entries:
            for entry in entries:
                found = _TEMPORARY.fullmatch(entry.name)
                if found is None or _alive(int(found["pid"])):
                    continue
                if entry.is_symlink() or entry.is_file(follow_symlinks=False):
                    path = Path(entry.path)
                    path.unlink(missing_ok=True)  # a symlink: the link, never its target
                    removed.append(path)
    return sorted(removed)
