"""A job: one fully resolved request to the API and where its image goes."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any

from batchgen.manifest.params import BriaParams

__all__ = ["DEFAULT_MODEL", "Job", "LabelValue", "canonical_json", "job_key"]

DEFAULT_MODEL = "bria-text-to-image"

LabelValue = str | int | float | bool


def canonical_json(model: str, params: Mapping[str, Any], labels: Mapping[str, LabelValue]) -> str:
    """The canonical JSON of a job's content: what its key and derived seeds hash.

    By definition ``json.dumps({"model": ..., "params": ..., "labels": ...}, sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)``; a job's values are scalars, so it is
    written here from each value's JSON text, the same characters at about a fifth of the
    cost (a key is made for every job of a 100,000-job manifest).
    """
    try:
        return (
            '{"labels":{'
            + _members(labels)
            + '},"model":'
            + _WRITERS.get(type(model), _not_scalar)(model)
            + ',"params":{'
            + _members(params)
            + "}}"
        )
    except (_NotScalar, TypeError):  # TypeError: names that do not sort (json.dumps raises it too)
        return json.dumps(
            {"model": model, "params": dict(params), "labels": dict(labels)},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )


class _NotScalar(Exception):
    """A value (or name) the fast writer of :func:`canonical_json` leaves to ``json.dumps``."""


def _not_scalar(_: object) -> str:
    raise _NotScalar


def _finite(value: float) -> str:
    if not math.isfinite(value):
        raise _NotScalar  # json.dumps writes NaN and Infinity
    return float.__repr__(value)


# How json.dumps writes a value of each exact type (ensure_ascii=False); any other type,
# a subclass included, is left to json.dumps itself.
_WRITERS: dict[type, Callable[[Any], str]] = {
    str: encode_basestring,
    bool: lambda value: "true" if value else "false",
    int: int.__repr__,
    float: _finite,
    type(None): lambda _: "null",
}
# ``"name":value`` of the values jobs share (every parameter but the prompt and the seed,
# mostly), written once; bounded, since a CSV column may hold a value per row.
_MEMBERS: dict[tuple[str, type, Any], str] = {}


def _members(values: Mapping[str, Any]) -> str:
    """``"name":value`` pairs of a mapping of scalars, sorted by name (``sort_keys``), comma-joined."""
    parts = []
    for name in sorted(values):
        value = values[name]
        known = (name, type(value), value)  # the type too: 1, 1.0 and True are equal
        member = _MEMBERS.get(known)
        if member is None or type(value) is float:  # 0.0 == -0.0, written apart: floats are not kept
            writer = _WRITERS.get(type(value))
            if writer is None or type(name) is not str:  # json.dumps would make a name text first
                raise _NotScalar
            member = encode_basestring(name) + ":" + writer(value)
            if type(value) is not float:
                if len(_MEMBERS) >= 10_000:
                    _MEMBERS.clear()
                _MEMBERS[known] = member
        parts.append(member)
    return ",".join(parts)


def job_key(model: str, params: BriaParams | Mapping[str, Any], labels: Mapping[str, LabelValue]) -> str:
    """sha256 (hex) of the canonical JSON of model, resolved parameters and labels.

    ``params`` is a BriaParams, or what its ``to_api()`` gives (expansion builds that first).
    """
    api = params.to_api() if isinstance(params, BriaParams) else params
    return hashlib.sha256(canonical_json(model, api, labels).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Job:
    """One request: position, identity, parameters, labels and output file.

    ``key`` is the full sha256 from :func:`job_key`; two jobs with the same key are
    the same job. ``filename`` is relative to the run's ``images/`` directory and is
    already sanitised. ``template`` is the prompt as written, when the job's prompt was
    made from it (fields filled in, dynamic parts chosen); it is recorded with the job
    but is not part of its key.
    """

    index: int
    key: str
    model: str
    params: BriaParams
    labels: Mapping[str, LabelValue] = field(default_factory=dict)
    filename: str = ""
    template: str | None = None

    @property
    def short_key(self) -> str:
        """The first 12 hex digits of the key, for display."""
        return self.key[:12]

    @property
    def seed(self) -> int:
        """The seed this job is sent with (always explicit)."""
        return self.params.seed

    def to_json(self) -> dict[str, Any]:
        """The job as ``batchgen plan --jsonl`` prints it (and a JSON Lines manifest reads it)."""
        out: dict[str, Any] = {
            "index": self.index,
            "key": self.key,
            "model": self.model,
            "params": self.params.to_api(),
            "labels": dict(self.labels),
            "filename": self.filename,
        }
        if self.template is not None:
            out["template"] = self.template
        return out
