"""The output lock: one ``batchgen run`` per output folder at a time.

:func:`lock_output` takes an exclusive ``flock`` on ``OUT/.lock`` (which holds the
owner's pid) for the whole run, so a second ``batchgen run`` on the same OUT fails at once
with :class:`~batchgen.errors.LockedError` instead of interleaving ledger lines.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from batchgen.errors import LockedError, UsageError
from batchgen.output.layout import LOCK_NAME

__all__ = ["lock_output"]


@contextmanager
def lock_output(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``OUT/.lock`` for the block; :class:`LockedError` if taken.

    The lock is ``flock``-based, so it dies with its process: a run killed with SIGKILL
    leaves no stale lock behind. The file holds the owner's pid for the error message.
    """
    lock_path = out_dir / LOCK_NAME
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # Never through a symlink: the lock file is truncated and written.
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{lock_path} is a symlink; batchgen writes nothing through it") from None
        raise UsageError(f"cannot use {out_dir} as the output directory: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise LockedError(f"another batchgen run is using {out_dir} (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield
        finally:
            # Leave the file in place (unlinking a lock file races with the next taker).
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

