"""The output folder checked once: nothing batchgen writes leaves it through a symlink."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path, PurePosixPath

from batchgen.errors import UsageError
from batchgen.output.layout import IMAGES_DIR, LEDGER_NAME

__all__ = ["check_output"]


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
    return root

