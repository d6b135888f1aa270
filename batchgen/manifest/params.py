"""The parameters of Segmind's ``bria-text-to-image``: the one table batchgen has.

Both the manifest loader and the emulator validate with :class:`BriaParams`, so a
job that validates here is a request the emulator accepts, and the other way round.

Values may arrive as strings (CSV cells, query strings); they are parsed strictly:
booleans only from ``true``/``false``, integers only from digit strings, numbers only
from decimal strings. Anything else is an error that names the field.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from batchgen.errors import ParamProblem, ParamsInvalid  # this module's error, drawn in errors.py's tree

__all__ = [
    "ASPECT_RATIOS",
    "DEFAULT_SEED",
    "INTEGER_PARAMS",
    "MAX_PROMPT_CHARS",
    "MEDIUMS",
    "MODES",
    "PARAMETER_NAMES",
    "SEED_MAX",
    "SEED_MIN",
    "STRING_PARAMS",
    "TEXT_PARAMS",
    "BriaParams",
    "ParamProblem",
    "ParamsInvalid",
    "aspect_ratio_size",
    "control_characters",
    "prompt_problems",
    "prompt_warnings",
    "ValuesCache",
    "suggest_name",
    "trusted_params",
    "validate_params",
]

AspectRatio = Literal["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9"]
Mode = Literal["base", "fast", "hd"]
Medium = Literal["photography", "art"]

ASPECT_RATIOS: tuple[str, ...] = get_args(AspectRatio)
MODES: tuple[str, ...] = get_args(Mode)
MEDIUMS: tuple[str, ...] = get_args(Medium)

SEED_MIN = 1
SEED_MAX = 999_999
DEFAULT_SEED = 654_321

_INT_TEXT = re.compile(r"[+-]?\d+")


def _parse_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{value!r} is not a boolean (use true or false)")


def _parse_int(value: Any) -> Any:
    # bool is an int subclass; True must not slip through as 1.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value.strip())
    raise ValueError(f"{value!r} is not an integer")


def _parse_number(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
    else:
        raise ValueError(f"{value!r} is not a number")
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _parse_str(value: Any) -> Any:
    if isinstance(value, str):
        return value
    raise ValueError(f"{value!r} is not a string")


Bool = Annotated[bool, BeforeValidator(_parse_bool)]
Int = Annotated[int, BeforeValidator(_parse_int)]
Number = Annotated[float, BeforeValidator(_parse_number)]
Str = Annotated[str, BeforeValidator(_parse_str)]


class BriaParams(BaseModel):
    """All 13 parameters of bria-text-to-image, with the API's defaults and limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: Annotated[Str, Field(min_length=1, description="English only, no special characters")]
    aspect_ratio: AspectRatio = "1:1"
    mode: Annotated[Mode, Field(description="base (Bria 3.2), fast (2.3), hd (2.2)")] = "base"
    seed: Annotated[Int, Field(ge=SEED_MIN, le=SEED_MAX)] = DEFAULT_SEED
    negative_prompt: Str = "no storms"
    steps_num: Annotated[Int, Field(ge=20, le=50)] = 40
    text_guidance_scale: Annotated[Number, Field(ge=1, le=10)] = 7.0
    medium: Medium = "photography"
    prompt_enhancement: Bool = True
    enhance_image: Bool = True
    prompt_content_moderation: Bool = True
    content_moderation: Bool = False
    ip_signal: Bool = False

    def to_api(self) -> dict[str, Any]:
        """The JSON body to send: every parameter written out, defaults included."""
        return self.model_dump(mode="json")


PARAMETER_NAMES: tuple[str, ...] = tuple(BriaParams.model_fields)


def _names_of_type(*kinds: type) -> tuple[str, ...]:
    names = []
    for name, info in BriaParams.model_fields.items():
        annotation = info.annotation
        choices = get_args(annotation) if get_origin(annotation) is Literal else ()
        base = type(choices[0]) if choices else annotation
        if base in kinds:
            names.append(name)
    return tuple(names)


# Derived from the table, for readers that must treat YAML scalars by kind.
INTEGER_PARAMS: tuple[str, ...] = _names_of_type(int)
STRING_PARAMS: tuple[str, ...] = _names_of_type(str)
# Free text (not a choice from a list): what prompt_problems applies to.
TEXT_PARAMS: tuple[str, ...] = tuple(
    name for name in STRING_PARAMS if get_origin(BriaParams.model_fields[name].annotation) is not Literal
)


def suggest_name(name: str, choices: tuple[str, ...] = PARAMETER_NAMES) -> str | None:
    """The closest known name to a misspelt one, or None."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return close[0] if close else None


# How people write a ratio: 16x9, 16X9, 16/9, 16-9, 16×9, 16 : 9.
_RATIO_SEPARATOR = re.compile(r"\s*[xX×/*:-]\s*")


def _close_choice(field: str, value: object) -> str | None:
    """The allowed value a wrong one was surely meant as: ``16x9`` is 16:9, ``fats`` fast."""
    info = BriaParams.model_fields.get(field)
    if info is None or not isinstance(value, str):
        return None
    choices = tuple(str(c) for c in get_args(info.annotation))
    if field == "aspect_ratio":
        ratio = _RATIO_SEPARATOR.sub(":", value.strip())
        return ratio if ratio in choices else None
    close = difflib.get_close_matches(value.strip().lower(), choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _describe(error: Mapping[str, Any]) -> ParamProblem:
    """Turn one pydantic error into a sentence a user can act on."""
    loc = error.get("loc", ())
    field = str(loc[0]) if loc else "(body)"
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        hint = suggest_name(field)
        message = "is not a parameter of bria-text-to-image"
        if hint:
            message += f" (did you mean {hint}?)"
    elif kind == "missing":
        message = "is required"
    elif kind in ("less_than_equal", "less_than"):
        message = f"{value!r} is above the maximum {ctx.get('le', ctx.get('lt'))}"
    elif kind in ("greater_than_equal", "greater_than"):
        message = f"{value!r} is below the minimum {ctx.get('ge', ctx.get('gt'))}"
    elif kind == "literal_error":
        message = f"{value!r} is not allowed; choose one of {ctx.get('expected', '')}"
        hint = _close_choice(field, value)
        if hint is not None:
            message += f" (did you mean {hint}?)"
    elif kind in ("string_too_short", "too_short"):
        message = "must not be empty"
    elif kind == "value_error":
        message = str(ctx.get("error", error.get("msg", "")))
    else:
        message = str(error.get("msg", kind))
    return ParamProblem(field=field, message=message)


def validate_params(values: Mapping[str, Any]) -> BriaParams:
    """Validate a mapping of parameters, raising :class:`ParamsInvalid` with every problem."""
    try:
        return BriaParams.model_validate(dict(values))
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors(include_url=False)]
        # An unknown name and a message about a known one can arrive in any order;
        # report them in table order so the output is stable.
        order = {name: i for i, name in enumerate(PARAMETER_NAMES)}
        problems.sort(key=lambda p: order.get(p.field, len(order)))
        raise ParamsInvalid(problems) from None


def trusted_params(values: dict[str, Any]) -> BriaParams:
    """The BriaParams of ``values`` that validation already gave (every parameter, table order).

    What :meth:`BriaParams.model_construct` does, without its per-field work: for a
    100,000-job manifest, whose values :class:`ValuesCache` validated once each. The
    dict becomes the model's own (not copied); every instance shares one set of the
    names given (pydantic copies that set before it adds to it, in ``model_copy``).
    """
    params = BriaParams.__new__(BriaParams)
    object.__setattr__(params, "__dict__", values)
    object.__setattr__(params, "__pydantic_fields_set__", _ALL_GIVEN)
    object.__setattr__(params, "__pydantic_extra__", None)
    object.__setattr__(params, "__pydantic_private__", None)
    return params


_ALL_GIVEN = set(PARAMETER_NAMES)
# Every parameter in table order, with its default (the required prompt's stands in until set).
_DEFAULTS: dict[str, Any] = {
    name: None if info.is_required() else info.default for name, info in BriaParams.model_fields.items()
}
_MISSING = object()


class ValuesCache:
    """:func:`validate_params` for many jobs that share most values: each distinct value of a
    parameter is validated once, and a job's parameters are put together from validated values.

    The table has no rule across fields, so a value valid on its own is valid beside any
    other; anything unknown, missing or invalid is left to :func:`validate_params`, for
    its error (every problem, in table order).
    """

    _LIMIT = 10_000  # distinct values kept: a column of one value per row must not grow it without end

    def __init__(self) -> None:
        self._valid: dict[tuple[str, type, Any], Any] = {}

    def api_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """What ``validate_params(values).to_api()`` gives (every parameter, table order), or its
        :class:`ParamsInvalid`."""
        out = dict(_DEFAULTS)
        if "prompt" not in values:
            validate_params(values)  # raises: the prompt is required
        for name, value in values.items():
            # The type too: 1, 1.0 and True are equal. (0.0 and -0.0 are too, but no float
            # parameter accepts zero.)
            key = (name, type(value), value)
            valid = self._valid.get(key, _MISSING)
            if valid is _MISSING:
                valid = self._one(name, value, values)
                if len(self._valid) >= self._LIMIT:
                    self._valid.clear()
                self._valid[key] = valid
            out[name] = valid
        return out

    @staticmethod
    def _one(name: str, value: Any, values: Mapping[str, Any]) -> Any:
        """One value validated on its own (beside a stand-in prompt); if it is wrong, the
        error of all ``values``."""
        if name not in BriaParams.model_fields:
            validate_params(values)  # raises: not a parameter
        alone = {"prompt": value} if name == "prompt" else {"prompt": "-", name: value}
        try:
            return validate_params(alone).to_api()[name]
        except ParamsInvalid:
            validate_params(values)  # raises every problem of the job, as it always did
            raise


# batchgen's own limit, not the API's (Segmind documents none): text encoders of image
# models read a few hundred tokens at most (CLIP 77, T5 a few hundred), so text beyond a
# couple of thousand characters cannot change the image, yet every request is paid for.
# A prompt this long is a pasted file or a runaway template, caught before it is sent.
MAX_PROMPT_CHARS = 4_000

# C0 controls but tab, newline and carriage return (CRLF in a multi-line CSV cell); DEL;
# C1 controls. None can be typed into a prompt on purpose.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def control_characters(text: str) -> str | None:
    """What is wrong if ``text`` holds control characters (tab and newline are fine), else None."""
    if _CONTROL.search(text) is None:
        return None
    found = sorted(set(_CONTROL.findall(text)))
    names = ", ".join("NUL" if ch == "\0" else f"U+{ord(ch):04X}" for ch in found[:5])
    plural = "s" if len(found) > 1 else ""
    return f"contains the control character{plural} {names}; only tab and newline are allowed"


def prompt_problems(prompt: str) -> list[str]:
    """Why batchgen will not send a prompt (or negative prompt): too long, control characters."""
    problems: list[str] = []
    if len(prompt) > MAX_PROMPT_CHARS:
        problems.append(
            f"is {len(prompt):,} characters long; the limit is {MAX_PROMPT_CHARS:,}"
            " (far more than the model reads: a pasted file or a runaway template?)"
        )
    control = control_characters(prompt)
    if control is not None:
        problems.append(control)
    return problems


_ALLOWED_PROMPT = re.compile(r"[A-Za-z0-9\s.,;:'\"!?()\-/&%+#@*]*")


def prompt_warnings(prompt: str) -> list[str]:
    """Warnings for a prompt the API may reject or rewrite (English only, no special characters)."""
    warnings: list[str] = []
    prompt = _CONTROL.sub("", prompt)  # an error of its own (prompt_problems), not also a warning
    if not prompt.isascii():
        warnings.append("contains non-ASCII characters; the API accepts English prompts only")
    elif not _ALLOWED_PROMPT.fullmatch(prompt):
        odd = sorted({ch for ch in prompt if not _ALLOWED_PROMPT.fullmatch(ch)})
        warnings.append(f"contains special characters {''.join(odd)!r}; the API may reject them")
    return warnings


def aspect_ratio_size(aspect_ratio: str, long_side: int) -> tuple[int, int]:
    """Width and height of an image with this aspect ratio and long side."""
    w, h = (int(part) for part in aspect_ratio.split(":"))
    if w >= h:
        return long_side, max(1, round(long_side * h / w))
    return max(1, round(long_side * w / h)), long_side
