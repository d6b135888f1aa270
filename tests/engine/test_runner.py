"""The Python entry point `batchgen.run`: inputs, settings checks, progress, embedding use."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from PIL import Image

import batchgen
from batchgen.emulator import EmulatorConfig, create_app
from batchgen.engine.settings import RunSettings
from batchgen.errors import LockedError, UsageError
from batchgen.manifest.job import DEFAULT_MODEL, Job, job_key
from batchgen.manifest.params import validate_params
from batchgen.output.lock import lock_output

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "manifests" / "demo.yaml"
BASE = "http://localhost"  # plain http is for loopback hosts only (the key would travel in clear)
SCALE = 0.001


def make_jobs(n: int, *, mode: str = "fast") -> list[Job]:
    jobs = []
    for i in range(n):
        p = validate_params({"prompt": f"a lighthouse number {i}", "seed": i + 1, "mode": mode})
        jobs.append(
            Job(
                index=i, key=job_key(DEFAULT_MODEL, p, {}), model=DEFAULT_MODEL, params=p, filename=f"{i}.png"
            )
        )
    return jobs


def settings(**kw: float) -> RunSettings:
    """Default settings: nothing about the emulator's speed."""
    return RunSettings(**kw)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_emulate_runs_a_manifest_path_into_its_default_out_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`await batchgen.run("demo.yaml", emulate=True)` needs no key and writes output/<name>/."""
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    summary = await batchgen.run(DEMO, emulate=True, progress=False)
    assert (summary.completed, summary.exit_code) == (12, 0)
    assert summary.out_dir == Path("output/demo")
    images = sorted((tmp_path / "output" / "demo" / "images").rglob("*.png"))
    assert len(images) == 12
    with Image.open(images[0]) as im:
        im.load()


@pytest.mark.anyio
async def test_a_callers_client_is_used_and_left_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An embedding caller's httpx client (with its own key header) drives the run and stays open."""
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    app = create_app(EmulatorConfig(time_scale=SCALE, image_size=32, api_key="mine"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), headers={"x-api-key": "mine"}
    ) as http:
        summary = await batchgen.run(
            make_jobs(5), out_dir=tmp_path, client=http, base_url=BASE, settings=settings(), progress=False
        )
        assert not http.is_closed
    assert summary.completed == 5


@pytest.mark.anyio
async def test_plain_http_to_another_host_is_refused_unless_insecure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """base_url http://<not this machine> raises UsageError before anything is written;
    insecure=True runs (a caller's client that follows redirects, key in its headers)."""
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    app = create_app(EmulatorConfig(time_scale=SCALE, image_size=32, api_key="mine"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), headers={"x-api-key": "mine"}, follow_redirects=True
    ) as http:
        with pytest.raises(UsageError, match="the API key would travel unencrypted"):
            await batchgen.run(make_jobs(2), out_dir=tmp_path / "a", client=http, base_url="http://api.test")
        assert not (tmp_path / "a").exists()
        summary = await batchgen.run(
            make_jobs(2), out_dir=tmp_path / "b", client=http, base_url="http://api.test", insecure=True
        )
    assert summary.completed == 2


@pytest.mark.anyio
async def test_missing_key_is_a_usage_error_before_anything_happens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without SEGMIND_API_KEY, a client or emulate, run raises UsageError and writes nothing."""
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    with pytest.raises(UsageError, match="SEGMIND_API_KEY"):
        await batchgen.run(make_jobs(2), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.anyio
async def test_bad_settings_and_job_cap_are_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrency 0 and more jobs than max_jobs are refused with a sentence, nothing written."""
    monkeypatch.setenv("SEGMIND_API_KEY", "k")
    with pytest.raises(UsageError, match="concurrency 0"):
        await batchgen.run(make_jobs(2), out_dir=tmp_path / "a", settings=RunSettings(concurrency=0))
    with pytest.raises(UsageError, match="12 jobs"):
        await batchgen.run(DEMO, out_dir=tmp_path / "b", max_jobs=5)
    with pytest.raises(UsageError, match="out_dir"):
        await batchgen.run(make_jobs(2))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.anyio
async def test_a_locked_output_directory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While another run holds OUT, run raises LockedError and submits nothing."""
    monkeypatch.setenv("SEGMIND_API_KEY", "k")
    with lock_output(tmp_path), pytest.raises(LockedError):
        await batchgen.run(make_jobs(2), out_dir=tmp_path, emulate=True)


@pytest.mark.anyio
async def test_without_a_terminal_progress_is_plain_log_lines(
    tmp_path: Path, batchgen_log: pytest.LogCaptureFixture
) -> None:
    """Not on a terminal: periodic `progress: N/M done, ... in flight, ... 429s, ETA` lines."""
    config = EmulatorConfig(time_scale=0.005, image_size=32, workers=2)
    summary = await batchgen.run(
        make_jobs(12, mode="base"),
        out_dir=tmp_path,
        emulate=config,
        settings=settings(concurrency=4),
        progress=False,
        progress_interval=0.02,
    )
    assert summary.completed == 12
    lines = [r.getMessage() for r in batchgen_log.records if r.getMessage().startswith("progress:")]
    assert lines
    assert "/12 done" in lines[-1] and "in flight" in lines[-1] and "429s" in lines[-1] and "ETA" in lines[-1]


@pytest.mark.anyio
async def test_on_a_terminal_progress_is_a_tqdm_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a bar: done/total, in flight, failed and 429s on stderr."""
    summary = await batchgen.run(
        make_jobs(6), out_dir=tmp_path, emulate=EmulatorConfig(time_scale=SCALE, image_size=32), progress=True
    )
    assert summary.completed == 6
    err = capsys.readouterr().err
    assert "6/6" in err
    assert "in flight" in err and "failed 0" in err and "429s 0" in err


@pytest.mark.anyio
async def test_emulate_with_settings_keeps_the_emulators_timing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run(..., emulate=True, settings=...)` runs at the emulator's pace: settings say nothing of speed."""
    monkeypatch.chdir(tmp_path)
    summary = await batchgen.run(
        DEMO, emulate=True, settings=RunSettings(concurrency=4, max_attempts=3), progress=False
    )
    assert summary.completed == 12
    # 12 jobs on 4 slots: the run takes a few inference times, not the 25 s poll prior of old.
    ideal = sum(summary.inference_times) / 4
    assert summary.wall_time < 5 * ideal + 1.0


def test_a_caller_who_configures_logging_sees_the_run(tmp_path: Path) -> None:
    """A script that calls logging.basicConfig(level=INFO) and awaits batchgen.run sees the
    estimate, progress lines and a last `finished: exit 0 ...` line, on its own handler."""
    import subprocess
    import sys

    script = tmp_path / "caller.py"
    script.write_text(
        "import asyncio, logging\n"
        "import batchgen\n"
        "from batchgen.emulator import EmulatorConfig\n"
        "logging.basicConfig(level=logging.INFO, format='CALLER %(name)s %(levelname)s %(message)s')\n"
        f"summary = asyncio.run(batchgen.run({str(DEMO)!r}, out_dir={str(tmp_path / 'out')!r},\n"
        "    emulate=EmulatorConfig(time_scale=0.01, image_size=32),\n"
        "    progress=False, progress_interval=0.02))\n"
        "print(summary.exit_code)\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "0", result.stderr
    mine = [line for line in result.stderr.splitlines() if line.startswith("CALLER batchgen INFO ")]
    assert "12 jobs to submit: about 0.48 USD" in mine[0]
    assert any(" progress: " in line for line in mine)
    assert mine[-1].startswith("CALLER batchgen INFO finished: exit 0 (ok): 12 of 12 jobs done, 0 failed")
    assert mine[-1].endswith(f"report {tmp_path / 'out' / 'report.html'}")
