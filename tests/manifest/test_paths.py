"""The output-path rule: cleaned values, any script kept, settled extensions, clashes, long names."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.cli.main import main
from batchgen.errors import ManifestError
from batchgen.manifest.expand import expand
from batchgen.manifest.job import Job
from batchgen.manifest.load import load_manifest
from batchgen.manifest.paths import (
    MAX_DEPTH,
    MAX_PATH_BYTES,
    SEGMENT_MAX_BYTES,
    PathTooDeep,
    clash_key,
    clean_value,
    output_path,
    with_format_extension,
)
from batchgen.manifest.pipeline import manifest_jobs


def jobs_of(tmp_path: Path, text: str, csv: str | None = None) -> list[Job]:
    if csv is not None:
        (tmp_path / "rows.csv").write_text(csv, encoding="utf-8")
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    return list(expand(load_manifest(path)))


def clash_problems(tmp_path: Path, text: str, csv: str | None = None) -> list[str]:
    with pytest.raises(ManifestError) as info:
        jobs_of(tmp_path, text, csv)
    return [str(p) for p in info.value.problems]


def test_slash_in_a_label_value_makes_no_folder(tmp_path: Path) -> None:
    """'Acai bowl / smoothie cup' and SKU/021 stay one name; only the template's own / makes folders."""
    jobs = jobs_of(
        tmp_path,
        "jobs:\n  - prompt: photo of {name}\n    rows: rows.csv\n"
        "output:\n  filename: '{category}/{sku}-{name}'\n",
        csv="sku,name,category\nSKU/021,Acai bowl / smoothie cup,food\nA\\7,tea,drink\\hot\n",
    )
    assert [j.filename for j in jobs] == [
        "food/SKU_021-Acai_bowl_smoothie_cup.png",
        "drink_hot/A_7-tea.png",
    ]


def test_non_latin_names_are_kept(tmp_path: Path) -> None:
    """日本の急須 (and accents) survive, NFC-normalised, instead of vanishing."""
    jobs = jobs_of(
        tmp_path,
        "jobs:\n  - prompt: a teapot\n    seed: 483757\n    labels:\n      name: 日本の急須\n"
        "output:\n  filename: 'front-{seed}-{name}.png'\n",
    )
    assert jobs[0].filename == "front-483757-日本の急須.png"
    assert output_path("Cafe\u0301 cre\u0300me.png") == "Café_crème.png"  # NFD in, NFC out
    assert output_path("Чайник/चाय.png") == "Чайник/चाय.png"  # Devanagari vowel signs are kept


@pytest.mark.parametrize(
    ("rendered", "expected"),
    [
        ("/etc/passwd", "etc/passwd.png"),
        ("../../up/../x.png", "up/x.png"),
        ("a\\b\\c.jpg", "a/b/c.jpg"),
        ("Café crème/tote bag #1.png", "Café_crème/tote_bag_#1.png"),
        ('what? a <b>: "c" | d*.PNG', "what_a_b_c_d_.png"),
        ("tab\there  _ new\nline", "tab_here_new_line.png"),
        ("keep__double_underscores", "keep__double_underscores.png"),
        ("evil\u202egnp.exe", "evil_gnp.exe.png"),
        (".hidden", "hidden.png"),
        ("CON.png", "_CON.png"),
        ("lpt1", "_lpt1.png"),
        ("COM\u00b9.png", "_COM\u00b9.png"),
        ("lpt\u00b3.tar.png", "_lpt\u00b3.tar.png"),
        ("COM0", "_COM0.png"),
        ("CONIN$.png", "_CONIN$.png"),
        ("shots/conout$", "shots/_conout$.png"),
        ("COM10.png", "COM10.png"),
        ("CONSOLE.png", "CONSOLE.png"),
        ("", "image.png"),
        ("../..", "image.png"),
        ("cat.v2", "cat.v2.png"),
        ("photo.JPEG", "photo.jpeg"),
    ],
)
def test_output_path_is_always_safe(rendered: str, expected: str) -> None:
    """Relative, no '..', only filesystem-unsafe characters and whitespace replaced, extension settled."""
    assert output_path(rendered) == expected


def test_clean_value_replaces_only_separators() -> None:
    """A substituted value loses its / and \\ and nothing else (the path rule does the rest)."""
    assert clean_value("a/b\\c d") == "a_b_c d"
    assert clean_value(7.0) == "7"
    assert clean_value(True) == "true"


def test_long_segments_keep_a_hash_and_stay_distinct() -> None:
    """Over-long names are cut to SEGMENT_MAX_BYTES with a hash of the whole, so they stay distinct."""
    a = output_path("x" * 300 + "-red.webp")
    b = output_path("x" * 300 + "-blue.webp")
    assert a != b
    for path in (a, b):
        assert path.endswith(".webp") and len(path.encode()) == SEGMENT_MAX_BYTES
    long_folder = output_path("日本" * 100 + "/cat.png")
    folder, name = long_folder.split("/")
    assert name == "cat.png" and len(folder.encode()) <= SEGMENT_MAX_BYTES
    assert folder.startswith("日本日本")  # cut on a character boundary, not mid-UTF-8
    assert output_path("y" * 100 + ".png") == "y" * 100 + ".png"  # short enough: untouched


def test_clash_key_ignores_case_and_image_extension() -> None:
    """Paths that are one file on macOS/Windows, or once the format sets the extension, share a key."""
    assert clash_key("ABC-1.png") == clash_key("abc-1.png")
    assert clash_key("x.png") == clash_key("x.jpg") == clash_key("X.JPEG")
    assert clash_key("a/b.png") != clash_key("a_b.png")


def test_with_format_extension() -> None:
    """A wrong image extension is replaced; a matching one is kept as written."""
    assert with_format_extension("a/cat.png", "JPEG") == "a/cat.jpg"
    assert with_format_extension("cat.JPEG", "JPEG") == "cat.JPEG"
    assert with_format_extension("cat.jpg", "PNG") == "cat.png"
    assert with_format_extension("cat.v2", "WEBP") == "cat.v2.webp"
    assert with_format_extension("cat.png", "PNG") == "cat.png"
    assert with_format_extension("cat.png", "ICNS") == "cat.png"


def test_a_and_a_png_clash(tmp_path: Path) -> None:
    """{f} = a and a.png settle to the same a.png: an error naming both jobs."""
    problems = clash_problems(
        tmp_path, "jobs:\n  - prompt: x\n    grid:\n      f: [a, a.png]\noutput:\n  filename: '{f}'\n"
    )
    assert problems == [
        f"{tmp_path}/m.yaml:6: output.filename: jobs 0 and 1 would both write a.png;"
        " add {key} or {index} to the template"
    ]


def test_names_differing_in_case_clash(tmp_path: Path) -> None:
    """ABC-1 and abc-1 are one file on macOS and Windows: both CSV rows are named."""
    problems = clash_problems(
        tmp_path,
        "jobs:\n  - prompt: x {sku}\n    rows: rows.csv\noutput:\n  filename: '{sku}.png'\n",
        csv="sku\nABC-1\nabc-1\n",
    )
    assert problems == [
        f"{tmp_path}/m.yaml:5: output.filename: jobs 0 ({tmp_path}/rows.csv:2) and 1 ({tmp_path}/rows.csv:3)"
        " would write ABC-1.png and abc-1.png: one file where names ignore case (macOS, Windows);"
        " add {key} or {index} to the template"
    ]


def test_names_differing_in_image_extension_clash(tmp_path: Path) -> None:
    """x.png and x.jpg become one file when the server sends the same format for both."""
    problems = clash_problems(
        tmp_path,
        "jobs:\n  - prompt: x\n    grid:\n      ext: [png, jpg]\noutput:\n  filename: 'x.{ext}'\n",
    )
    assert problems == [
        f"{tmp_path}/m.yaml:6: output.filename: jobs 0 and 1 would write x.png and x.jpg: one file once"
        " the extension follows the image format the server sends (.png or .jpg);"
        " add {key} or {index} to the template"
    ]


def test_every_clash_is_reported_with_both_jobs(tmp_path: Path) -> None:
    """All clashing pairs are found in one pass, each naming its entry of jobs."""
    problems = clash_problems(
        tmp_path,
        "jobs:\n  - prompt: x\n    seed: [1, 2, 3]\n  - prompt: y\n    seed: 4\n"
        "output:\n  filename: 'same'\n",
    )
    assert [p.split(": ", 2)[2].split(" would")[0] for p in problems] == [
        "jobs 0 (jobs[0]) and 1 (jobs[0])",
        "jobs 0 (jobs[0]) and 2 (jobs[0])",
        "jobs 0 (jobs[0]) and 3 (jobs[1])",
    ]


def test_long_names_differing_at_the_end_do_not_clash(tmp_path: Path) -> None:
    """Names cut for length keep a hash, so jobs whose names differ past the cut stay apart."""
    long = "a" * 200
    jobs = jobs_of(
        tmp_path,
        f"jobs:\n  - prompt: x\n    grid:\n      v: [{long}-1, {long}-2]\noutput:\n  filename: '{{v}}'\n",
    )
    assert len({j.filename for j in jobs}) == 2
    assert manifest_jobs(load_manifest(tmp_path / "m.yaml")).count().jobs == 2


def test_validate_reports_clashes_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`batchgen validate` prints every clash with both jobs and exits 2: nothing is paid for."""
    path = tmp_path / "m.yaml"
    path.write_text("jobs:\n  - prompt: x\n    grid:\n      f: [a, a.png, A]\noutput:\n  filename: '{f}'\n")
    assert main(["validate", str(path)]) == 2
    _, err = capsys.readouterr()
    assert err.splitlines() == [
        f"{path}:6: output.filename: jobs 0 and 1 would both write a.png;"
        " add {key} or {index} to the template",
        f"{path}:6: output.filename: jobs 0 and 2 would write a.png and A.png: one file where names ignore"
        " case (macOS, Windows); add {key} or {index} to the template",
        "error: 2 problems; nothing was submitted",
    ]


def test_a_path_deeper_than_max_depth_is_refused() -> None:
    """MAX_DEPTH segments are a path; one more is PathTooDeep, saying how deep; none is longer
    than MAX_PATH_BYTES however long its values."""
    deepest = output_path("/".join(["x" * 300] * MAX_DEPTH))
    assert deepest.count("/") == MAX_DEPTH - 1
    assert len(deepest.encode()) <= MAX_PATH_BYTES < 4096 - 1024
    with pytest.raises(
        PathTooDeep, match=f"makes a path 2,101 levels deep .* more than the {MAX_DEPTH} allowed"
    ):
        output_path("a/" * 2100 + "cat.png")
    assert output_path("//" * 30 + "a/./cat.png") == "a/cat.png"  # empty and dot segments are no level


def test_a_template_thousands_of_folders_deep_fails_validate_located(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A filename template 2,100 folders deep is a located error at validate and plan (exit 2),
    and run refuses it before anything is written or sent."""
    path = tmp_path / "deep.yaml"
    path.write_text("jobs:\n  - prompt: a cat\noutput:\n  filename: '" + "a/" * 2100 + "cat.png'\n")
    for command in (["validate"], ["plan"], ["run", "--emulate", "--out", str(tmp_path / "out")]):
        assert main([*command[:1], str(path), *command[1:]]) == 2
        err = capsys.readouterr().err
        assert f"{path}:4: output.filename: makes a path 2,101 levels deep" in err
    assert not (tmp_path / "out").exists()
