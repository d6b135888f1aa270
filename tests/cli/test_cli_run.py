"""`batchgen run` argument handling, in process: usage errors exit 2 before anything is sent."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from batchgen.cli.main import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--rpm", "0"], "rpm 0.0 must be a number of requests a minute, at least 0.1"),
        (["--rpm", "1e-9"], "rpm 1e-09 must be a number of requests a minute, at least 0.1 (one every ten"),
        (["--concurrency", "many"], "'many' is not a whole number or 'auto'"),
        (["--concurrency", "0"], "0 must be at least 1 (or auto)"),
        (["--time-scale", "-1"], "time scale -1.0 must be a number above 0 and at most 10"),
        (["--time-scale", "1e300"], "time scale 1e+300 must be a number above 0 and at most 10"),
        (["--max-jobs", "0"], "max jobs 0 must be a whole number of jobs, at least 1"),
        (["--max-jobs", "5"], "more than the limit of 5"),
        (["--grace", "1e300"], "grace 1e+300 must be a number of seconds, from 0 to 86,400 (a day;"),
        (["--history-lag", "nan"], "history lag nan must be a number of seconds, from 0 to 2,592,000"),
        (["--price-per-image", "1e308"], "price per image 1e+308 must be a number of USD, from 0 to 100"),
        (["--budget=-inf"], "budget -inf must be a number of USD, at least 0"),
        (
            ["--halt-on-failure-rate", "100"],
            "halt on failure rate 100.0 must be a number of percent, from 0 up",
        ),
        (["--halt-min-jobs", "0"], "halt min jobs 0 must be a whole number of jobs, at least 1"),
        (
            ["--request-timeout", "0"],
            "request timeout 0.0 must be a number of seconds, above 0 and at most 3,600 (an hour;",
        ),
        (["--request-timeout", "1e9"], "request timeout 1000000000.0 must be a number of seconds, above 0"),
        (["--out", ""], "--out / out_dir is empty: name a folder (--out . for the current one)"),
        (["--out", "  "], "--out / out_dir is empty"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    """Out-of-range options are a usage error (exit 2) naming the option; no output directory appears."""
    out = tmp_path / "out"
    assert (
        run_cli(["run", str(REPO / "manifests" / "demo.yaml"), "--emulate", "--out", str(out), *option]) == 2
    )
    assert message in capsys.readouterr().err
    assert not out.exists()


def _numeric_options() -> list[str]:
    """Every option of ``batchgen run`` that takes a number (argparse type float or int)."""
    from batchgen.cli import run

    parser = argparse.ArgumentParser()
    run.configure(parser)
    return [a.option_strings[-1] for a in parser._actions if a.option_strings and a.type in (float, int)]


def test_every_numeric_option_is_checked() -> None:
    """The run command's numeric options are those the one table of limits covers."""
    assert sorted(_numeric_options()) == sorted(
        [
            "--rpm",
            "--history-lag",
            "--price-per-image",
            "--budget",
            "--halt-on-failure-rate",
            "--halt-min-jobs",
            "--max-jobs",
            "--grace",
            "--request-timeout",
            "--time-scale",
        ]
    )


@pytest.mark.parametrize("option", _numeric_options())
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_nonsense_in_any_numeric_option_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    """NaN, infinity or a negative number in any numeric option is refused (exit 2, the option
    named), before anything is written."""
    out = tmp_path / "out"
    code = run_cli(
        ["run", str(REPO / "manifests" / "demo.yaml"), "--emulate", "--out", str(out), option, value]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "must be" in err or "invalid int value" in err
    assert not out.exists()


def run_cli(argv: list[str]) -> int:
    """``main(argv)``, with argparse's own exit (a malformed option) as its exit code."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_time_scale_is_only_for_the_built_in_emulator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--time-scale without --emulate is refused: a real server's speed is measured, never told."""
    out = tmp_path / "out"
    argv = [
        "run",
        str(REPO / "manifests" / "demo.yaml"),
        "--base-url",
        "http://127.0.0.1:9",
        "--out",
        str(out),
    ]
    assert run_cli([*argv, "--time-scale", "0.5"]) == 2
    assert "--time-scale applies only with --emulate" in capsys.readouterr().err
    assert not out.exists()


def test_a_bad_manifest_exits_2_with_located_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest with an error exits 2, naming file, line and field; nothing is submitted or written."""
    manifest = tmp_path / "bad.yaml"
    manifest.write_text('jobs:\n  - prompt: "a fox"\n    steps_num: 60\n')
    out = tmp_path / "out"
    code = main(["run", str(manifest), "--emulate", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "bad.yaml:3" in err and "steps_num" in err and "nothing was submitted" in err
    assert not out.exists()


def test_emulate_runs_the_demo_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`batchgen run manifests/demo.yaml --emulate` exits 0 and prints the summary with the paths."""
    out = tmp_path / "demo"
    code = main(
        ["run", str(REPO / "manifests" / "demo.yaml"), "--emulate", "--out", str(out), "--no-progress"]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "12/12 jobs done" in printed
    assert f"ledger: {out / 'ledger.jsonl'}" in printed


def test_no_embed_saves_images_as_downloaded(tmp_path: Path) -> None:
    """--no-embed leaves the parameters out of the images; the default writes them in."""
    from PIL import Image

    for flag, expected in (([], True), (["--no-embed"], False)):
        out = tmp_path / f"demo{len(flag)}"
        argv = ["run", str(REPO / "manifests" / "demo.yaml"), "--emulate", "--out", str(out), "--no-progress"]
        assert main([*argv, *flag]) == 0
        for path in (out / "images").rglob("*.png"):
            with Image.open(path) as im:
                assert ("parameters" in im.info) is expected


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_a_plain_http_base_url_to_another_host_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """--base-url (or BATCHGEN_BASE_URL) http://api.segmind.com: exit 2, the key is not sent in clear."""
    monkeypatch.setenv("SEGMIND_API_KEY", "k")
    out = tmp_path / "out"
    argv = ["run", str(REPO / "manifests" / "demo.yaml"), "--out", str(out)]
    if how == "flag":
        argv += ["--base-url", "http://api.segmind.com"]
    else:
        monkeypatch.setenv("BATCHGEN_BASE_URL", "http://api.segmind.com")
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert "is plain http to api.segmind.com: the API key would travel unencrypted" in err
    assert "--insecure" in err
    assert not out.exists()


DATED = """name: nightly-{date}
jobs:
  - prompt: a lighthouse at dusk
    seed: "1-3"
output:
  filename: "{date}/{seed}.png"
"""


def test_date_fills_the_name_the_out_folder_and_filenames(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """{date} is the run's UTC date (or --date): one folder per day, and a rerun that day resumes."""
    import datetime
    import json

    monkeypatch.chdir(tmp_path)
    manifest = tmp_path / "dated.yaml"
    manifest.write_text(DATED)
    argv = ["run", str(manifest), "--emulate", "--no-report", "--out", "out/{date}"]
    assert run_cli([*argv, "--date", "2026-01-02"]) == 0
    images = sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*.png"))
    assert [str(p) for p in images] == [f"out/2026-01-02/images/2026-01-02/{n}.png" for n in (1, 2, 3)]
    assert run_cli([*argv, "--date", "2026-01-02"]) == 0  # the same day: resumed, nothing new
    summary = json.loads((tmp_path / "out" / "2026-01-02" / "summary.json").read_text())
    assert summary["jobs"]["skipped"] == 3 and summary["submits"] == 0
    assert run_cli(argv) == 0  # no --date: today, in UTC
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted({"2026-01-02", today})
    assert run_cli(["run", str(manifest), "--emulate", "--no-report", "--date", "2026-01-03"]) == 0
    assert (tmp_path / "output" / "nightly-2026-01-03" / "images" / "2026-01-03" / "1.png").is_file()
    capsys.readouterr()
    assert run_cli(["plan", str(manifest), "--date", "2026-01-04"]) == 0
    assert "2026-01-04/1.png" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["2026-02-30", "26-01-01", "today"])
def test_a_date_that_is_not_a_real_day_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    """--date must be YYYY-MM-DD and exist: exit 2 naming it."""
    manifest = tmp_path / "dated.yaml"
    manifest.write_text(DATED)
    assert run_cli(["validate", str(manifest), "--date", bad]) == 2
    assert repr(bad) in capsys.readouterr().err


def test_date_is_not_a_prompt_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """{date} in a prompt is an error: a job's key (what it sends) must not change with the day."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("jobs:\n  - prompt: a photo taken on {date}\n")
    assert run_cli(["validate", str(manifest)]) == 2
    assert "date" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:99999", "has port 99999: a port is from 1 to 65535"),
        ("http://127.0.0.1:0", "has port 0"),
        ("https://user:hunter2@api.segmind.com", "carries a user name or password"),
        ("https://api.segmind.com/my proxy", "has whitespace in its path"),
        ("https://api.segmind.com/?region=eu", "has a query or fragment"),
    ],
)
@pytest.mark.parametrize("option", ["--base-url", "--history-url"])
def test_a_base_url_every_request_would_fail_on_is_a_usage_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    message: str,
    option: str,
) -> None:
    """A base or history URL with a port out of range, a user and password, whitespace in its
    path or a query exits 2 at once (nothing written, not even the lock; no password shown),
    instead of failing every job or every history read."""
    monkeypatch.setenv("SEGMIND_API_KEY", "k")
    out = tmp_path / "out"
    code = run_cli(["run", str(REPO / "manifests" / "demo.yaml"), option, url, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    named = "base URL" if option == "--base-url" else "history URL"
    assert f"{named} '" in err
    assert message in err
    assert "hunter2" not in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["report", "status", "tidy"])
@pytest.mark.parametrize("out", ["", "  "])
def test_an_empty_out_folder_is_refused_by_every_command(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    out: str,
) -> None:
    """`batchgen report ""` (an unset $OUT) is exit 2 naming the argument, not a run of the current
    folder, and leaves nothing in it (tidy's lock included)."""
    monkeypatch.chdir(tmp_path)
    assert run_cli([command, out]) == 2
    assert (
        "argument OUT: empty: name a run's output folder (. for the current one)" in capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []
