"""Reading dynamic prompts: variants, wildcards and variables beside the {name} fields."""

from __future__ import annotations

import pytest

from batchgen.errors import TemplateError
from batchgen.manifest.dynamic import Variant, VarSet, VarUse, Wildcard, parse_prompt
from batchgen.manifest.template import Field, parse_template


def error(text: str) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        parse_prompt(text)
    return info.value


def test_plain_prompts_are_not_dynamic() -> None:
    """Text, fields, literal braces, `#`, `$5` and single underscores are no dynamic syntax."""
    for text in ("a red bag", "a {color} bag {n:05d}", "{{literal}}", "issue #1, $5 snake_case x_y_"):
        assert not parse_prompt(text).dynamic, text


def test_fields_and_variants_never_collide() -> None:
    """{name} and {name:05d} are fields; braces holding | or a N$$ count are variants."""
    (field,) = parse_prompt("{color}").seq.parts
    assert field == Field("color")
    (padded,) = parse_prompt("{n:05d}").seq.parts
    assert padded == Field("n", 5, "0")
    (variant,) = parse_prompt("{red|green}").seq.parts
    assert isinstance(variant, Variant) and len(variant.options) == 2
    (picks,) = parse_prompt("{2$$a|b|c}").seq.parts
    assert isinstance(picks, Variant) and (picks.low, picks.high, picks.joiner) == (2, 2, ", ")


def test_counts_joiners_weights_and_nesting() -> None:
    """Count ranges, joiners, weights and nested variants are read as sd-dynamic-prompts writes them."""
    cases = {
        "{1-2$$a|b|c}": (1, 2, ", "),
        "{-2$$a|b|c}": (1, 2, ", "),
        "{2-$$a|b|c}": (2, None, ", "),
        "{2$$ and $$a|b|c}": (2, 2, " and "),
    }
    for text, expected in cases.items():
        (variant,) = parse_prompt(text).seq.parts
        assert isinstance(variant, Variant)
        assert (variant.low, variant.high, variant.joiner) == expected, text
    (weighted,) = parse_prompt("{0.5::red|2::green|blue}").seq.parts
    assert isinstance(weighted, Variant)
    assert [o.weight for o in weighted.options] == [0.5, 2.0, 1.0]
    (nested,) = parse_prompt("{a|{b|c}}").seq.parts
    assert isinstance(nested, Variant) and isinstance(nested.options[1].seq.parts[0], Variant)


def test_spaces_around_options_are_layout() -> None:
    """{ red | green } gives red and green, without the spaces around them."""
    (variant,) = parse_prompt("{ red |\n green }").seq.parts
    assert isinstance(variant, Variant)
    assert [o.seq.parts for o in variant.options] == [("red",), ("green",)]


def test_wildcards_and_their_names() -> None:
    """__name__, __a/b__ and globs are wildcards; __ without a name after it is text."""
    parts = parse_prompt("x __colours__ y __clothes/tops__ __colours*__").seq.parts
    assert [p.pattern for p in parts if isinstance(p, Wildcard)] == ["colours", "clothes/tops", "colours*"]
    assert not parse_prompt("a __ b __ c").dynamic
    assert not parse_prompt("ends with __").dynamic
    (_, wildcard) = parse_prompt("a___my_list__").seq.parts
    assert isinstance(wildcard, Wildcard) and wildcard.pattern == "my_list"


def test_variables_set_use_and_default() -> None:
    """${x=v} sets (=! chooses once, ?= keeps an outer value); ${x} and ${x:d} use."""
    parts = parse_prompt("${s=!{a|b}}${t?=c}${s} ${u:winter}").seq.parts
    sets = [p for p in parts if isinstance(p, VarSet)]
    assert [(v.name, v.immediate, v.keep) for v in sets] == [("s", True, False), ("t", False, True)]
    uses = [p for p in parts if isinstance(p, VarUse)]
    assert [(u.name, u.default is not None) for u in uses] == [("s", False), ("u", True)]


def test_dollar_field_keeps_its_old_meaning() -> None:
    """`costs ${price}` with no variable price set is still a $ then the field {price}."""
    prompt = parse_prompt("costs ${price}")
    assert not prompt.dynamic
    assert parse_template(prompt.text).names == ("price",)


def test_errors_say_what_and_where() -> None:
    """Each syntax error carries the offset of the character it is about."""
    assert error("a {red|blue").offset == 2
    assert "never closed" in str(error("a {red|blue"))
    assert error("x }").offset == 2
    assert "neither a field" in str(error("a {photo of x}"))
    assert "empty variant" in str(error("{}"))
    assert "not supported" in str(error("{~a|b}"))
    assert "not supported" in str(error("__~colours__"))
    assert "parameterised" in str(error("__season(s=a)__"))
    assert error("{a|${x=b}}").offset == 3
    assert "goes down" in str(error("{3-1$$a|b|c}"))
    assert "weight 0" in str(error("{0::a|0::b}"))
    assert error("${x").offset == 0


def test_double_braces_open_no_variant() -> None:
    """Outside a variant {{ is a literal brace, so a variant starting with a variant needs a space."""
    assert "write a variant that starts with one as { {a|b}|c}" in str(error("{{a|b}|c}"))
    assert isinstance(parse_prompt("{ {a|b}|c}").seq.parts[0], Variant)


def test_nesting_is_bounded() -> None:
    """Variants or variable defaults nested 2,000 deep are one located error, not a RecursionError."""
    assert "nested more than 32 deep" in str(error("{ " * 2000 + "a" + "}" * 2000))
    deep = error("${a:" * 2000 + "x" + "}" * 2000)
    assert "nested more than 32 deep" in str(deep) and deep.offset == 128
