"""Hostile manifests: each one ends as located problems, exit 2, within a second, nothing written.

A corpus of files that used to crash (ValueError, RecursionError, OverflowError,
MemoryError), hang (a FIFO) or validate when they should not (NUL bytes, a 50 MB
prompt, a run name of ``..``). Every case runs through ``batchgen validate`` and
``batchgen run --emulate`` in process: the same errors, exit 2, and no output folder.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

# Imported up front so that the timings below are the commands' own, not first imports.
import batchgen.emulator
import batchgen.engine.runner  # noqa: F401
from batchgen.cli.main import main
from batchgen.errors import ManifestError
from batchgen.manifest.load import load_manifest
from batchgen.manifest.params import MAX_PROMPT_CHARS
from batchgen.manifest.reads import MAX_CSV_BYTES, MAX_YAML_BYTES
from batchgen.manifest.yamlnodes import MAX_DEPTH
from tests.support.logs import unlogged


def _csv(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _deep_flow(levels: int) -> str:
    return "jobs:\n  - prompt: a\n    labels: {x: " + "[" * levels + "]" * levels + "}\n"


def _deep_block(levels: int) -> str:
    lines = ["jobs:", "- prompt: a", "  labels:"]
    indent = "   "
    for _ in range(levels):
        lines.append(indent + "k:")
        indent += " "
    return "\n".join(lines) + " 1\n"


def _laughs() -> str:
    """A "billion laughs": nine levels of nine aliases each; nothing may expand it."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 9):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append("jobs: *a8")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Case:
    """One hostile input: the files to write, the manifest to load, what must be reported."""

    id: str
    files: dict[str, str | bytes]
    expected: list[str]  # each a substring of one problem, in order ("{d}" is the folder)
    manifest: str = "m.yaml"
    setup: Callable[[Path], None] | None = None


CASES = [
    Case(
        "float-tag-not-a-number",
        {"m.yaml": "jobs:\n  - prompt: a cat\n    text_guidance_scale: !!float abc\n"},
        ["m.yaml:3: jobs[0].text_guidance_scale: 'abc' is tagged !!float but is not a number"],
    ),
    Case(
        "float-tag-base-60",
        {"m.yaml": 'jobs:\n  - prompt: a cat\n    text_guidance_scale: !!float "1:x"\n'},
        ["m.yaml:3: jobs[0].text_guidance_scale: '1:x' is tagged !!float but is not a number"],
    ),
    Case(
        "float-tag-on-a-label",
        {"m.yaml": "jobs:\n  - prompt: a cat\n    labels: {x: !!float abc}\n"},
        ["m.yaml:3: jobs[0].labels.x: 'abc' is tagged !!float but is not a number"],
    ),
    Case(
        "int-and-bool-tags",
        {"m.yaml": "jobs:\n  - prompt: a\n    ip_signal: !!bool maybe\n    steps_num: !!int '3 0'\n"},
        [
            "m.yaml:3: jobs[0].ip_signal: 'maybe' is tagged !!bool but is not true or false",
            "m.yaml:4: jobs[0].steps_num: '3 0' is tagged !!int but is not an integer",
        ],
    ),
    Case(
        "float-tag-in-a-grid",
        {"m.yaml": "jobs:\n  - prompt: a\n    grid:\n      text_guidance_scale: [3, !!float x]\n"},
        ["m.yaml:4: jobs[0].grid.text_guidance_scale[1]: 'x' is tagged !!float but is not a number"],
    ),
    Case("deep-flow-nesting", {"m.yaml": _deep_flow(5000)}, [f"m.yaml:3: nested more than {MAX_DEPTH}"]),
    Case("deep-block-nesting", {"m.yaml": _deep_block(1300)}, [f"m.yaml:32: nested more than {MAX_DEPTH}"]),
    Case(
        "deep-mapping-nesting",
        {"m.yaml": "a: " + "{b: " * 3000 + "1" + "}" * 3000 + "\n"},
        [f"m.yaml:1: nested more than {MAX_DEPTH}"],
    ),
    Case(
        "alias-nesting",
        {"m.yaml": "a: &x [1]\nb: " + "[*x, " * 100 + "]" * 100 + "\n"},
        [f"m.yaml:2: nested more than {MAX_DEPTH}"],
    ),
    Case(
        "label-range-overflow",
        {"m.yaml": 'jobs:\n  - prompt: "a {n}"\n    grid: {n: "1-99999999999999999999999"}\n'},
        ["m.yaml:3: jobs[0].grid.n: range '1-99999999999999999999999' has 99,999,999,999,999,999,999,999"],
    ),
    Case(
        "range-with-5000-digits",
        {"m.yaml": 'jobs:\n  - prompt: "a {n}"\n    grid: {n: "1-' + "9" * 5000 + '"}\n'},
        ['m.yaml:3: jobs[0].grid.n: must be a list or a range like "1-8"'],
    ),
    Case(
        "seed-range-overflow",
        {"m.yaml": 'jobs:\n  - prompt: a\n    seed: "1-99999999999999999999999"\n'},
        ["m.yaml:3: jobs[0].seed: range '1-99999999999999999999999' has"],
    ),
    Case(
        "manifest-is-a-fifo",
        {},
        ["{d}/fifo.yaml: is a FIFO (named pipe); a YAML manifest must be a regular file"],
        manifest="fifo.yaml",
        setup=lambda d: os.mkfifo(d / "fifo.yaml"),
    ),
    Case(
        "manifest-is-dev-zero",
        {},
        ["{d}/zero.yaml: is a character device; a YAML manifest must be a regular file"],
        manifest="zero.yaml",
        setup=lambda d: (d / "zero.yaml").symlink_to("/dev/zero"),
    ),
    Case(
        "csv-manifest-is-dev-zero",
        {},
        ["{d}/zero.csv: is a character device; a CSV manifest must be a regular file"],
        manifest="zero.csv",
        setup=lambda d: (d / "zero.csv").symlink_to("/dev/zero"),
    ),
    Case(
        "manifest-is-a-directory",
        {},
        ["{d}/dir.yaml: is a directory; a YAML manifest must be a regular file"],
        manifest="dir.yaml",
        setup=lambda d: (d / "dir.yaml").mkdir(),
    ),
    Case(
        "rows-is-dev-zero",
        {"m.yaml": 'jobs:\n  - prompt: "a {x}"\n    rows: /dev/zero\n'},
        ["m.yaml:3: jobs[0].rows: /dev/zero is a character device; a rows: CSV file must be a regular file"],
    ),
    Case(
        "rows-is-a-fifo",
        {"m.yaml": 'jobs:\n  - prompt: "a {x}"\n    rows: p.csv\n'},
        ["m.yaml:3: jobs[0].rows: {d}/p.csv is a FIFO (named pipe); a rows: CSV file must be a regular file"],
        setup=lambda d: os.mkfifo(d / "p.csv"),
    ),
    Case(
        "yaml-over-the-size-cap",
        {"m.yaml": 'jobs:\n  - prompt: "' + "a" * MAX_YAML_BYTES + '"\n'},
        ["m.yaml: is larger than 1 MiB, the limit for a YAML manifest (put long lists of values in a rows:"],
    ),
    Case(
        "rows-over-the-size-cap",
        {
            "m.yaml": 'jobs:\n  - prompt: "a {x}"\n    rows: p.csv\n',
            "p.csv": "x\n" + "a\n" * (MAX_CSV_BYTES // 2),
        },
        ["m.yaml:3: jobs[0].rows: {d}/p.csv is larger than 64 MiB, the limit for a rows: CSV file"],
    ),
    Case(
        "prompt-over-the-length-cap",
        {"m.yaml": 'jobs:\n  - prompt: "' + "a" * (MAX_PROMPT_CHARS + 1) + '"\n'},
        [f"m.yaml:2: jobs[0].prompt: is {MAX_PROMPT_CHARS + 1:,} characters long; the limit is 4,000"],
    ),
    Case(
        "negative-prompt-over-the-length-cap",
        {"m.yaml": "defaults:\n  negative_prompt: " + "b" * 5000 + "\njobs:\n  - prompt: a\n"},
        ["m.yaml:2: defaults.negative_prompt: is 5,000 characters long"],
    ),
    Case(
        "prompt-filled-in-over-the-cap",
        {"m.csv": _csv([["prompt", "desc"], ["short", "x"], ["a {desc} and {desc}", "x" * 2500]])},
        ["m.csv:3: prompt: filled in, it is 5,007 characters long; the limit is 4,000"],
        manifest="m.csv",
    ),
    Case(
        "prompt-cell-over-the-cap",
        {"m.csv": _csv([["prompt"], ["a" * 4001]])},
        ["m.csv:2: column prompt: is 4,001 characters long"],
        manifest="m.csv",
    ),
    Case(
        "nul-escape-in-a-prompt",
        {"m.yaml": 'jobs:\n  - prompt: "a\\0cat"\n'},
        ["m.yaml:2: jobs[0].prompt: contains the control character NUL; only tab and newline are allowed"],
    ),
    Case(
        "control-characters-in-prompts-and-labels",
        {
            "m.yaml": 'jobs:\n  - prompt: "x {l}\\x07"\n    labels: {l: "a\\x1bb"}\n'
            '    negative_prompt: "\\x7f"\n'
        },
        [
            "m.yaml:2: jobs[0].prompt: contains the control character U+0007",
            "m.yaml:3: jobs[0].labels.l: contains the control character U+001B",
            "m.yaml:4: jobs[0].negative_prompt: contains the control character U+007F",
        ],
    ),
    Case(
        "control-characters-in-csv-cells",
        {"m.csv": _csv([["prompt", "sku"], ["b\x00c", "A1"], ["ok {sku}", "A\x082"]])},
        [
            "m.csv:2: column prompt: contains the control character NUL",
            "m.csv:3: column sku: contains the control character U+0008",
        ],
        manifest="m.csv",
    ),
    Case(
        "control-character-in-a-grid-label",
        {"m.yaml": 'jobs:\n  - prompt: "a {c}"\n    grid: {c: [red, "bl\\x01ue"]}\n'},
        ["m.yaml:3: jobs[0].grid.c[1]: contains the control character U+0001"],
    ),
    Case(
        "c1-control-character-in-a-prompt",
        {"m.yaml": 'jobs:\n  - prompt: "a\\x85cat"\n'},
        ["m.yaml:2: jobs[0].prompt: contains the control character U+0085"],
    ),
    Case(
        "bool-tag-on-a-label",
        {"m.yaml": "jobs:\n  - prompt: a\n    labels: {x: !!bool perhaps}\n"},
        ["m.yaml:3: jobs[0].labels.x: 'perhaps' is tagged !!bool but is not true or false"],
    ),
    Case(
        "rows-is-dev-urandom",
        {"m.yaml": 'jobs:\n  - prompt: "a {x}"\n    rows: /dev/urandom\n'},
        ["m.yaml:3: jobs[0].rows: /dev/urandom is a character device"],
    ),
    Case(
        "typo-axes-that-would-pay-for-identical-images",
        {"m.yaml": "jobs:\n  - prompt: a cat\n    grid: {step_num: [20, 40], guidance: [3, 9]}\n"},
        ["m.yaml:3: jobs[0].grid.step_num: 'step_num' is not a parameter (did you mean steps_num?)"],
    ),
    Case(
        "billion-laughs",
        {"m.yaml": _laughs()},
        [f"m.yaml:{n + 1}: unknown key 'a{n}'" for n in range(8)]
        + [f"m.yaml:8: jobs[{i}]: must be a mapping, not a list" for i in range(9)]
        + ["m.yaml:9: unknown key 'a8'"],
    ),
    Case(
        "run-name-too-long-for-a-folder",
        {"m.yaml": f"name: {'n' * 300}\njobs:\n  - prompt: hi\n"},
        ["m.yaml:1: name: is 300 bytes long in UTF-8, over the 232 a run name may have"],
    ),
    Case(
        "run-name-multibyte-too-long",
        {"m.yaml": f"name: {'名' * 78}\njobs:\n  - prompt: hi\n"},
        ["m.yaml:1: name: is 234 bytes long in UTF-8"],
    ),
    Case(
        "run-name-windows-device",
        {"m.yaml": "name: Con.x\njobs:\n  - prompt: hi\n"},
        ["m.yaml:1: name: is a device name on Windows (Con)"],
    ),
    Case(
        "run-name-with-a-separator",
        {"m.yaml": "name: 'a/../b c'\njobs:\n  - prompt: hi\n"},
        ["m.yaml:1: name: holds '/' (U+002F), ' ' (U+0020): only letters and digits (of any script)"],
    ),
    Case(
        "raw-nul-byte-in-yaml",
        {"m.yaml": b"jobs:\n  - prompt: a\x00cat\n"},
        ["m.yaml:2: a NUL character is not allowed in YAML"],
    ),
    Case(
        "raw-control-byte-in-yaml",
        {"m.yaml": b"jobs:\n  - prompt: a\n  - prompt: b\x07\n"},
        ["m.yaml:3: the control character U+0007 is not allowed in YAML"],
    ),
]


def _prepare(case: Case, directory: Path) -> Path:
    for name, content in case.files.items():
        path = directory / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    if case.setup is not None:
        case.setup(directory)
    return directory / case.manifest


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_manifest_is_located_exit_2_fast_and_writes_nothing(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate and run both print the located problems, exit 2 within a second of CPU (not of
    wall time: the machine may be busy), write nothing."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    path = _prepare(case, tmp_path)
    expected = [e.replace("{d}", str(tmp_path)) for e in case.expected]
    before = sorted(p.name for p in tmp_path.iterdir())
    for command in (["validate", str(path)], ["run", str(path), "--emulate", "--no-progress"]):
        started = time.process_time()
        code = main(command)
        elapsed = time.process_time() - started
        err = capsys.readouterr().err
        assert code == 2, err
        assert elapsed < 1.0, f"{command[0]} took {elapsed:.2f} s of CPU"
        assert "Traceback" not in err
        lines = unlogged(err)
        assert lines[-1].startswith("error: " if command[0] == "validate" else "")
        assert lines[-1].endswith("; nothing was submitted")
        problems = lines[:-1]
        assert len(problems) == len(expected), problems
        for line, want in zip(problems, expected, strict=True):
            assert want in line, line
            assert line.startswith(str(tmp_path)) or line.startswith("/dev/zero"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output/, no ledger


def test_nul_escape_in_yaml_is_an_error_not_a_warning(tmp_path: Path) -> None:
    """A NUL in a prompt used to be only a warning; tab and newline stay allowed and silent."""
    path = tmp_path / "m.yaml"
    path.write_text('jobs:\n  - prompt: "a\\tcat\\non a mat"\n')
    assert load_manifest(path).warnings == []
    path.write_text('jobs:\n  - prompt: "a\\0cat"\n')
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert [p.what for p in info.value.problems] == [
        "contains the control character NUL; only tab and newline are allowed"
    ]


def test_a_csv_cell_may_span_lines(tmp_path: Path) -> None:
    """CRLF inside a quoted CSV cell is a newline, not a control character."""
    path = tmp_path / "m.csv"
    path.write_bytes(b'prompt\r\n"a red\r\nmug"\r\n')
    (spec,) = load_manifest(path).jobs
    assert spec.rows is not None and spec.rows.rows[0].cells["prompt"] == "a red\r\nmug"


@pytest.mark.parametrize("filename", ["...yaml", "..yaml", "....yaml", "...csv", ".hidden.yaml"])
def test_the_file_name_never_makes_a_run_name_that_leaves_output(
    filename: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stem of `..`, `.` or a leading dot gives a plain folder name (with a warning), never `..`."""
    monkeypatch.chdir(tmp_path)
    text = "prompt\na cat\n" if filename.endswith(".csv") else "jobs:\n  - prompt: a cat\n"
    (tmp_path / filename).write_text(text)
    manifest = load_manifest(filename)
    assert manifest.name in ("manifest", "hidden")
    assert [w.what for w in manifest.warnings] == [
        f"the file name gives the run name {Path(filename).stem!r}, which is not a folder name;"
        f" using {manifest.name!r}"
    ]
    assert main(["run", filename, "--emulate", "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "output").iterdir()) == [manifest.name]
    assert not (tmp_path / "images").exists() and not (tmp_path / "ledger.jsonl").exists()


def test_a_run_name_that_is_not_a_folder_name_is_refused(tmp_path: Path) -> None:
    """A Manifest built in code with the name `..` cannot send output above output/."""
    from dataclasses import replace

    import anyio

    from batchgen.engine.runner import run
    from batchgen.errors import UsageError

    path = tmp_path / "m.yaml"
    path.write_text("jobs:\n  - prompt: a cat\n")
    manifest = replace(load_manifest(path), name="..")
    with pytest.raises(UsageError, match="is not a folder name"):
        anyio.run(lambda: run(manifest, emulate=True, progress=False))
