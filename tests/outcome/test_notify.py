"""--notify URL: one short JSON POST at the end of a run, bounded, never fatal, the URL kept secret."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchgen.cli.main import main
from batchgen.errors import UsageError
from batchgen.outcome.notify import MAX_TEXT, check_notify_url, send

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "manifests" / "demo.yaml")
SECRET = "T000/B000/XXXXsecretTOKENXXXX"


class Hook:
    """A webhook on a real loopback socket: what it received, and how it answers."""

    def __init__(
        self,
        status: int = 200,
        answer: bytes = b"ok",
        delay: float = 0.0,
        on_post: Callable[[], None] = lambda: None,
    ) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.cut_off = threading.Event()  # the client hung up before the whole answer was sent
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                hook.received.append((self.path, dict(self.headers), body))
                on_post()
                time.sleep(delay)
                self.send_response(status)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                try:
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    hook.cut_off.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/{SECRET}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def message(self) -> dict[str, Any]:
        (_, headers, body) = self.received[-1]
        assert headers["content-type"] == "application/json"
        return json.loads(body)  # type: ignore[no-any-return]


@pytest.fixture
def hook() -> Iterator[Callable[..., Hook]]:
    made: list[Hook] = []

    def make(**kw: Any) -> Hook:
        made.append(Hook(**kw))
        return made[-1]

    yield make
    for h in made:
        h.close()


def secret_nowhere(out: Path, *texts: str) -> None:
    """The URL's secret part is in no file under OUT and in none of ``texts``."""
    for text in texts:
        assert SECRET not in text and "secretTOKEN" not in text
    for path in out.rglob("*"):
        if path.is_file():
            assert b"secretTOKEN" not in path.read_bytes(), path


@pytest.mark.e2e
def test_the_outcome_is_posted_once_with_a_text_line(
    tmp_path: Path, hook: Callable[..., Hook], capsys: pytest.CaptureFixture[str]
) -> None:
    """A run with --notify POSTs one JSON message: a Slack-style text, exit code, jobs, cost, the report."""
    h = hook()
    out = tmp_path / "out"
    assert main(["run", DEMO, "--emulate", "--out", str(out), "--notify", h.url]) == 0
    printed = capsys.readouterr()
    assert len(h.received) == 1 and h.received[0][0] == f"/services/{SECRET}"
    message = h.message()
    assert message["text"].startswith(
        "batchgen demo: exit 0 (ok): 12 of 12 jobs done, 0 failed, 0 not finished"
    )
    assert message["exit_code"] == 0 and message["exit_name"] == "ok" and message["name"] == "demo"
    assert message["jobs"] == {"total": 12, "done": 12, "failed": 0, "not_run": 0}
    assert message["cost_usd"] == pytest.approx(0.48) and message["emulated"] is True
    assert message["report"] == str(out.resolve() / "report.html")
    assert message["summary"] == str(out.resolve() / "summary.json")
    assert len(h.received[0][2]) < 4096
    assert "notified http://127.0.0.1 of the outcome" in printed.err
    secret_nowhere(out, printed.out, printed.err)


def test_a_failed_notification_is_a_warning_not_the_runs_outcome(
    tmp_path: Path, hook: Callable[..., Hook], capsys: pytest.CaptureFixture[str]
) -> None:
    """The hook answers 500, or nothing listens: the run still exits 0, and says why, without the URL."""
    h = hook(status=500, answer=b"internal error at /services/" + SECRET.encode())
    out = tmp_path / "out"
    assert main(["run", DEMO, "--emulate", "--out", str(out), "--no-report", "--notify", h.url]) == 0
    printed = capsys.readouterr()
    assert "notification to http://127.0.0.1 not delivered: HTTP 500 (internal error at" in printed.err
    assert "warning: notification to http://127.0.0.1 not delivered: HTTP 500" in printed.out
    secret_nowhere(out, printed.out, printed.err)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens once it is closed
    url = f"http://127.0.0.1:{port}/services/{SECRET}"
    assert main(["run", DEMO, "--emulate", "--out", str(out), "--no-report", "--notify", url]) == 0
    printed = capsys.readouterr()
    assert "notification to http://127.0.0.1 not delivered: ConnectError" in printed.err
    secret_nowhere(out, printed.out, printed.err)


def test_summary_json_is_there_for_the_hook_and_records_a_failed_notification(
    tmp_path: Path, hook: Callable[..., Hook], capsys: pytest.CaptureFixture[str]
) -> None:
    """summary.json is written before the notification (which names it) and again after it,
    with the failure in its warnings, as the log and the printed summary say."""
    out = tmp_path / "out"
    seen: list[dict[str, Any]] = []

    def on_post() -> None:
        seen.append(json.loads((out / "summary.json").read_text()))

    h = hook(status=404, answer=b"no such hook", on_post=on_post)
    assert main(["run", DEMO, "--emulate", "--out", str(out), "--no-report", "--notify", h.url]) == 0
    printed = capsys.readouterr()
    failure = "notification to http://127.0.0.1 not delivered: HTTP 404 (no such hook)"
    assert f"warning: {failure}" in printed.out
    assert len(seen) == 1 and seen[0]["exit_code"] == 0 and seen[0]["warnings"] == []
    written = json.loads((out / "summary.json").read_text())
    assert written["warnings"] == [failure]
    assert {k: v for k, v in written.items() if k != "warnings"} == {
        k: v for k, v in seen[0].items() if k != "warnings"
    }
    secret_nowhere(out, printed.out, printed.err)


def test_a_hook_that_never_answers_is_given_up_on_in_time() -> None:
    """Connected, then silence: send() returns within its bound, saying so."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/services/{SECRET}"
        started = time.monotonic()
        why = anyio.run(lambda: send(url, {"text": "x"}, within=0.3))
        took = time.monotonic() - started
    assert why == "no answer within 0.3 s" and took < 5


def test_a_huge_answer_is_not_read(hook: Callable[..., Hook]) -> None:
    """A 20 MB answer: at most a KiB of it is read, the rest is never waited for."""
    h = hook(status=400, answer=b"x" * (20 * 1024 * 1024))
    why = anyio.run(lambda: send(h.url, {"text": "x"}, within=10))
    assert why is not None and why.startswith("HTTP 400 (xxxx") and len(why) < 300
    assert h.cut_off.wait(10), "the client read the whole answer"


def test_texts_are_cut_so_the_message_stays_small(hook: Callable[..., Hook]) -> None:
    """A 100,000-character field arrives cut to MAX_TEXT characters."""
    h = hook()
    assert anyio.run(lambda: send(h.url, {"text": "y" * 100_000, "jobs": {"note": "z" * 50_000}})) is None
    message = h.message()
    assert len(message["text"]) == MAX_TEXT and len(message["jobs"]["note"]) == MAX_TEXT


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"ftp://example.com/{SECRET}", "not an http(s):// URL"),
        (f"hooks.slack.com/services/{SECRET}", "not an http(s):// URL"),
        (f"http://example.com/services/{SECRET}", "plain http:// to example.com"),
    ],
)
def test_a_bad_url_is_refused_before_the_run_without_showing_it(
    tmp_path: Path, url: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not http(s), or plain http to another machine: exit 2 before anything is written; the URL unsaid."""
    out = tmp_path / "out"
    assert main(["run", DEMO, "--emulate", "--out", str(out), "--notify", url]) == 2
    err = capsys.readouterr().err
    assert why in err and "secretTOKEN" not in err
    assert not out.exists()
    assert check_notify_url(f"https://hooks.slack.com/services/{SECRET}")
    with pytest.raises(UsageError):
        check_notify_url(url)


def test_the_url_may_come_from_the_environment(
    tmp_path: Path,
    hook: Callable[..., Hook],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """BATCHGEN_NOTIFY_URL is --notify's default (it keeps the secret out of `ps`)."""
    h = hook()
    monkeypatch.setenv("BATCHGEN_NOTIFY_URL", h.url)
    assert main(["run", DEMO, "--emulate", "--out", str(tmp_path / "out"), "--no-report"]) == 0
    assert len(h.received) == 1


def test_a_refusal_over_budget_is_notified(
    tmp_path: Path, hook: Callable[..., Hook], capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused over --budget (exit 2): the hook hears it, with the reason."""
    h = hook()
    out = tmp_path / "out"
    assert main(["run", DEMO, "--emulate", "--out", str(out), "--budget", "0.01", "--notify", h.url]) == 2
    message = h.message()
    assert message["exit_code"] == 2 and "over --budget" in message["refused"]
    assert message["text"].startswith(
        "batchgen demo: exit 2 (usage): refused, nothing was sent: the estimate"
    )
