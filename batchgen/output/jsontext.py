"""JSON as batchgen writes it (ledger lines, ``summary.json``, the report's data, JSON log
lines): strict JSON that any parser reads, and never the API key.

Python's :func:`json.dumps` writes ``NaN`` and ``Infinity`` by default, which is not JSON:
Node's ``JSON.parse``, ``jq`` and most log shippers reject the whole line. :func:`dumps`
writes with ``allow_nan=False``; should a figure that is not finite reach it anyway, it
is written as ``null`` (and said once) rather than the file be left unwritten. Then the
API key, if the text holds it, is replaced by ``***`` (:func:`batchgen.api.key.redact`):
the last line of defence for error text copied from elsewhere.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

from batchgen.api.key import redact

__all__ = ["dumps"]

log = logging.getLogger("batchgen")

_said = False


def _finite(value: Any) -> Any:
    """``value`` with every float that is not finite replaced by None (containers copied)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def dumps(
    value: Any,
    *,
    indent: int | None = None,
    compact: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> str:
    """``value`` as strict JSON text (UTF-8 characters as themselves), the key taken out.

    ``compact``: no spaces after separators (one ledger line); ``default`` as
    :func:`json.dumps`'s.
    """
    options: dict[str, Any] = {
        "ensure_ascii": False,
        "allow_nan": False,
        "indent": indent,
        "default": default,
        "separators": (",", ":") if compact else None,
    }
    try:
        text = json.dumps(value, **options)
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise
        global _said
        if not _said:
            _said = True
            log.warning("a figure that is not a number (NaN or infinite) was written as null")
        text = json.dumps(_finite(value), **options)
    return redact(text)
