"""The operational promises: the README's commands, .ci/run, and the files in docs/deploy/."""

from __future__ import annotations

import datetime
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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


DEPLOY = ROOT / "docs" / "deploy"


def _cron_entry() -> tuple[str, str]:
    """The crontab file's one entry: (schedule, command)."""
    lines = [
        line
        for line in (DEPLOY / "crontab").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    return " ".join(fields[:5]), fields[5]


def test_the_nightly_docs_show_the_crontab_line_of_docs_deploy() -> None:
    """The cron line docs/nightly.md shows is the one in docs/deploy/crontab, and it has no bare %."""
    schedule, command = _cron_entry()
    assert "%" not in command  # crontab turns an unescaped % into a newline
    nightly = (ROOT / "docs" / "nightly.md").read_text(encoding="utf-8")
    assert any(line.startswith(schedule) and line.endswith(command) for line in nightly.splitlines())


@pytest.mark.e2e
def test_the_crontab_line_works_under_crons_environment(
    tmp_path: Path, emulator_server: Callable[..., str]
) -> None:
    """Under `env -i PATH=/usr/bin:/bin` (no venv, no log folder) the line runs the nightly batch
    against an emulator; the same night again resumes it, logging to the same file."""
    venv_batchgen = Path(sys.prefix) / "bin" / "batchgen"
    if not venv_batchgen.is_file():
        pytest.skip(f"no batchgen script in {sys.prefix}/bin (run the tests from the Quick start's venv)")
    base_url = emulator_server(time_scale=0.01, workers=8)
    home = tmp_path / "srv" / "batchgen"
    (home / "manifests").mkdir(parents=True)
    shutil.copy(ROOT / "manifests" / "nightly.yaml", home / "manifests" / "nightly.yaml")
    (home / ".venv").symlink_to(sys.prefix)
    etc = tmp_path / "etc" / "batchgen"  # the key, outside the clone
    etc.mkdir(parents=True)
    (etc / "segmind.env").write_text(
        f"export SEGMIND_API_KEY=cron-test-key\nexport BATCHGEN_BASE_URL={base_url}\n"
    )
    _, command = _cron_entry()
    command = command.replace("/srv/batchgen", str(home)).replace("/etc/batchgen", str(etc))
    cron = ["env", "-i", "PATH=/usr/bin:/bin", "/bin/sh", "-c", command]
    for _night in (1, 2):
        result = subprocess.run(cron, cwd="/", capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (
            result.stdout,
            result.stderr,
            (home / "logs" / "nightly.log").read_text(),
        )
        assert result.stdout == result.stderr == ""  # all of it went to the log
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    out = home / "output" / "nightly" / today
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_code"] == 0 and summary["jobs"]["skipped"] == summary["jobs"]["total"] == 14
    assert len(list((out / "images").rglob("*.png"))) == 14
    log = (home / "logs" / "nightly.log").read_text()
    assert log.count("14/14 jobs done") == 2
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO ", log, re.M)
    assert "cron-test-key" not in log


def test_the_recipes_keep_the_key_outside_the_clone_and_git_ignores_what_they_write() -> None:
    """The crontab sources, and the systemd unit reads, a key file outside /srv/batchgen (the clone);
    the repository's .gitignore covers a key file and the logs folder put in the clone anyway."""
    _, command = _cron_entry()
    sourced = re.findall(r"(?:^|&& )\. (\S+)", command)
    service = (DEPLOY / "batchgen-nightly.service").read_text()
    environment = re.findall(r"^EnvironmentFile=(\S+)$", service, re.M)
    assert sourced and environment
    for key_file in [*sourced, *environment]:
        assert key_file.startswith("/") and not key_file.startswith("/srv/batchgen"), key_file
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    names = ["segmind.env", "segmind.env.systemd", "prod.env", "logs/nightly.log"]
    result = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "--no-index", *names], capture_output=True, text=True
    )
    assert result.stdout.split() == names, result.stderr


def test_systemd_units_verify() -> None:
    """`systemd-analyze verify` accepts the service and the timer (ExecStart pointed at a real file)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        program = folder / "batchgen"
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
        service = (DEPLOY / "batchgen-nightly.service").read_text()
        assert "ExecStart=/srv/batchgen/.venv/bin/batchgen " in service
        (folder / "batchgen-nightly.service").write_text(
            service.replace("ExecStart=/srv/batchgen/.venv/bin/batchgen", f"ExecStart={program}")
        )
        shutil.copy(DEPLOY / "batchgen-nightly.timer", folder)
        units = [str(folder / "batchgen-nightly.service"), str(folder / "batchgen-nightly.timer")]
        result = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "", result.stderr


@pytest.mark.parametrize("name", ["kubernetes-cronjob.yaml", "kubernetes-indexed-job.yaml"])
def test_kubernetes_files_validate_against_the_schemas(name: str) -> None:
    """kubernetes-validate (strict: no unknown fields; its schemas ship with it, no network)
    accepts the CronJob and the Indexed Job, from Kubernetes 1.33 (backoffLimitPerIndex GA)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    import yaml

    documents = list(yaml.safe_load_all((DEPLOY / name).read_text()))
    assert len(documents) == 1
    for version in ("1.33.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(documents[0], version, strict=True)  # raises if invalid
    broken = json.loads(json.dumps(documents[0]).replace('"restartPolicy"', '"restartPolicyy"'))
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33.0", strict=True)


def test_kubernetes_files_take_the_key_from_a_secret_and_shard_by_index() -> None:
    """The API key comes from a Secret (never a literal); the Indexed Job passes its index + 1 as K."""
    import yaml

    for name in ("kubernetes-cronjob.yaml", "kubernetes-indexed-job.yaml"):
        text = (DEPLOY / name).read_text()
        assert "secretKeyRef" in text and "SEGMIND_API_KEY" in text
        assert "value:" not in text  # no literal environment values at all
    job = yaml.safe_load((DEPLOY / "kubernetes-indexed-job.yaml").read_text())
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    n = spec["completions"]
    script = spec["template"]["spec"]["containers"][0]["args"][0]
    assert f'--shard "$((JOB_COMPLETION_INDEX + 1))/{n}"' in script
    # The shell arithmetic gives 1..N for indexes 0..N-1.
    for index in range(n):
        shard = subprocess.run(
            ["/bin/sh", "-c", f'echo "$((JOB_COMPLETION_INDEX + 1))/{n}"'],
            env={"JOB_COMPLETION_INDEX": str(index), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert shard == f"{index + 1}/{n}"
