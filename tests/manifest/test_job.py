"""A job's canonical JSON and key: the fast writer is json.dumps, character for character."""

from __future__ import annotations

import enum
import json
import random
from typing import Any

from batchgen.manifest.job import canonical_json

# Texts where JSON's escaping, Unicode and key order could go wrong.
_TEXTS = [
    "",
    "a",
    "a!",
    "A",
    "a b",
    'say "hi"',
    "back\\slash",
    "tab\there",
    "nl\n",
    "\x00\x1f\x7f",
    "é日本🙂",
    "\u2028\u2029",
    "seed",
    "seeds",
    "prompt",
    "z" * 50,
]
_NUMBERS: list[Any] = [
    0,
    1,
    -1,
    7,
    2**70,
    -(2**63),
    0.0,
    -0.0,
    0.1,
    7.0,
    7.5,
    1e16,
    1e-7,
    5e-324,
    1.7976931348623157e308,
]
_SCALARS: list[Any] = [*_TEXTS, *_NUMBERS, True, False, None]


def _reference(model: str, params: dict[str, Any], labels: dict[str, Any]) -> str:
    return json.dumps(
        {"model": model, "params": params, "labels": labels},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def test_canonical_json_matches_json_dumps_on_scalars() -> None:
    """For 2,000 seeded random jobs of awkward names and values the fast writer equals json.dumps."""
    rnd = random.Random(19)
    for _ in range(2000):
        params = {rnd.choice(_TEXTS): rnd.choice(_SCALARS) for _ in range(rnd.randint(0, 14))}
        labels = {rnd.choice(_TEXTS): rnd.choice(_SCALARS) for _ in range(rnd.randint(0, 4))}
        model = rnd.choice(_TEXTS)
        assert canonical_json(model, params, labels) == _reference(model, params, labels)


class _Size(enum.IntEnum):
    SMALL = 1


class _Text(str):
    pass


def test_canonical_json_falls_back_for_what_is_not_a_scalar() -> None:
    """Lists, non-finite floats, subclasses and non-text names are written by json.dumps itself."""
    for params in (
        {"a": _Size.SMALL},
        {"a": _Text("x")},
        {_Text("b"): 1, "a": 2},
        {"a": [1, "x"]},
        {"a": float("nan")},
        {"a": float("inf")},
        {1: "x"},
        {"n": {"b": 1, "a": 2}},
    ):
        assert canonical_json("m", params, {"l": 1}) == _reference("m", params, {"l": 1})
