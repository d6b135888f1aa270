"""The run name (``name:`` in a manifest): the name of the output folder ``output/<name>/``.

A run name is used as written (it is not cleaned the way a filename is), so a name no
folder can hold is refused at ``validate``, located, rather than failing when the run
makes its folder. :func:`run_name_problem` is the rule:

- letters, marks and digits of any script (``ünï-名前``), and ``.``, ``_``, ``-``: no
  path separator, space, control character or other punctuation;
- it starts with a letter, a digit or ``_`` (a leading ``.`` hides the folder, or is
  ``..``; a leading ``-`` reads as an option in a shell) and does not end with ``.``
  (Windows drops it, so ``a.`` and ``a`` would be one folder);
- not a Windows device name, with or without an extension (``CON``, ``nul.x``:
  :data:`~batchgen.manifest.paths.WINDOWS_RESERVED`, the filenames' rule);
- at most :data:`MAX_RUN_NAME_BYTES` bytes of UTF-8: ext4, APFS and NTFS hold 255 per
  name (bytes, or UTF-16 units, which are never more than UTF-8 bytes), and a shard's
  default folder adds ``-shard-K-of-N``.
"""

from __future__ import annotations

import unicodedata

from batchgen.manifest.paths import WINDOWS_RESERVED
from batchgen.manifest.shard import MAX_SHARDS, Shard

__all__ = ["MAX_RUN_NAME_BYTES", "NAME_MAX_BYTES", "run_name_problem"]

NAME_MAX_BYTES = 255  # one folder name (ext4, APFS, NTFS)
# The longest a shard's default folder adds: "-shard-999999-of-999999".
MAX_RUN_NAME_BYTES = NAME_MAX_BYTES - len(Shard(MAX_SHARDS, MAX_SHARDS).suffix)
_PUNCTUATION = frozenset("._-")


def _kept(ch: str) -> bool:
    """Whether ``ch`` may be in a run name: a letter, mark or digit of any script, or ``. _ -``."""
    return ch in _PUNCTUATION or unicodedata.category(ch)[0] in "LMN"


def run_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a run name (a folder name on every OS), or None if it can."""
    if not name:
        return "is empty"
    refused = [ch for ch in dict.fromkeys(name) if not _kept(ch)]
    if refused:
        shown = ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in refused[:5])
        return (
            f"holds {shown}: only letters and digits (of any script), '.', '_', '-' and {{date}} may be in it"
        )
    if not (name[0] == "_" or unicodedata.category(name[0])[0] in "LN"):
        return f"starts with {name[0]!r}: it must start with a letter, a digit or '_'"
    if name.endswith("."):
        return "ends with '.', which Windows drops from a folder name"
    if name.split(".", 1)[0].lower() in WINDOWS_RESERVED:
        return f"is a device name on Windows ({name.split('.', 1)[0]}), which no folder may be called"
    size = len(name.encode("utf-8"))
    if size > MAX_RUN_NAME_BYTES:
        return (
            f"is {size:,} bytes long in UTF-8, over the {MAX_RUN_NAME_BYTES} a run name may have:"
            f" a folder name holds {NAME_MAX_BYTES}, and a shard's folder adds -shard-K-of-N"
        )
    return None
