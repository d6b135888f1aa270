"""One bounded reader for every body batchgen reads: API answers, history pages, images.

A server decides what it sends; batchgen decides how much of it to read. Every body is
read once, as a stream, through :func:`decoded`: ``gzip`` and ``deflate`` are inflated
here a bounded piece at a time (httpx's own decoders inflate a whole network chunk at
once, and one 64 KiB chunk of a gzip bomb is 64 MiB), the *decoded* bytes are counted
against a cap, and reading stops (the connection is closed) as soon as the cap is
passed. A JSON answer (:func:`read_answer`) is then parsed once, after a cheap look at
its shape (:func:`parse_json`): nested deeper than :data:`MAX_DEPTH` or holding more than
:data:`MAX_VALUES` values, it is refused before the parser builds it (a 100,000-deep
array is a RecursionError in :mod:`json`; eight MiB of ``{},`` is 180 MB of dicts).

Caps (decoded bytes): :data:`MAX_ANSWER_BYTES` for a submit or status answer (a real
one is a few hundred bytes), :data:`MAX_RESULT_BYTES` for a result (it may carry the
image inline) and a history page; the image download passes its own cap. A body over
its cap, too deep, not JSON, or in an encoding batchgen does not read is
:class:`Unreadable`; what that means for the request (a transient failure, a submit in
doubt, the history unavailable) is the caller's to say.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import httpx

__all__ = [
    "ACCEPT_ENCODING",
    "MAX_ANSWER_BYTES",
    "MAX_DEPTH",
    "MAX_RESULT_BYTES",
    "MAX_VALUES",
    "Answer",
    "Unreadable",
    "decoded",
    "parse_json",
    "read_answer",
]

MIB = 1024 * 1024
MAX_ANSWER_BYTES = 1 * MIB  # a submit or status answer
MAX_RESULT_BYTES = 8 * MIB  # a result (an inline image) or a page of the request history
MAX_DEPTH = 64  # nesting of arrays and objects (an answer needs 5)
MAX_VALUES = 100_000  # arrays, objects and separators (a history page of 100 rows has a few thousand)
# What every request asks for: the encodings decoded() reads. Said explicitly because httpx
# adds br and zstd to its default whenever brotli or zstandard happens to be installed, and
# an answer so encoded would be Unreadable: every request of the run would fail.
ACCEPT_ENCODING = "gzip, deflate"
_PIECE = 64 * 1024  # at most this many bytes are inflated at a time
_TEXT = 200  # characters of a body kept for an error message


class Unreadable(Exception):
    """A body batchgen will not read or use: over its cap, too deep, not JSON, or encoded in
    a way batchgen does not decode. The message says which."""


class _Inflater:
    """One ``Content-Encoding`` layer (gzip or deflate), inflated at most :data:`_PIECE` at a time."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        # gzip (header and trailer checked); deflate is zlib-wrapped, but some servers send
        # it raw: tried as zlib first, as raw on the first error (as httpx does).
        self._wbits = zlib.MAX_WBITS | 16 if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self._inflate = zlib.decompressobj(self._wbits)
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The bytes ``data`` inflates to, in pieces of at most :data:`_PIECE` bytes."""
        pending = data
        while True:
            try:
                piece = self._inflate.decompress(pending, _PIECE)
            except zlib.error as exc:
                if self.encoding == "deflate" and not self._started:
                    self._started = True
                    self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise Unreadable(f"a {self.encoding} body that does not inflate ({exc})") from None
            self._started = True
            if piece:
                yield piece
            pending = self._inflate.unconsumed_tail
            # A full piece may leave output inside zlib even with no input left.
            if not pending and len(piece) < _PIECE:
                return


def _layers(response: httpx.Response) -> list[_Inflater]:
    """The inflaters of the response's ``Content-Encoding``, in the order to apply them."""
    layers: list[_Inflater] = []
    for value in response.headers.get_list("content-encoding", split_commas=True):
        encoding = value.strip().lower()
        if encoding in ("", "identity"):
            continue
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise Unreadable(f"a body encoded as {encoding[:40]!r}, which batchgen does not decode")
        layers.append(_Inflater(encoding))
    return layers[::-1]  # the last encoding applied is the first undone


def _through(layers: list[_Inflater], data: bytes) -> Iterator[bytes]:
    if not layers:
        if data:
            yield data
        return
    first, rest = layers[0], layers[1:]
    for piece in first.feed(data):
        yield from _through(rest, piece)


async def decoded(response: httpx.Response, *, limit: int, what: str = "the answer") -> AsyncIterator[bytes]:
    """The decoded body of a streamed ``response``, piece by piece; :class:`Unreadable` once
    more than ``limit`` decoded bytes came (reading stops there). ``what`` names the body
    in that message. Network faults while reading are httpx's exceptions, as from httpx."""
    if response.is_stream_consumed:  # built in memory (a mock transport's): already decoded
        if len(response.content) > limit:
            raise Unreadable(f"{what} is more than {limit:,} bytes decoded; not read further")
        if response.content:
            yield response.content
        return
    layers = _layers(response)
    seen = 0
    async for raw in response.aiter_raw():
        for piece in _through(layers, raw):
            seen += len(piece)
            if seen > limit:
                raise Unreadable(f"{what} is more than {limit:,} bytes decoded; not read further")
            yield piece


_STRING = re.compile(rb'"(?:[^"\\]+|\\.)*"', re.DOTALL)
_NOT_STRUCTURE = re.compile(rb"[^\[\]{},]+")
_DEPTH = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")


def _check_shape(data: bytes | bytearray, max_depth: int) -> None:
    """Refuse JSON text nested deeper than ``max_depth`` or with more than :data:`MAX_VALUES`
    values, without parsing it. The counts below include characters inside strings, so
    they are upper bounds: only when one is passed are the strings taken out and the
    structure counted exactly."""
    opened = data.count(b"[") + data.count(b"{")
    if opened <= max_depth and opened + data.count(b",") <= MAX_VALUES:
        return
    structure = _NOT_STRUCTURE.sub(b"", _STRING.sub(b"", data))
    if structure.count(b"[") + structure.count(b"{") + structure.count(b",") > MAX_VALUES:
        raise Unreadable(f"a JSON answer of more than {MAX_VALUES:,} values; not read")
    brackets = structure.replace(b",", b"").translate(_DEPTH)
    depth = max(accumulate(1 if step == 1 else -1 for step in brackets), default=0)
    if depth > max_depth:
        raise Unreadable(f"a JSON answer nested {depth} deep (at most {max_depth}); not read")


def parse_json(data: bytes | bytearray, *, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of ``data``; :class:`Unreadable` if it is not JSON, or too deep or too
    large a structure to build (:func:`_check_shape`)."""
    _check_shape(data, max_depth)
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise Unreadable("an answer that is not JSON") from None


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer read in full (within its cap): what callers judge it by.

    ``body`` is the parsed JSON, or None with ``problem`` saying why (empty, not JSON, over
    the cap, too deep, an unknown encoding). ``text`` is the body's start as text, for an
    error message.
    """

    status_code: int
    reason_phrase: str
    headers: httpx.Headers
    body: Any
    text: str
    problem: str | None

    @property
    def is_success(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.status_code < 300

    @property
    def content_type(self) -> str:
        """The media type the answer claims (``application/json``), or ``no content type``."""
        claimed: str = self.headers.get("content-type", "no content type")
        return claimed.split(";")[0].strip()[:60]


async def read_answer(response: httpx.Response, *, limit: int = MAX_ANSWER_BYTES) -> Answer:
    """Read the body of a streamed ``response`` once (at most ``limit`` decoded bytes), parse
    it as JSON, and close the response. Network faults while reading are httpx's."""
    data = bytearray()
    problem: str | None = None
    try:
        async for piece in decoded(response, limit=limit):
            data += piece
    except Unreadable as exc:
        problem = str(exc)
    finally:
        await response.aclose()
    text = bytes(data[: _TEXT * 4]).decode("utf-8", "replace").strip()[:_TEXT]
    body: Any = None
    if problem is None:
        if not data.strip():
            problem = "an empty answer"
        else:
            try:
                body = parse_json(data)
            except Unreadable as exc:
                problem = str(exc)
    return Answer(
        status_code=response.status_code,
        reason_phrase=response.reason_phrase,
        headers=response.headers,
        body=body,
        text=text,
        problem=problem,
    )
