"""Issue 18 as a user meets it: `batchgen run` as a real process, a real socket, a real environment.

The key as a key file leaves it (a trailing newline, CRLF) or as it can never be (an
inner newline, non-ASCII, not UTF-8); a stdout that takes nothing (`> /dev/full`); and
gzip bombs on the answers, measured by the process's own peak RSS (its VmHWM at exit).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.bomb import gzip_bomb
from tests.support.hostile import Replace, Request, Respond, hostile_server
from tests.support.outdir import assert_all_images_decode, ledger
from tests.support.processes import REPO, env, run_args, write_manifest

pytestmark = pytest.mark.e2e

KEY = "sk-e2e-secret-7f3a0123456789"
MIB = 1024 * 1024


def run_with_key(args: list[str], key: str | bytes, **kw: Any) -> subprocess.CompletedProcess[str]:
    """The command with SEGMIND_API_KEY set to ``key`` exactly (bytes: not necessarily UTF-8)."""
    environ: dict[Any, Any] = env(None)
    environ["SEGMIND_API_KEY"] = key
    if "stdout" not in kw:
        kw["capture_output"] = True
    return subprocess.run(args, env=environ, cwd=REPO, text=True, timeout=120, **kw)


def files_holding(out: Path, secret: str) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.parametrize("ending", ["\n", "\r\n"], ids=["newline", "crlf"])
def test_a_key_from_a_key_file_works_and_is_written_nowhere(
    tmp_path: Path, emulator_process: Callable[..., str], ending: str
) -> None:
    """A key ending in a newline or CRLF (`kubectl create secret --from-file`, a CRLF .env): the run
    works with the key itself, which is in no file under OUT, not on stdout, not on stderr."""
    base_url = emulator_process("--api-key", KEY, "--time-scale", "0.01", "--image-size", "16")
    manifest = write_manifest(tmp_path, seeds=3)
    out = tmp_path / "out"
    result = run_with_key(run_args(manifest, out, base_url), KEY + ending)
    assert result.returncode == 0, result.stderr
    assert_all_images_decode(out, 3)
    assert KEY not in result.stdout + result.stderr
    assert files_holding(out, KEY) == []


@pytest.mark.parametrize(
    ("key", "said"),
    [
        (KEY[:9] + "\n" + KEY[9:], "holds a newline at character 10"),
        (KEY[:9] + "\r\n" + KEY[9:], "holds a carriage return at character 10"),
        (KEY[:9] + "é" + KEY[9:], "holds a non-ASCII character (U+00E9"),
        (KEY.encode()[:9] + b"\xff\xfe" + KEY.encode()[9:], "is not valid UTF-8 (byte 10 of"),
    ],
    ids=["inner-newline", "inner-crlf", "non-ascii", "not-utf8"],
)
def test_a_key_that_cannot_be_one_exits_2_at_once_without_showing_it(
    tmp_path: Path, key: str | bytes, said: str
) -> None:
    """An inner newline, non-ASCII, invalid UTF-8: exit 2 within a second of CPU, the message
    naming SEGMIND_API_KEY and the problem, never the key's text; nothing written, nothing sent."""
    manifest = write_manifest(tmp_path, seeds=3)
    out = tmp_path / "out"
    # A base URL where nothing listens: had anything been sent, it would have failed otherwise.
    before, started = _children_cpu(), time.monotonic()
    result = run_with_key(run_args(manifest, out, "http://127.0.0.1:9"), key)
    cpu, wall = _children_cpu() - before, time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert f"SEGMIND_API_KEY {said}" in result.stderr
    assert KEY[:9] not in result.stdout + result.stderr and KEY[9:] not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    # Within a second of CPU, the interpreter's start included (0.28 s here), not of wall time,
    # which a busy machine stretches. A wait (a retry, a timeout) costs no CPU: the wall time
    # is bounded too, loosely.
    assert cpu < 1.0, f"{cpu:.2f} s of CPU"
    assert wall < 10.0, f"{wall:.2f} s"


def _children_cpu() -> float:
    """CPU seconds (user and system) of this process's children that have ended."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_a_full_stdout_keeps_the_runs_exit_code_and_prints_no_traceback(
    tmp_path: Path, emulator_server: Callable[..., str]
) -> None:
    """`batchgen run ... > /dev/full`: the run works, summary.json is written, stderr says stdout
    did not take the output, no traceback, exit 0 (it was 1 with a traceback)."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    base_url = emulator_server(time_scale=0.01)
    manifest = write_manifest(tmp_path, seeds=2)
    out = tmp_path / "out"
    with open("/dev/full", "w") as full:
        result = run_with_key(run_args(manifest, out, base_url), KEY, stdout=full, stderr=subprocess.PIPE)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert "stdout did not take the output: No space left on device" in result.stderr
    assert json.loads((out / "summary.json").read_text())["exit_code"] == 0


def bombs(*, status: int, result: int, submit: int) -> tuple[Callable[[Request], Any], Counter[str]]:
    """A rule: a 1 GiB gzip bomb for the first ``status`` polls and ``result`` fetches of each
    request, the first ``submit`` submits (forwarded first: the emulator takes them) and every
    history read but the second (which settles the submit in doubt; the end of the run reads it
    again to price the run); metrics stripped from the answers that pass. And the count of
    bombs served, by kind."""
    body = gzip_bomb()
    served: Counter[str] = Counter()
    asked: Counter[tuple[str, str]] = Counter()

    def bomb(kind: str, *, forward: bool = False) -> Respond:
        served[kind] += 1
        return Respond(200, body, headers=(("content-encoding", "gzip"),), forward=forward)

    def strip(code: int, answer: Any) -> tuple[int, Any]:
        return code, {k: v for k, v in answer.items() if k != "metrics"} if isinstance(
            answer, dict
        ) else answer

    def rule(r: Request) -> Any:
        asked[(r.kind, r.path)] += 1
        n = asked[(r.kind, r.path)]
        if r.kind == "submit":
            return bomb("submit", forward=True) if r.n <= submit else None
        if r.kind == "history":
            return None if r.n == 2 else bomb("history")
        if r.kind in ("status", "result"):
            return bomb(r.kind) if n <= (status if r.kind == "status" else result) else Replace(strip)
        return None

    return rule, served


# `python -m batchgen ...` that writes its own peak RSS at exit. Not the rusage of os.wait4: the
# child is forked (vfork) from this test process, and Linux carries the peak of the memory it
# started in across exec, so a child of a 400 MB pytest "peaks" at 400 MB. VmHWM is the peak
# of the process's memory since its exec, nothing inherited.
# The command's main() is called, not the console entry point: that one ends the process
# with os._exit, which runs no exit hook.
_PEAK_OF_ITSELF = """
import os, sys
from batchgen.cli.main import main
code = main(sys.argv[1:])
with open("/proc/self/status") as status:
    kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
with open(os.environ["PEAK_RSS_FILE"], "w") as out:
    out.write(kib)
sys.exit(code)
"""


def run_measured(args: list[str], tmp_path: Path, *, timeout: float = 300.0) -> tuple[int, float, str]:
    """Run ``args`` (``python -m batchgen ...``) to its end; its exit code, its peak RSS in MiB
    (its own VmHWM), its stderr. Blocking: call it in a thread while the event loop serves the
    hostile server."""
    assert args[1:3] == ["-m", "batchgen"], args
    errors, peak = tmp_path / "stderr.txt", tmp_path / "peak-rss-kib.txt"
    environ = {**env(KEY), "PEAK_RSS_FILE": str(peak)}
    command = [args[0], "-c", _PEAK_OF_ITSELF, *args[3:]]
    with errors.open("w") as sink:
        proc = subprocess.Popen(command, env=environ, cwd=REPO, stdout=subprocess.DEVNULL, stderr=sink)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            said = errors.read_text()[-2000:]
            raise AssertionError(f"the run did not end within {timeout:g} s: {said}") from None
    return code, int(peak.read_text()) / 1024, errors.read_text()


@pytest.mark.anyio
async def test_gzip_bombs_on_every_answer_keep_the_run_under_200_mb(tmp_path: Path) -> None:
    """1 GiB gzip bombs (about 1 MB each on the wire) on a submit, on the first status polls and result
    fetches of every request, and on every history read: the run's peak RSS stays under 200 MB (it
    was 4.2 GB); the submit is in doubt and adopted, the polls are retried, the cost is said to be
    unknown; every image is saved, nothing is paid twice, exit 0, no traceback."""
    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM in /proc/self/status is Linux's")
    manifest = write_manifest(tmp_path, seeds=4)
    out = tmp_path / "out"
    rule, served = bombs(status=3, result=2, submit=1)
    async with hostile_server(rule, history_lag=0.0) as hostile:
        args = run_args(manifest, out, hostile.base_url, "--history-lag", "0.5")
        code, peak, stderr = await anyio.to_thread.run_sync(run_measured, args, tmp_path)
        server = await hostile.stats()
    print(f"peak RSS under gzip bombs: {peak:.0f} MiB; bombs served: {dict(served)}")
    assert code == 0, stderr
    assert (
        served["submit"] == 1 and served["status"] == 12 and served["result"] == 8 and served["history"] >= 2
    )
    assert "Traceback" not in stderr
    assert peak < 200, f"peak RSS {peak:.0f} MiB"
    assert_all_images_decode(out, 4)
    assert server["submits_accepted"] == 4 and server["duplicate_submits"] == 0
    events = ledger(out)
    assert [e for e in events if e["event"] == "submitted" and e.get("recovered")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cost"]["usd"] is None
    assert any("request history unavailable" in w for w in summary["warnings"])


@pytest.mark.anyio
async def test_the_same_run_without_bombs_for_comparison(tmp_path: Path) -> None:
    """The same four jobs through the same server, no bomb: the peak RSS a run has anyway."""
    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM in /proc/self/status is Linux's")
    manifest = write_manifest(tmp_path, seeds=4)
    async with hostile_server(lambda r: None) as hostile:
        args = run_args(manifest, tmp_path / "out", hostile.base_url)
        code, peak, stderr = await anyio.to_thread.run_sync(run_measured, args, tmp_path)
    print(f"peak RSS without bombs: {peak:.0f} MiB")
    assert code == 0, stderr
    assert peak < 200
