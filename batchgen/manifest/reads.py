"""Bounded reads of manifests and ``rows:`` CSV files: a regular file of at most a cap.

A manifest is read whole before anything is checked, so a runaway file (a log pasted by
mistake, ``/dev/zero``, a FIFO nobody writes to) must be refused by its type and size,
not parsed for minutes or waited on forever.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

__all__ = ["MAX_CSV_BYTES", "MAX_YAML_BYTES", "Unreadable", "read_bounded", "read_stdin"]

# Pure-Python YAML composes about 1 MB a second, so 1 MiB keeps validation near a second;
# a hand-written manifest is a few KB, and long lists belong in a ``rows:`` CSV, which is
# read by the C csv module (64 MiB is 100,000 rows of over 600 bytes).
MAX_YAML_BYTES = 1 << 20
MAX_CSV_BYTES = 64 << 20


class Unreadable(Exception):
    """A file that is not read: missing, not a regular file, too large; the message says which.

    The message completes a sentence whose subject is the file (``is a FIFO ...``).
    """

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_bounded(path: Path, cap: int, what: str, hint: str = "") -> bytes:
    """The bytes of a regular file of at most ``cap`` bytes, or :class:`Unreadable`.

    Opened non-blocking so that a FIFO is refused instead of waiting for a writer; a
    device (``/dev/zero``) is refused by its type, a file growing while read by ``cap``.
    ``what`` names the file's role (``a YAML manifest``); ``hint`` ends the too-large message.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Unreadable("does not exist", missing=True) from None
    except OSError as exc:
        raise Unreadable(f"cannot be read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
            raise Unreadable(f"is {kind}; {what} must be a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= cap:
            chunk = os.read(fd, min(1 << 20, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise Unreadable(f"cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > cap:
        raise Unreadable(f"is larger than {_size(cap)}, the limit for {what}{hint}")
    return b"".join(chunks)


def read_stdin(cap: int) -> bytes:
    """Standard input, read to its end, of at most ``cap`` bytes, or :class:`Unreadable`.

    A terminal is refused: ``batchgen run -`` typed without a pipe would otherwise wait
    silently for a manifest to be typed in.
    """
    stream = sys.stdin
    if stream is None or stream.closed:
        raise Unreadable("is closed: - reads a manifest piped in")
    if stream.isatty():
        raise Unreadable("is a terminal: - reads a manifest piped in (... | batchgen run - --out DIR)")
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= cap:
            chunk = stream.buffer.read(min(1 << 20, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise Unreadable(f"standard input cannot be read: {exc.strerror or exc}") from None
    if size > cap:
        raise Unreadable(f"standard input is larger than {_size(cap)}, the limit for a manifest")
    return b"".join(chunks)


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n:,} bytes"
