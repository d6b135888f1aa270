"""The command line's shape: one module per command, each imported only when its command runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import batchgen
from batchgen.cli.main import COMMANDS, main

# Neither the HTTP stack, nor the emulator's web server, nor the engine.
HEAVY = ("httpx", "httpcore", "starlette", "uvicorn", "batchgen.engine", "batchgen.emulator")


def modules_after(argv: list[str]) -> tuple[str, set[str]]:
    """What ``batchgen ARGV`` prints on stdout, and the modules it imported, in a fresh interpreter."""
    probe = (
        "import contextlib, io, json, sys\n"
        "from batchgen.cli.main import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps([out.getvalue(), sorted(sys.modules)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    printed, modules = json.loads(done.stdout.splitlines()[-1])
    return printed, set(modules)


def test_version_imports_no_command() -> None:
    """`batchgen --version` prints the version and imports no command, no HTTP stack, no engine."""
    printed, loaded = modules_after(["--version"])
    assert printed == f"batchgen {batchgen.__version__}\n"
    assert not [name for name in HEAVY if name in loaded]
    assert not [name for name in loaded if name.startswith("batchgen.cli.") and name != "batchgen.cli.main"]
    assert "pydantic" not in loaded and "yaml" not in loaded


def test_version_from_the_installed_script() -> None:
    """The `batchgen` script and `python -m batchgen` both answer --version with exit 0."""
    done = subprocess.run([sys.executable, "-m", "batchgen", "--version"], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, f"batchgen {batchgen.__version__}\n")


def test_status_imports_neither_httpx_nor_the_emulator(tmp_path: Path) -> None:
    """`batchgen status OUT` reads the ledger without importing httpx, the emulator or the engine."""
    started = {"event": "run_started", "key": "", "ts": "2026-01-01T00:00:00.000Z", "manifest": None,
               "manifest_sha256": None, "settings": {}, "version": "0"}  # fmt: skip
    (tmp_path / "ledger.jsonl").write_text(json.dumps(started) + "\n")
    printed, loaded = modules_after(["status", str(tmp_path), "--json"])
    assert json.loads(printed)["runs"] == 1
    assert not [name for name in HEAVY if name in loaded]
    assert "batchgen.cli.status" in loaded and "batchgen.cli.run" not in loaded


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_its_module_and_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each listed command's module configures its parser: `batchgen NAME --help` exits 0 with its usage."""
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: batchgen {name} ")


def test_the_top_level_help_lists_every_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`batchgen --help` lists each command with its one-line help."""
    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps help to the terminal's width
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name, summary in COMMANDS.items():
        assert f"    {name.ljust(8)}  {summary}" in out


def test_an_unexpected_exception_prints_its_traceback_without_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug (an exception batchgen does not expect) still shows its traceback, exit 1, but the
    key in its text is written as ***."""
    import batchgen.cli.status
    from batchgen.api.key import keep_secret

    key = "sk-main-secret-0123456789"
    keep_secret(key)

    def broken(args: object) -> int:
        raise RuntimeError(f"Illegal header value b'{key}'")

    monkeypatch.setattr(batchgen.cli.status, "handle", broken)
    assert main(["status", "."]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: Illegal header value b'***'" in err
    assert key not in err


def test_console_exit_keeps_piped_output_and_exit_code(tmp_path: Path) -> None:
    """`python -m batchgen` exits without teardown yet loses no buffered stdout and keeps the exit code."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text('jobs:\n  - prompt: "a cat"\n    grid:\n      seed: "1-2000"\n')
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run(
        [sys.executable, "-m", "batchgen", "plan", str(manifest), "--jsonl"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 2000  # stdout is a pipe: block-buffered until the flush
    bad = subprocess.run([sys.executable, "-m", "batchgen", "validate", str(tmp_path / "missing.yaml")],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "missing.yaml" in bad.stderr


def test_console_skips_the_httpx_command_line() -> None:
    """console() keeps httpx from importing its own CLI (click, pygments) and exits with main's code."""
    probe = (
        "import sys\n"
        "import batchgen.cli.main as cli\n"
        "def fake(argv=None):\n"
        "    import httpx\n"
        "    print([name for name in ('httpx._main', 'click', 'pygments') if sys.modules.get(name)])\n"
        "    return 3\n"
        "cli.main = fake\n"
        "cli.console()\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (3, "[]\n")
