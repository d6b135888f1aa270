"""batchgen's log lines: a timestamp and a level on each, -v/-q, --log-format json, said once."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import httpx
import pytest

from batchgen.api.client import SegmindClient
from batchgen.cli.logs import LogFormat
from batchgen.cli.main import main
from batchgen.errors import InsufficientCredits

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "manifests" / "demo.yaml")
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) \S")


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["run", DEMO, "--emulate", "--no-progress", "--out", str(tmp_path / "out"), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_stderr_line_has_an_iso_timestamp_and_a_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Text logs: `<ISO-8601 UTC> <LEVEL> <message>` on every line of stderr, the summary on stdout."""
    code, out, err = _run(tmp_path, capsys)
    assert code == 0
    assert err.splitlines() and all(TEXT_LINE.match(line) for line in err.splitlines()), err
    assert out.startswith("12/12 jobs done")


def test_json_log_format_is_one_object_per_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--log-format json: every stderr line parses as an object with ts, level and message."""
    code, _, err = _run(tmp_path, capsys, "--log-format", "json", "--max-jobs", "5")
    assert code == 2
    lines = [json.loads(line) for line in err.splitlines()]
    assert lines and all({"ts", "level", "message"} <= line.keys() for line in lines)
    assert lines[-1]["level"] == "error" and "more than the limit of 5" in lines[-1]["message"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", lines[-1]["ts"])


def test_quiet_drops_info_and_verbose_adds_debug(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-q leaves only warnings and errors (none for a clean run); -v lets debug lines through."""
    code, _, err = _run(tmp_path, capsys, "-q")
    assert code == 0 and err == ""
    code, _, err = _run(tmp_path, capsys, "-v")
    assert code == 0 and logging.getLogger("batchgen").level == logging.DEBUG
    code, _, err = _run(tmp_path, capsys)
    assert code == 0 and logging.getLogger("batchgen").level == logging.INFO


def test_removed_jobs_are_said_once_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Jobs in the ledger but no longer in the manifest: one log line, not also in the summary."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("jobs:\n  - prompt: a cat\n    seed: '1-3'\n")
    out = str(tmp_path / "out")
    assert main(["run", str(manifest), "--emulate", "--no-progress", "--out", out]) == 0
    manifest.write_text("jobs:\n  - prompt: a cat\n    seed: '1-2'\n")
    capsys.readouterr()
    assert main(["run", str(manifest), "--emulate", "--no-progress", "--out", out]) == 0
    captured = capsys.readouterr()
    assert "no longer in the manifest" not in captured.out
    assert captured.err.count("no longer in the manifest") == 1


@pytest.mark.anyio
async def test_a_406_does_not_repeat_its_detail() -> None:
    """`406 insufficient credits`, not `406 insufficient credits: insufficient credits`."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(406, json={"error": "insufficient credits"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        api = SegmindClient(http, base_url="https://api.segmind.com", api_key="k")
        with pytest.raises(InsufficientCredits) as caught:
            await api.submit("bria-text-to-image", {"prompt": "x"})
    assert str(caught.value) == "406 insufficient credits"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_key_in_a_traceback_or_a_field_never_reaches_stderr(
    fmt: LogFormat, capsys: pytest.CaptureFixture[str]
) -> None:
    """The key inside a logged exception or a line's fields never reaches stderr: the whole line is
    redacted at the handler, not only the message (JSON lines show the field as ***)."""
    from batchgen.api.key import keep_secret
    from batchgen.cli.logs import configure

    key = "sk-log-secret-0123456789"
    keep_secret(key)
    configure(fmt=fmt)
    log = logging.getLogger("batchgen")
    try:
        raise ValueError(f"Illegal header value b'{key}'")
    except ValueError:
        log.exception("a request failed", extra={"fields": {"header": key}})
    err = capsys.readouterr().err
    assert "a request failed" in err and key not in err
    if fmt == "json":
        assert json.loads(err.splitlines()[-1])["header"] == "***"
