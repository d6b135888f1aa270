"""The API key: read from ``SEGMIND_API_KEY`` in one place, checked, and kept out of every text.

:func:`read_api_key` is the only reader of the variable. A key pasted from a file often
carries a trailing newline (``kubectl create secret --from-file``, ``$(cat key.txt)`` in
some shells, a ``.env`` saved with CRLF): surrounding whitespace is stripped. What is
left must be printable ASCII with no whitespace inside (an HTTP header value cannot
carry a control character or non-ASCII text, and no Segmind key has them): anything
else is a :class:`~batchgen.errors.UsageError` naming the problem and the variable,
never the key's text, before a request is made.

The key is then remembered here, and :func:`redact` replaces it by ``***`` in any text:
the last line of defence where batchgen records error text (ledger lines and
``summary.json`` through :mod:`batchgen.output.jsontext`, the printed summary, and every
record of the ``batchgen`` logger), should some library ever copy a header into a message.
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from collections.abc import Mapping

from batchgen.errors import UsageError

__all__ = ["API_KEY_ENV", "REDACTED", "check_api_key", "keep_secret", "read_api_key", "redact"]

API_KEY_ENV = "SEGMIND_API_KEY"
REDACTED = "***"
# A secret this short is no Segmind key (they are dozens of characters); replacing every
# occurrence of, say, "k" would garble the text it protects for nothing.
_MIN_SECRET = 8

_secrets: set[str] = set()  # the key as it may appear in a text: raw, JSON-escaped, repr-escaped


def _describe(char: str) -> str:
    """A character named without showing the key around it."""
    if char == "\n":
        return "a newline"
    if char == "\r":
        return "a carriage return"
    if char == "\t":
        return "a tab"
    if char == " ":
        return "a space"
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return f"a control character (U+{ord(char):04X})"
    name = unicodedata.name(char, "")
    return f"a non-ASCII character (U+{ord(char):04X}{' ' + name if name else ''})"


def check_api_key(value: str, *, where: str = API_KEY_ENV) -> str:
    """``value`` without surrounding whitespace, or :class:`UsageError` if it cannot be a key.

    ``where`` names the key's source in the message (the variable). The message never
    shows the key: only what is wrong and at which character.
    """
    key = value.strip()
    if not key:
        raise UsageError(f"{where} is empty; set it to your Segmind API key")
    for position, char in enumerate(key, start=1):
        if not ("!" <= char <= "~"):
            raise UsageError(
                f"{where} holds {_describe(char)} at character {position} of {len(key)}"
                " (surrounding whitespace is ignored); an API key is printable ASCII: check how it was set"
            )
    return key


def read_api_key(environ: Mapping[str, str] | None = None) -> str | None:
    """The key in ``SEGMIND_API_KEY`` (of ``environ``, default the process's), checked
    (:func:`check_api_key`) and remembered for :func:`redact`; None when the variable is
    unset or holds only whitespace.

    The process's environment is read as bytes where the platform has them
    (``os.environb``), so a value that is not UTF-8 is refused by name instead of
    reaching a header as surrogate escapes.
    """
    raw: bytes | str | None
    if environ is not None:
        raw = environ.get(API_KEY_ENV)
    elif os.supports_bytes_environ:
        raw = os.environb.get(API_KEY_ENV.encode("ascii"))
    else:  # Windows: the environment is text already
        raw = os.environ.get(API_KEY_ENV)
    if raw is None:
        return None
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"{API_KEY_ENV} is not valid UTF-8 (byte {exc.start + 1} of {len(raw)});"
                " an API key is printable ASCII: check how it was set"
            ) from None
    else:
        text = raw
    if not text.strip():
        return None
    key = check_api_key(text)
    keep_secret(key)
    return key


class _Redacted(logging.Filter):
    """Take the key out of every record of batchgen's logger, whatever handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = _Redacted()


def keep_secret(secret: str) -> None:
    """Remember ``secret`` so that :func:`redact` (and so batchgen's log lines) take it out
    of any text."""
    if len(secret) < _MIN_SECRET:
        return
    _secrets.update({secret, json.dumps(secret)[1:-1], repr(secret)[1:-1]})
    logging.getLogger("batchgen").addFilter(_FILTER)  # once: a filter is added only once


def redact(text: str) -> str:
    """``text`` with every remembered secret replaced by ``***``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
