"""The operational promises: the README's commands, .ci/run, and the files in docs/deploy/."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quick_start() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_quick_start_commands_make_their_own_virtual_environment() -> None:
    """Both Quick start commands create .venv and use its programs, never the system pip."""
    commands = _quick_start()
    assert len(commands) == 2
    for command in commands:
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install -e ")
        assert " pip install" not in command.replace(".venv/bin/pip install", "")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    """.ci/run holds the README's second Quick start command as a line of its own."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert _quick_start()[1] in ci
