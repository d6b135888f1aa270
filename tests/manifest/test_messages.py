"""Messages as a new user meets them: each says what is wrong where, and what was likely meant."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.errors import ManifestError
from batchgen.manifest.expand import expand
from batchgen.manifest.load import load_manifest


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return [str(p) for p in info.value.problems]


def test_a_column_the_csv_lacks(tmp_path: Path) -> None:
    """A template naming a column the CSV has not says so and lists the CSV's columns."""
    write(tmp_path / "products.csv", "sku,name,material\nA1,tote,canvas\n")
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: '{name} in {style}'\n    rows: products.csv\n")
    assert problems(path) == [
        f"{path}:2: jobs[0].prompt: {{style}} is not defined: {tmp_path}/products.csv has no column 'style'"
        " (its columns: sku, name, material)"
    ]


def test_a_csv_that_does_not_exist(tmp_path: Path) -> None:
    """A missing CSV gets a "did you mean" among the folder's CSV files, or their list."""
    write(tmp_path / "products.csv", "prompt\na\n")
    write(tmp_path / "colours.csv", "prompt\nb\n")
    path = write(tmp_path / "m.yaml", "jobs:\n  - rows: product.csv\n  - rows: items.csv\n")
    assert problems(path) == [
        f"{path}:2: jobs[0].rows: CSV file not found: {tmp_path}/product.csv (did you mean products.csv?)",
        f"{path}:3: jobs[1].rows: CSV file not found: {tmp_path}/items.csv"
        " (the CSV files there: colours.csv, products.csv)",
    ]


def test_an_aspect_ratio_written_with_an_x(tmp_path: Path) -> None:
    """aspect_ratio: 16x9 (or 16/9, 4 x 5) gets "did you mean 16:9"; a near mode gets one too."""
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: a\n    aspect_ratio: 16x9\n    mode: fats\n")
    assert problems(path) == [
        f"{path}:3: jobs[0].aspect_ratio: '16x9' is not allowed; choose one of '1:1', '2:3', '3:2', '3:4',"
        " '4:3', '4:5', '5:4', '9:16' or '16:9' (did you mean 16:9?)",
        f"{path}:4: jobs[0].mode: 'fats' is not allowed; choose one of 'base', 'fast' or 'hd'"
        " (did you mean fast?)",
    ]
    for written, meant in (("16/9", "16:9"), ("'4 x 5'", "4:5"), ("9X16", "9:16")):
        other = write(tmp_path / "n.yaml", f"jobs:\n  - prompt: a\n    aspect_ratio: {written}\n")
        assert problems(other)[0].endswith(f"(did you mean {meant}?)")
    far = write(tmp_path / "f.yaml", "jobs:\n  - prompt: a\n    aspect_ratio: 7x3\n")
    assert "did you mean" not in problems(far)[0]


def test_an_unclosed_quote_points_where_it_opens(tmp_path: Path) -> None:
    """An unclosed quote is located at its opening line and column, not at the end of the file."""
    path = write(tmp_path / "m.yaml", 'jobs:\n  - prompt: "a red bag\n    seed: 3\n  - prompt: b\n')
    assert problems(path) == [f"{path}:2:13: YAML syntax error: the quote that opens here is never closed"]
    single = write(tmp_path / "s.yaml", "jobs:\n  - prompt: 'a red bag\n  - prompt: b\n")
    assert problems(single) == [
        f"{single}:2:13: YAML syntax error: the quote that opens here is never closed"
    ]
    # Closed by the next quote, lines later: the error shows there, and names the opening line.
    later = write(tmp_path / "l.yaml", 'jobs:\n  - prompt: "a red bag\n  - prompt: "b"\n')
    (problem,) = problems(later)
    assert problem.startswith(f"{later}:3: YAML syntax error: ")
    assert problem.endswith("(is the quote on line 2 closed?)")


def test_a_short_row_hides_no_other_row_error(tmp_path: Path) -> None:
    """A row with too few cells is reported with every other row's problem, not instead of them."""
    write(tmp_path / "p.csv", "prompt,sku,seed\na {sku},A1,1\nshort,row\n{sku} mug,,2\nfine,B2,abc\n")
    path = write(tmp_path / "m.yaml", "jobs:\n  - rows: p.csv\n")
    assert problems(path) == [
        f"{tmp_path}/p.csv:3: has 2 cells; the header has 3",
        f"{tmp_path}/p.csv:4: column sku: is empty but the prompt uses {{sku}}",
        f"{tmp_path}/p.csv:5: column seed: 'abc' is not an integer",
    ]
    csv_manifest = write(tmp_path / "q.csv", "prompt,sku\na,A1\nshort\n,B2\n")
    assert problems(csv_manifest) == [
        f"{csv_manifest}:3: has 1 cells; the header has 2",
        f"{csv_manifest}:4: column prompt: is empty and the job has no prompt",
    ]


def test_an_explicit_label_is_not_a_misspelt_parameter(tmp_path: Path) -> None:
    """labels: {code: ...} is a label on purpose: no "did you mean mode?" warning."""
    path = write(tmp_path / "m.yaml", "jobs:\n  - prompt: a {code} mug\n    labels: {code: X1, seeds: 2}\n")
    assert load_manifest(path).warnings == []


def test_repeated_values_are_each_reported_where_they_are(tmp_path: Path) -> None:
    """Values checked once each still report every wrong cell at its row, and true is no seed after 1."""
    write(tmp_path / "rows.csv", "prompt,mode,seed\na,fast,1\nb,slow,2\nc,fast,1\nd,slow,x\n")
    path = write(tmp_path / "m.yaml", "jobs:\n  - rows: rows.csv\n  - prompt: p\n    seed: [1, true, 1]\n")
    found = problems(path)
    assert [p.split(": ", 2)[:2] for p in found] == [
        [f"{tmp_path}/rows.csv:3", "column mode"],
        [f"{tmp_path}/rows.csv:5", "column mode"],
        [f"{tmp_path}/rows.csv:5", "column seed"],
        [f"{path}:4", "jobs[1].seed[1]"],
    ]


def test_prompt_is_the_one_name_a_prompt_cannot_use(tmp_path: Path) -> None:
    """{prompt} with a CSV holding a prompt column says why it cannot be used, not that the column lacks."""
    write(tmp_path / "p2.csv", '"prompt","sku","seed"\r\n"a red mug",SKU/1,5\r\n')
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "p2.csv").read_bytes())
    for csv in ("p2.csv", "bom.csv"):
        path = write(tmp_path / "m.yaml", f"jobs:\n  - prompt: '{{prompt}} studio'\n    rows: {csv}\n")
        assert problems(path) == [
            f"{path}:2: jobs[0].prompt: {{prompt}} is not defined: a prompt cannot use itself;"
            f" {tmp_path}/{csv}'s prompt column sets each row's whole prompt:"
            " to build prompts from a column, give it another name (e.g. subject) and use {subject}"
        ]
    plain = write(tmp_path / "n.yaml", "jobs:\n  - prompt: '{prompt} studio'\n")
    assert problems(plain) == [
        f"{plain}:2: jobs[0].prompt: {{prompt}} is not defined: a prompt cannot use itself"
    ]
    cells = write(tmp_path / "c.csv", "prompt,sku\n{prompt} studio,A1\n")
    assert problems(cells) == [
        f"{cells}:2: column prompt: {{prompt}} is not defined: a prompt cannot use itself; {cells}'s prompt"
        " column sets each row's whole prompt: to build prompts from a column, give it another name"
        " (e.g. subject) and use {subject}"
    ]
    cased = write(tmp_path / "k.csv", "Prompt,sku\na red mug,A1\n")
    path = write(tmp_path / "k.yaml", f"jobs:\n  - prompt: '{{prompt}} studio'\n    rows: {cased.name}\n")
    assert problems(path) == [
        f"{path}:2: jobs[0].prompt: {{prompt}} is not defined: a prompt cannot use itself"
        " (did you mean {Prompt}?)"
    ]
    renamed = write(tmp_path / "s.csv", '"subject","sku"\r\n"a red mug",SKU/1\r\n')
    ok = write(tmp_path / "o.yaml", f"jobs:\n  - prompt: '{{subject}} studio'\n    rows: {renamed.name}\n")
    assert [job.params.prompt for job in expand(load_manifest(ok))] == ["a red mug studio"]
