"""The parameter table: defaults, ranges, allowed values and strict string parsing."""

from __future__ import annotations

import pytest

from batchgen.errors import ParamsInvalid
from batchgen.manifest.params import (
    ASPECT_RATIOS,
    DEFAULT_SEED,
    MAX_PROMPT_CHARS,
    PARAMETER_NAMES,
    TEXT_PARAMS,
    BriaParams,
    ValuesCache,
    aspect_ratio_size,
    control_characters,
    prompt_problems,
    prompt_warnings,
    suggest_name,
    trusted_params,
    validate_params,
)


def problems(values: dict[str, object]) -> dict[str, str]:
    """The problems validate_params reports, as field -> message."""
    with pytest.raises(ParamsInvalid) as info:
        validate_params(values)
    return {p.field: p.message for p in info.value.problems}


def test_thirteen_parameters_with_protocol_defaults() -> None:
    """All 13 parameters exist and only the prompt is required; defaults match Segmind's documentation."""
    assert len(PARAMETER_NAMES) == 13
    body = validate_params({"prompt": "a mug"}).to_api()
    assert body == {
        "prompt": "a mug",
        "aspect_ratio": "1:1",
        "mode": "base",
        "seed": DEFAULT_SEED,
        "negative_prompt": "no storms",
        "steps_num": 40,
        "text_guidance_scale": 7.0,
        "medium": "photography",
        "prompt_enhancement": True,
        "enhance_image": True,
        "prompt_content_moderation": True,
        "content_moderation": False,
        "ip_signal": False,
    }


def test_strings_parse_strictly_like_csv_cells() -> None:
    """'true'/'false', digit strings and decimal strings parse; the result is typed."""
    params = validate_params(
        {"prompt": "x", "steps_num": "45", "seed": " 12 ", "text_guidance_scale": "7.5", "ip_signal": "TRUE"}
    )
    typed = (params.steps_num, params.seed, params.text_guidance_scale, params.ip_signal)
    assert typed == (45, 12, 7.5, True)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ip_signal", "yes", "'yes' is not a boolean (use true or false)"),
        ("ip_signal", 1, "1 is not a boolean (use true or false)"),
        ("steps_num", "7.5", "'7.5' is not an integer"),
        ("steps_num", 30.0, "30.0 is not an integer"),
        ("seed", True, "True is not an integer"),
        ("text_guidance_scale", "abc", "'abc' is not a number"),
        ("text_guidance_scale", "nan", "'nan' is not a finite number"),
        ("negative_prompt", 5, "5 is not a string"),
    ],
)
def test_wrong_types_name_the_value(field: str, value: object, message: str) -> None:
    """A value of the wrong type is an error naming the field and the value."""
    assert problems({"prompt": "x", field: value}) == {field: message}


def test_ranges_and_choices() -> None:
    """Out-of-range numbers and values outside the allowed set are reported, each by field."""
    found = problems({"prompt": "x", "steps_num": 60, "seed": 0, "mode": "ultra", "text_guidance_scale": 11})
    assert found == {
        "mode": "'ultra' is not allowed; choose one of 'base', 'fast' or 'hd'",
        "seed": "0 is below the minimum 1",
        "steps_num": "60 is above the maximum 50",
        "text_guidance_scale": "11 is above the maximum 10",
    }


def test_every_problem_is_reported_in_table_order() -> None:
    """All problems come back at once, ordered as the parameter table."""
    with pytest.raises(ParamsInvalid) as info:
        validate_params({"ip_signal": "no", "step_num": 30, "aspect_ratio": "2:1"})
    fields = [p.field for p in info.value.problems]
    assert fields == ["prompt", "aspect_ratio", "ip_signal", "step_num"]


def test_unknown_name_suggests_the_right_one() -> None:
    """An unknown parameter is rejected with a did-you-mean suggestion."""
    assert problems({"prompt": "x", "step_num": 30}) == {
        "step_num": "is not a parameter of bria-text-to-image (did you mean steps_num?)"
    }
    assert suggest_name("neg_prompt") == "negative_prompt"
    assert suggest_name("zzz") is None


def test_empty_prompt_is_an_error() -> None:
    """The prompt is required and may not be empty."""
    assert problems({"prompt": ""}) == {"prompt": "must not be empty"}


def test_params_are_frozen() -> None:
    """Validated parameters cannot be changed afterwards (jobs are keyed by them)."""
    params = BriaParams(prompt="x")
    with pytest.raises(ValueError):
        params.seed = 3  # type: ignore[misc]


def test_prompt_warnings() -> None:
    """Non-English or special-character prompts give warnings, plain ones none."""
    assert prompt_warnings("Studio photo of a red tote bag, 50% off!") == []
    assert prompt_warnings("Café au lait") == [
        "contains non-ASCII characters; the API accepts English prompts only"
    ]
    assert prompt_warnings("a <b> tag") == ["contains special characters '<>'; the API may reject them"]


def test_prompt_problems_cap_length_and_refuse_control_characters() -> None:
    """Over the cap or with a control character a prompt is an error; tab, newline and CR are fine."""
    assert TEXT_PARAMS == ("prompt", "negative_prompt")
    assert prompt_problems("a\tred\r\nmug\n" + "x" * (MAX_PROMPT_CHARS - 11)) == []
    assert prompt_problems("x" * (MAX_PROMPT_CHARS + 1))[0].startswith(
        "is 4,001 characters long; the limit is 4,000"
    )
    assert control_characters("a\x00b\x1b\x85") == (
        "contains the control characters NUL, U+001B, U+0085; only tab and newline are allowed"
    )
    # A control character is an error, not also a "special character" warning.
    assert prompt_warnings("a\x07b") == []


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_aspect_ratio_size_keeps_the_ratio(ratio: str) -> None:
    """Image sizes keep the asked aspect ratio with the given long side."""
    w, h = aspect_ratio_size(ratio, 512)
    rw, rh = (int(x) for x in ratio.split(":"))
    assert max(w, h) == 512
    assert abs(w / h - rw / rh) < 0.01


_GOOD: list[dict[str, object]] = [
    {"prompt": "a cat"},
    {"prompt": "a cat", "seed": 1, "mode": "fast", "aspect_ratio": "4:5"},
    {
        "prompt": "a cat",
        "seed": "42",
        "steps_num": "40",
        "text_guidance_scale": "7.5",
        "enhance_image": "false",
    },
    {"prompt": "a cat", "text_guidance_scale": 7, "prompt_enhancement": True, "ip_signal": "true"},
    {"negative_prompt": "blur", "prompt": "a dog", "medium": "art", "content_moderation": False},
]


def test_values_cache_gives_what_validation_gives() -> None:
    """Made of values validated once each, a job's parameters are validate_params's, in table order."""
    cache = ValuesCache()
    for _ in range(2):  # the second round from the cache
        for values in _GOOD:
            api = cache.api_values(values)
            assert api == validate_params(values).to_api()
            assert list(api) == list(PARAMETER_NAMES)
            assert [type(v) for v in api.values()] == [
                type(v) for v in validate_params(values).to_api().values()
            ]


def test_values_cache_tells_equal_values_of_other_types_apart() -> None:
    """1, 1.0 and True hash alike; a valid seed 1 does not let seed True through, nor "true" a steps_num."""
    cache = ValuesCache()
    assert cache.api_values({"prompt": "a", "seed": 1})["seed"] == 1
    with pytest.raises(ParamsInvalid):
        cache.api_values({"prompt": "a", "seed": True})
    assert cache.api_values({"prompt": "a", "enhance_image": True})["enhance_image"] is True
    with pytest.raises(ParamsInvalid):
        cache.api_values({"prompt": "a", "steps_num": True})
    assert type(cache.api_values({"prompt": "a", "text_guidance_scale": 7})["text_guidance_scale"]) is float


@pytest.mark.parametrize(
    "values",
    [
        {"prompt": "a", "seed": 0, "mode": "slow", "step_num": 3},
        {"seed": 5},
        {"prompt": "", "aspect_ratio": "16x9"},
        {"prompt": "a", "steps_num": "forty"},
    ],
)
def test_values_cache_raises_what_validation_raises(values: dict[str, object]) -> None:
    """A wrong, unknown or missing value raises validate_params's error: every problem, in table order."""
    cache = ValuesCache()
    cache.api_values({"prompt": "a", "seed": 3})  # a cache with something in it
    with pytest.raises(ParamsInvalid) as got:
        cache.api_values(values)
    with pytest.raises(ParamsInvalid) as want:
        validate_params(values)
    assert got.value.problems == want.value.problems


def test_trusted_params_is_the_validated_model() -> None:
    """trusted_params of validated values equals, dumps, hashes and copies like validate_params's model."""
    for values in _GOOD:
        validated = validate_params(values)
        trusted = trusted_params(ValuesCache().api_values(values))
        assert trusted == validated
        assert hash(trusted) == hash(validated)
        assert trusted.to_api() == validated.to_api()
        assert trusted.model_dump_json() == validated.model_dump_json()
        copied = trusted.model_copy(update={"seed": 9})
        assert (copied.seed, trusted.seed) == (9, validated.seed)
    assert trusted_params(ValuesCache().api_values({"prompt": "x"})).model_fields_set == set(PARAMETER_NAMES)
