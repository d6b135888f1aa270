"""Wildcard files beside a manifest: found, read, located, counted in the manifest's sha256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from batchgen.errors import ManifestError
from batchgen.manifest.expand import count_jobs, expand
from batchgen.manifest.load import load_manifest
from batchgen.manifest.model import Manifest


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return [str(p) for p in info.value.problems]


def prompts_of(manifest: Manifest) -> list[str]:
    return [job.params.prompt for job in expand(manifest)]


def test_txt_yaml_and_json_collections(tmp_path: Path) -> None:
    """.txt (comments skipped), YAML hierarchies and JSON files beside the manifest are wildcards."""
    write(tmp_path / "wildcards/colours.txt", "# the colours\nred\n\n  blue  \n")
    write(tmp_path / "wildcards/clothes.yaml", "clothes:\n  tops: [shirt, '2::blouse']\n  shoes: boots\n")
    write(
        tmp_path / "wildcards/sub/moods.json", json.dumps({"mood": ["calm", {"text": "wild", "weight": 2}]})
    )
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: a __colours__ __clothes/tops__, __sub/mood__\n")
    manifest = load_manifest(path)
    assert count_jobs(manifest) == 8
    assert prompts_of(manifest)[:3] == ["a red shirt, calm", "a red shirt, wild", "a red blouse, calm"]


def test_globs_match_across_files_and_folders(tmp_path: Path) -> None:
    """__colours*__ takes every collection it matches, in name order; __clothes/*__ a whole branch."""
    write(tmp_path / "wildcards/colours-warm.txt", "red\norange\n")
    write(tmp_path / "wildcards/colours-cold.txt", "blue\nred\n")
    write(tmp_path / "wildcards/c.yaml", "clothes:\n  tops: [shirt]\n  shoes: [boots]\n")
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: __colours*__ __clothes/*__\n")
    assert prompts_of(load_manifest(path)) == [
        "blue boots",
        "blue shirt",
        "red boots",
        "red shirt",
        "orange boots",
        "orange shirt",
    ]


def test_a_folder_the_manifest_names(tmp_path: Path) -> None:
    """wildcards: PATH (or a list) replaces wildcards/ beside the manifest; a missing folder is located."""
    write(tmp_path / "lists/animals.txt", "cat\ndog\n")
    path = write(tmp_path / "m.yaml", "wildcards: lists\njobs:\n  - prompt: a __animals__\n")
    assert prompts_of(load_manifest(path)) == ["a cat", "a dog"]
    bad = write(tmp_path / "n.yaml", "wildcards: [lists, nope]\njobs:\n  - prompt: a __animals__\n")
    assert problems(bad) == [f"{bad}:1: wildcards: {tmp_path}/nope does not exist"]


def test_a_typo_is_located_with_did_you_mean(tmp_path: Path) -> None:
    """A wildcard no file defines is an error at its line and column, with the closest name."""
    write(tmp_path / "wildcards/colours.txt", "red\n")
    write(tmp_path / "wildcards/c.yaml", "clothes:\n  tops: [shirt]\n")
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: a __colour__ bag\n  - prompt: 'a __tops__'\n")
    assert problems(path) == [
        f"{path}:2:15: jobs[0].prompt: no wildcard __colour__ in {tmp_path}/wildcards"
        " (did you mean __colours__?)",
        f"{path}:3:16: jobs[1].prompt: no wildcard __tops__ in {tmp_path}/wildcards"
        " (did you mean __clothes/tops__?)",
    ]


def test_no_wildcards_folder(tmp_path: Path) -> None:
    """Without any wildcard folder, a wildcard says where it would have been looked for."""
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: a __colours__\n")
    assert problems(path) == [
        f"{path}:2:15: jobs[0].prompt: no wildcard __colours__: there is no {tmp_path}/wildcards/ folder,"
        " and the manifest names none (wildcards: PATH)"
    ]


def test_a_named_folder_that_does_not_exist(tmp_path: Path) -> None:
    """A wildcard not found names the folder the manifest named and where, not "it names none"."""
    path = write(tmp_path / "m.yaml", "wildcards: nosuchdir\njobs:\n  - prompt: x __colours__\n")
    assert problems(path) == [
        f"{path}:1: wildcards: {tmp_path}/nosuchdir does not exist",
        f"{path}:3:15: jobs[0].prompt: no wildcard __colours__: the wildcards folder {tmp_path}/nosuchdir"
        f" does not exist ({path}:1)",
    ]
    write(tmp_path / "lists/colors.txt", "red\n")
    both = write(tmp_path / "n.yaml", "wildcards: [lists, nope]\njobs:\n  - prompt: x __colours__\n")
    assert problems(both)[1] == (
        f"{both}:3:15: jobs[0].prompt: no wildcard __colours__ in {tmp_path}/lists"
        f" (did you mean __colors__?); the wildcards folder {tmp_path}/nope does not exist ({both}:1)"
    )


def test_problems_inside_wildcard_files_are_located_there(tmp_path: Path) -> None:
    """A bad value, a missing nested wildcard and a syntax error are located in the wildcard file."""
    write(tmp_path / "wildcards/w.txt", "red\nbl\x01ue\n__nothere__\n  caf {a|b\n")
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: x __w__\n")
    shown = f"{tmp_path}/wildcards/w.txt"
    assert problems(path) == [
        f"{shown}:2: contains the control character U+0001; only tab and newline are allowed",
        f"{shown}:3:1: __w__: no wildcard __nothere__ in {tmp_path}/wildcards",
        f"{shown}:4:7: __w__: invalid template: a '{{' that is never closed",
    ]


def test_circular_wildcards_are_an_error(tmp_path: Path) -> None:
    """Wildcards that use each other in a circle are refused, naming the circle."""
    write(tmp_path / "wildcards/a.txt", "x __b__\n")
    write(tmp_path / "wildcards/b.txt", "y __a__\n")
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: __a__\n")
    (problem,) = problems(path)
    circle = "wildcards use each other in a circle: __a__ -> __b__ -> __a__"
    assert problem == f"{tmp_path}/wildcards/b.txt:1:3: __b__: {circle}"


def test_one_name_in_two_yaml_files(tmp_path: Path) -> None:
    """Two YAML files defining one name make its use ambiguous: an error naming both files."""
    write(tmp_path / "wildcards/a.yaml", "colours: [red]\n")
    write(tmp_path / "wildcards/b.yaml", "colours: [blue]\n")
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: __colours__\n")
    (problem,) = problems(path)
    assert "is defined twice: in" in problem and "a.yaml" in problem and "b.yaml" in problem


def test_non_english_values_warn_in_their_file(tmp_path: Path) -> None:
    """A wildcard value with non-ASCII characters gets the prompts' warning, at its own line, once."""
    write(tmp_path / "wildcards/food.txt", "bread\ncafé au lait\n")
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: a __food__\n  - prompt: b __food__\n")
    manifest = load_manifest(path)
    assert [str(w) for w in manifest.warnings] == [
        f"{tmp_path}/wildcards/food.txt:2:1: __food__: contains non-ASCII characters;"
        " the API accepts English prompts only"
    ]


def test_wildcard_fields_must_be_defined(tmp_path: Path) -> None:
    """A {field} inside a wildcard value is a name the job must define, like one in its prompt."""
    write(tmp_path / "wildcards/w.txt", "a {colr} hat\n")
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: __w__\n    labels: {color: red}\n")
    assert problems(path) == [f"{path}:2: jobs[0].prompt: {{colr}} is not defined (did you mean {{color}}?)"]


def test_sha256_covers_csv_and_wildcard_files(tmp_path: Path) -> None:
    """The manifest's sha256 is the YAML's alone until other files feed the jobs; then it covers them."""
    plain = write(tmp_path / "plain.yaml", "jobs:\n  - prompt: a cat\n")
    assert load_manifest(plain).sha256 == hashlib.sha256(plain.read_bytes()).hexdigest()
    write(tmp_path / "wildcards/colours.txt", "red\n")
    write(tmp_path / "wildcards/unused.txt", "x\n")
    write(tmp_path / "p.csv", "sku\nA1\n")
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: a __colours__ {sku}\n    rows: p.csv\n")
    first = load_manifest(path)
    assert [s.display for s in first.sources] == [
        str(path),
        f"{tmp_path}/p.csv",
        f"{tmp_path}/wildcards/colours.txt",
    ]
    write(tmp_path / "wildcards/unused.txt", "y\n")
    assert load_manifest(path).sha256 == first.sha256  # a file no prompt uses is not a source
    write(tmp_path / "wildcards/colours.txt", "red\nblue\n")
    second = load_manifest(path)
    assert second.sha256 != first.sha256
    write(tmp_path / "p.csv", "sku\nA2\n")
    assert load_manifest(path).sha256 not in (first.sha256, second.sha256)


def test_sample_draws_per_job(tmp_path: Path) -> None:
    """sample: N gives N random prompts per job (counted as such), the same on every load."""
    write(tmp_path / "wildcards/animals.txt", "\n".join(f"animal{i}" for i in range(50)) + "\n")
    path = write(
        tmp_path / "m.yaml",
        "jobs:\n  - prompt: a {red|green|blue} __animals__ {sku}\n    sample: 4\n    grid: {sku: [A, B]}\n",
    )
    manifest = load_manifest(path)
    assert count_jobs(manifest) == 8
    first = prompts_of(manifest)
    assert len(set(first)) == 8
    assert prompts_of(load_manifest(path)) == first
    reseeded = write(
        tmp_path / "n.yaml", path.read_text().replace("sample: 4", "sample: {count: 4, seed: 9}")
    )
    assert prompts_of(load_manifest(reseeded)) != first


def test_sample_larger_than_the_combinations_warns(tmp_path: Path) -> None:
    """sample: N over a prompt with at most N combinations warns that every one is used."""
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: a {red|blue} cat\n    sample: 5\n")
    manifest = load_manifest(path)
    assert count_jobs(manifest) == 2
    assert [str(w) for w in manifest.warnings] == [
        f"{path}:2: jobs[0].prompt: sample: 5 but the prompt has 2 combinations: every one is used"
        " (drop sample: to say so)"
    ]


def test_an_alias_bomb_is_bounded(tmp_path: Path) -> None:
    """A YAML wildcard file whose aliases make 2**30 entries is refused after a bounded walk."""
    lines = ["l0: &l0 {a: [x], b: [y]}"]
    lines += [f"l{i}: &l{i} {{p: *l{i - 1}, q: *l{i - 1}}}" for i in range(1, 30)]
    write(tmp_path / "wildcards/bomb.yaml", "\n".join(lines) + "\n")
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: a __l0/a__\n")
    assert problems(path) == [f"{tmp_path}/wildcards/bomb.yaml: holds more than 200,000 entries (aliases?)"]


def test_sha256_does_not_depend_on_how_the_manifest_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sha256 over several files is the same from any path to the manifest: sha256sum in its folder."""
    write(tmp_path / "wildcards/colours.txt", "red\n")
    write(tmp_path / "p.csv", "sku\nA1\n")
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: a __colours__ {sku}\n    rows: p.csv\n")
    listing = "".join(
        f"{hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()}  {name}\n"
        for name in ("m.yaml", "p.csv", "wildcards/colours.txt")
    )
    expected = hashlib.sha256(listing.encode()).hexdigest()
    assert load_manifest(path).sha256 == expected
    monkeypatch.chdir(tmp_path)
    assert load_manifest("m.yaml").sha256 == expected
    assert load_manifest("./../" + tmp_path.name + "/m.yaml").sha256 == expected
