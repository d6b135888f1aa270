"""The prompts a dynamic template stands for: counted, listed in order, drawn at random."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from batchgen.manifest.prompts import Prompts
from batchgen.manifest.wildcards import Wildcards


def prompts(tmp_path: Path, files: dict[str, str] | None = None) -> Prompts:
    folder = tmp_path / "wildcards"
    for name, text in (files or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return Prompts(Wildcards([(folder, "wildcards")]) if files else None)


def test_every_combination_in_order(tmp_path: Path) -> None:
    """Variants give each option in written order; the last part varies fastest."""
    p = prompts(tmp_path)
    assert list(p.each("a {red|green} {cat|dog}")) == ["a red cat", "a red dog", "a green cat", "a green dog"]
    assert p.count("a {red|green} {cat|dog}") == 4


def test_picking_several_gives_each_set_once(tmp_path: Path) -> None:
    """{2$$a|b|c} gives each pair once in written order; a range goes from its low end up; joiners join."""
    p = prompts(tmp_path)
    assert list(p.each("{2$$a|b|c}")) == ["a, b", "a, c", "b, c"]
    assert list(p.each("{2$$ and $$a|b|c}")) == ["a and b", "a and c", "b and c"]
    assert list(p.each("{1-2$$a|b}")) == ["a", "b", "a, b"]
    assert list(p.each("{4$$a|b|c}")) == ["a, b, c"]  # more than there are: all of them
    assert list(p.each("x {0-1$$big} dog")) == ["x dog", "x big dog"]  # runs of spaces made one


def test_variables_once_or_at_each_use(tmp_path: Path) -> None:
    """${c=!...} is chosen once for the prompt; ${c=...} at each use; a default stands in for an unset one."""
    p = prompts(tmp_path)
    assert list(p.each("${c=!{red|blue}} a ${c} car, a ${c} bike")) == [
        "a red car, a red bike",
        "a blue car, a blue bike",
    ]
    assert p.count("${c={red|blue}} a ${c} car, a ${c} bike") == 4
    assert list(p.each("${season=winter} in ${season}")) == ["in winter"]
    assert list(p.each("in ${season:summer}")) == ["in summer"]
    assert list(p.each("costs ${price}")) == ["costs ${price}"]  # the field {price} after a $


def test_choices_are_never_read_as_syntax_again(tmp_path: Path) -> None:
    """A chosen prompt is a field template: literal braces stay escaped, fields stay fields."""
    p = prompts(tmp_path)
    assert list(p.each("{{x}} {a|b} {sku}")) == ["{{x}} a {sku}", "{{x}} b {sku}"]


def random_template(rng: random.Random, depth: int = 0) -> str:
    """A random template of literals, fields, variants (with counts) and variables."""
    parts = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        if kind < 0.3 or depth > 2:
            parts.append(rng.choice(["a", "b ", "{f}", " c"]))
        elif kind < 0.8:
            options = [random_template(rng, depth + 1) for _ in range(rng.randint(2, 4))]
            count = rng.choice(["", "", "2$$", "1-2$$", "0-1$$", "2-$$", "2$$+$$"])
            parts.append("{ " + count + "|".join(options) + "}")  # "{ {": not a literal brace
        elif depth == 0:  # variables are set at the top of a prompt only
            parts.append("${v=" + ("!" if rng.random() < 0.5 else "") + "{x|y|z}}${v}${v}")
        else:
            parts.append("${v:{x|w}}")
    return "".join(parts)


def test_counting_is_the_number_listed(tmp_path: Path) -> None:
    """For 200 random templates (of at most 500 prompts), the arithmetic count is the number listed."""
    p = prompts(tmp_path)
    rng = random.Random(20)
    checked = 0
    while checked < 200:
        text = random_template(rng)
        count = p.count(text)
        if count > 500:
            continue
        assert count == sum(1 for _ in p.each(text)), text
        checked += 1


def test_a_trillion_combinations_are_counted_not_listed(tmp_path: Path) -> None:
    """12 variants of 10 options count 10**12 at once (the job cap refuses it without listing)."""
    p = prompts(tmp_path)
    text = " ".join("{" + "|".join(str(i) for i in range(10)) + "}" for _ in range(12))
    started = time.process_time()
    assert p.count(text) == 10**12
    picks = "{1-$$" + "|".join(f"w{i}" for i in range(200)) + "}"
    assert p.count(picks) == 2**200 - 1
    assert time.process_time() - started < 2


def test_random_draws_are_frozen(tmp_path: Path) -> None:
    """The same template, seed and salt draw the same prompts everywhere (pinned: keys depend on them)."""
    p = prompts(tmp_path)
    text = "{a|b|c|d|e|f|g|h} {1|2|3|4|5|6|7|8}"
    assert p.sample(text, 5, seed=0, salt="") == ["h 6", "c 2", "b 4", "d 7", "e 4"]
    assert p.sample(text, 5, seed=0, salt="") == ["h 6", "c 2", "b 4", "d 7", "e 4"]
    assert p.sample(text, 5, seed=1, salt="") != p.sample(text, 5, seed=0, salt="")
    assert p.sample(text, 5, seed=0, salt="row 2") != p.sample(text, 5, seed=0, salt="")


def test_random_draws_are_distinct_and_among_the_combinations(tmp_path: Path) -> None:
    """N draws are N distinct prompts, each one of the listed combinations; at most all of them."""
    p = prompts(tmp_path)
    text = "{2$$a|b|c|d} {x|y} ${v=!{1|2}}${v}"
    every = set(p.each(text))
    drawn = p.sample(text, 10, seed=3, salt="")
    assert len(drawn) == len(set(drawn)) == 10
    assert set(drawn) <= every
    assert sorted(p.sample(text, 100, seed=3, salt="")) == sorted(every)
    assert p.sampled_count(text, 10) == 10 and p.sampled_count(text, 100) == len(every) == 24


def test_weights_steer_random_draws(tmp_path: Path) -> None:
    """A weight-9 option is drawn about nine times as often as a weight-1 one; weight 0 never."""
    p = prompts(tmp_path)
    drawn = [
        p.sample("{9::heavy|1::light|0::never} {" + f"{i}" + "|z}", 1, seed=i, salt="")[0] for i in range(400)
    ]
    heavy = sum(d.startswith("heavy") for d in drawn)
    assert 320 < heavy < 390
    assert not any(d.startswith("never") for d in drawn)


def test_wildcard_values_are_templates(tmp_path: Path) -> None:
    """Wildcard values may hold variants, fields and other wildcards; a glob takes every collection."""
    p = prompts(
        tmp_path,
        {
            "colours.txt": "# a comment\nred\n\n{navy|sky} blue\nred\n",
            "colours-warm.txt": "orange\n",
            "things.txt": "a __colours__ {item}\n",
        },
    )
    assert list(p.each("__colours__")) == ["red", "navy blue", "sky blue"]
    assert p.count("__colours*__") == 4
    assert list(p.each("__things__")) == ["a red {item}", "a navy blue {item}", "a sky blue {item}"]
    assert p.analyse("__things__").names == ["item"]
    # Two of the collection's values (red, "{navy|sky} blue"): never two choices of one value.
    assert list(p.each("{2$$__colours__}")) == ["red, navy blue", "red, sky blue"]


def test_a_template_with_problems_has_no_count(tmp_path: Path) -> None:
    """A template that does not parse, or names a missing wildcard, is analysed into issues."""
    p = prompts(tmp_path, {"colours.txt": "red\n"})
    assert p.analyse("a {red").count is None
    analysis = p.analyse("a __colour__")
    assert analysis.count is None
    assert [i.message for i in analysis.issues] == [
        "no wildcard __colour__ in wildcards (did you mean __colours__?)"
    ]
    with pytest.raises(ValueError):
        p.count("a __colour__")
