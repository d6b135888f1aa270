"""batchgen's log lines on stderr: an ISO-8601 UTC timestamp and a level on every line,
as text or as one JSON object per line (for log shippers).

Text: ``2026-12-01T22:03:51.123Z INFO progress: 8/12 done, ...``. JSON:
``{"ts": "2026-12-01T22:03:51.123Z", "level": "info", "message": "progress: ...",
"progress": {...}}``: the fields a line passes as ``extra={"fields": {...}}`` are merged
in. Lines go through ``tqdm.write`` so they never tear a progress bar.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

from batchgen.api.key import redact
from batchgen.output.jsontext import dumps

# The ledger's own timestamp format, so a log line and the ledger line it explains match.
from batchgen.output.ledger import format_ts

__all__ = ["LOG_FORMATS", "JsonFormatter", "TextFormatter", "configure", "configured"]

LOG_FORMATS = ("text", "json")
LogFormat = Literal["text", "json"]

_LOGGER = "batchgen"


class TextFormatter(logging.Formatter):
    """``<ISO time> <LEVEL> <message>``, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one text line (a multi-line message keeps its first line's prefix)."""
        return f"{format_ts(record.created)} {record.levelname} {record.getMessage()}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``message`` and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (newlines inside the message are escaped)."""
        line: dict[str, object] = {
            "ts": format_ts(record.created),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update({k: v for k, v in fields.items() if k not in line})
        return dumps(line, default=str)  # strict JSON, the key taken out


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            # The whole line, a traceback included, without the key: the logger's own filter
            # sees only the message.
            tqdm.write(redact(self.format(record)), file=sys.stderr)
        except Exception:
            self.handleError(record)


def configure(*, verbosity: int = 0, fmt: LogFormat = "text") -> None:
    """Send the ``batchgen`` logger to stderr: INFO, DEBUG with ``verbosity`` > 0, WARNING
    with ``verbosity`` < 0; ``fmt`` text or json. Calling it again reconfigures."""
    logger = logging.getLogger(_LOGGER)
    handler = next((h for h in logger.handlers if isinstance(h, _TqdmHandler)), None)
    if handler is None:
        handler = _TqdmHandler()
        logger.addHandler(handler)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    logger.setLevel(level)
    logger.propagate = False


def configured() -> bool:
    """Whether :func:`configure` has set up stderr logging in this process."""
    return any(isinstance(h, _TqdmHandler) for h in logging.getLogger(_LOGGER).handlers)
