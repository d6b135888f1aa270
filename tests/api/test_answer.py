"""One bounded reader: decoded size (gzip and deflate bombs included), JSON depth and size, read once."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from batchgen.api.answer import MAX_ANSWER_BYTES, MAX_DEPTH, MAX_VALUES, Unreadable, parse_json, read_answer
from tests.support.bomb import gzip_bomb

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


def bomb_chunks(size: int, *, wbits: int, piece: int = 64 * 1024) -> Iterator[bytes]:
    """``size`` zero bytes compressed (``wbits`` as zlib's), made a megabyte at a time as read."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(MIB)
    for _ in range(size // MIB):
        out = deflater.compress(zeros)
        for i in range(0, len(out), piece):
            yield out[i : i + piece]
    yield deflater.flush()


class Counted(httpx.AsyncByteStream):
    """A response body served chunk by chunk, counting what the reader pulled."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += len(chunk)
            yield chunk


def response(stream: httpx.AsyncByteStream, encoding: str | None = None) -> httpx.Response:
    headers = {"content-encoding": encoding} if encoding else {}
    return httpx.Response(
        200, headers=headers, stream=stream, request=httpx.Request("GET", "https://x.test/")
    )


async def test_a_gigabyte_gzip_bomb_is_cut_at_the_cap_in_bounded_memory() -> None:
    """1 GiB of zeros gzipped (a megabyte on the wire): refused at the decoded cap, reading stops,
    and no more than a few MiB are allocated on the way."""
    bomb = gzip_bomb()
    stream = Counted(bomb[i : i + 64 * 1024] for i in range(0, len(bomb), 64 * 1024))
    tracemalloc.start()
    try:
        answer = await read_answer(response(stream, "gzip"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer.body is None
    assert answer.problem == f"the answer is more than {MAX_ANSWER_BYTES:,} bytes decoded; not read further"
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB"
    assert stream.pulled < 64 * 1024 * 2  # the first chunk or two of the compressed body


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"])
async def test_a_deflate_bomb_is_cut_too(wbits: int) -> None:
    """`deflate`, zlib-wrapped or raw (as some servers send it), is inflated within the same cap."""
    stream = Counted(bomb_chunks(256 * MIB, wbits=wbits))
    answer = await read_answer(response(stream, "deflate"))
    assert answer.problem is not None and "more than" in answer.problem


async def test_gzip_and_chained_encodings_of_a_good_answer_are_read() -> None:
    """A gzip answer, and one encoded twice (`deflate, gzip`), read as the JSON they hold."""
    body = json.dumps({"status": "COMPLETED"}).encode()
    once = await read_answer(response(Counted(iter([gzip.compress(body)])), "gzip"))
    twice = await read_answer(response(Counted(iter([gzip.compress(zlib.compress(body))])), "deflate, gzip"))
    assert once.body == twice.body == {"status": "COMPLETED"}


async def test_an_encoding_batchgen_does_not_decode_is_an_unusable_answer() -> None:
    """`br` without a brotli decoder: a stated problem, not garbage parsed as JSON."""
    answer = await read_answer(response(Counted(iter([b"\x0b\x02\x80{}\x03"])), "br"))
    assert answer.body is None and answer.problem is not None and "'br'" in answer.problem


def test_json_nested_100000_deep_is_refused_without_recursion() -> None:
    """100,000 nested arrays: Unreadable naming the depth, no RecursionError, no traceback."""
    with pytest.raises(Unreadable, match=f"nested 100000 deep \\(at most {MAX_DEPTH}\\)"):
        parse_json(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(Unreadable, match="more than 100,000 values"):
        parse_json(b"[" * 1_000_000)  # deeper still: refused by its count, before its depth is walked


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    """A prompt full of brackets is text, not structure: the answer is read."""
    text = json.dumps({"prompt": "[[[{{{" * 1000, "list": [[1], [2]]}).encode()
    assert parse_json(text)["list"] == [[1], [2]]


def test_eight_mib_of_empty_objects_is_refused_before_it_is_built() -> None:
    """`[{},{},...]` (180 MB of dicts from 8 MiB of text) is refused by its count of values."""
    text = b"[" + b",".join([b"{}"] * (3 * MIB)) + b"]"
    with pytest.raises(Unreadable, match=f"more than {MAX_VALUES:,} values"):
        parse_json(text)


async def test_a_large_answer_is_pulled_once_and_no_further_than_its_cap() -> None:
    """A 100 MB status answer: read once, stopped a chunk past the cap (it was read 19 times)."""
    stream = Counted(iter([b" " * (64 * 1024)] * 1600))
    answer = await read_answer(response(stream))
    assert answer.body is None and answer.problem is not None
    assert stream.pulled <= MAX_ANSWER_BYTES + 64 * 1024
