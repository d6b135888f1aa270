"""The API key: read in one place, stripped, checked, and taken out of every text batchgen writes."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from batchgen.api.client import SegmindClient
from batchgen.api.key import API_KEY_ENV, check_api_key, keep_secret, read_api_key, redact
from batchgen.errors import UsageError
from batchgen.output.jsontext import dumps

KEY = "SG_0123456789abcdef"


@pytest.mark.parametrize("raw", [KEY + "\n", KEY + "\r\n", "  " + KEY + "\t", "\n" + KEY])
def test_surrounding_whitespace_of_a_key_file_is_stripped(raw: str) -> None:
    """A key pasted from a file (a trailing newline, CRLF, spaces) is the key itself."""
    assert read_api_key({API_KEY_ENV: raw}) == KEY


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        ("SG_0123\n456789abcdef", "a newline at character 8"),
        ("SG_0123\r456789abcdef", "a carriage return"),
        ("SG_0123\x1b456789abcdef", "a control character (U+001B)"),
        ("SG_0123 456789abcdef", "a space"),
        ("SG_0123é456789abcdef", "a non-ASCII character (U+00E9"),
        ("SG_0123\u200b456789abcdef", "U+200B"),
    ],
)
def test_a_key_that_cannot_be_one_is_refused_by_name_never_shown(raw: str, what: str) -> None:
    """A control, non-ASCII or inner whitespace character: UsageError naming the variable and the
    character, never the key's text."""
    with pytest.raises(UsageError) as caught:
        read_api_key({API_KEY_ENV: raw})
    message = str(caught.value)
    assert API_KEY_ENV in message and what in message
    assert "0123" not in message and "456789" not in message


def test_an_unset_or_blank_key_is_no_key() -> None:
    """Unset, empty or only whitespace: None (the runner says to set it)."""
    assert read_api_key({}) is None
    assert read_api_key({API_KEY_ENV: " \n"}) is None


def test_a_key_given_in_code_is_checked_the_same_way() -> None:
    """`check_api_key` (for an api_key given to SegmindClient or History) strips and refuses alike."""
    assert check_api_key(" k\n") == "k"
    with pytest.raises(UsageError, match="api_key holds a newline"):
        check_api_key("a\nb", where="api_key")


def test_not_utf8_bytes_are_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value that is not UTF-8 (read as bytes from the process's environment) is refused by name."""
    import os

    if not os.supports_bytes_environ:
        pytest.skip("no bytes environment on this platform")
    monkeypatch.setitem(os.environb, API_KEY_ENV.encode(), b"SG_\xff\xfe0123456789")
    with pytest.raises(UsageError, match=f"{API_KEY_ENV} is not valid UTF-8 \\(byte 4 of 15\\)"):
        read_api_key()


def test_a_remembered_key_is_redacted_from_texts_json_and_log_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once read, the key (raw, JSON-escaped or repr-escaped) becomes *** in any text, in strict
    JSON, and in every record of batchgen's logger."""
    key = 'SG_red"act\\ed-0123456789'
    keep_secret(key)
    assert redact(f"Illegal header value b'{key}'") == "Illegal header value b'***'"
    assert redact(f"header {key!r}") == "header '***'"
    assert json.loads(dumps({"error": f"x-api-key: {key}"})) == {"error": "x-api-key: ***"}
    logger = logging.getLogger("batchgen")
    logger.addHandler(caplog.handler)  # directly: a CLI run in this process may have stopped propagation
    try:
        logger.warning("failed: %s", key)
    finally:
        logger.removeHandler(caplog.handler)
    assert key not in caplog.text and "failed: ***" in caplog.text


def test_a_short_secret_is_not_searched_for() -> None:
    """A key too short to be a Segmind key is not redacted (replacing every "k" would garble every text)."""
    keep_secret("k")
    assert redact("keep the k") == "keep the k"


def test_a_key_carried_by_a_callers_client_is_redacted_too() -> None:
    """An x-api-key default header on the caller's own httpx client (run(client=...) with no
    SEGMIND_API_KEY) is kept out of every text like the environment's key."""
    carried = "sk-carried-by-client-0123"
    SegmindClient(httpx.AsyncClient(headers={"x-api-key": carried}), api_key=None)
    assert redact(f"failed: {carried}") == "failed: ***"
