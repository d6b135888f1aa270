"""A submit in doubt as a user meets it: the `batchgen run` command against a hostile server."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.hostile import DropAfterForward, Request, Respond, hostile_server
from tests.support.processes import REPO, env, write_manifest

pytestmark = pytest.mark.e2e


@pytest.mark.anyio
async def test_the_command_adopts_a_lost_answer_and_leaves_a_doubt_it_cannot_settle(tmp_path: Path) -> None:
    """The history is down (404) and one submit is answered by a proxy's HTML page that
    never reached the server: "not known whether paid", not sent again, exit 1. The rerun,
    the history back: the job in doubt is proven absent (told a lag of 0) and submitted;
    that submit's connection drops after the server took it: found in the history and
    adopted. Four jobs, four payments."""
    manifest = write_manifest(tmp_path, seeds=4)
    out = tmp_path / "out"
    html = Respond(200, b"<html>maintenance</html>", "text/html")

    history_down = [True]

    def rule(r: Request) -> Any:
        if r.kind == "history" and history_down[0]:
            return Respond(404, b'{"error": "not found"}')
        if r.kind == "submit" and r.n == 2:
            return html
        if r.kind == "submit" and r.n == 5:
            return DropAfterForward()
        return None

    async with hostile_server(rule) as hostile:
        args = [sys.executable, "-m", "batchgen", "run", str(manifest), "--out", str(out)]
        args += ["--base-url", hostile.base_url, "--concurrency", "1", "--no-progress"]
        first = await anyio.run_process(args, env=env(), cwd=REPO, check=False)
        stdout = first.stdout.decode()
        assert first.returncode == 1, first.stderr.decode()
        assert "not known whether paid: 1 jobs" in stdout
        summary = json.loads((out / "summary.json").read_text())
        assert summary["jobs"]["not_known_whether_paid"] == 1
        assert "cannot be read" in summary["submits_in_doubt"]["why_not_known"]
        stats = await hostile.stats()
        assert stats["submits_accepted"] == 3 and stats["duplicate_submits"] == 0
        history_down[0] = False
        again = await anyio.run_process([*args, "--history-lag", "0"], env=env(), cwd=REPO, check=False)
        assert again.returncode == 0, again.stderr.decode()
        summary = json.loads((out / "summary.json").read_text())
        stats = await hostile.stats()
    assert summary["submits_in_doubt"]["found_in_history"] == 1
    assert stats["submits_accepted"] == 4 and stats["duplicate_submits"] == 0
    assert len(list((out / "images").rglob("*.png"))) == 4
