"""The JSON Schema of the YAML manifest format, for editors (``batchgen schema``).

The parameter part is derived from :class:`~batchgen.manifest.params.BriaParams`, so the
schema and the loader agree on names, types, limits and allowed values. The schema
is a help for editors; :func:`batchgen.manifest.load.load_manifest` remains the judge
(it also checks templates, zip lengths and CSV files, which a schema cannot).
"""

from __future__ import annotations

from typing import Any

from batchgen.manifest.load import REPORT_KEYS
from batchgen.manifest.params import BriaParams
from batchgen.manifest.runname import MAX_RUN_NAME_BYTES
from batchgen.manifest.values import MAX_SAMPLE, MAX_SEEDS

__all__ = ["SCHEMA_ID", "manifest_schema"]

SCHEMA_ID = "https://batchgen.invalid/manifest.schema.json"

_RANGE = {
    "type": "string",
    "pattern": r"^\s*-?\d+\s*-\s*-?\d+\s*(\(\s*\+\s*\d+\s*\))?\s*$",
    "description": 'an inclusive range like "1-8" or "1-100 (+10)"',
}
_SCALAR = {"type": ["string", "number", "boolean"]}


def _parameters() -> dict[str, dict[str, Any]]:
    """Each parameter's schema, with pydantic's ge/le spelt as JSON Schema's minimum/maximum."""
    out: dict[str, dict[str, Any]] = {}
    for name, prop in BriaParams.model_json_schema()["properties"].items():
        schema = {k: v for k, v in prop.items() if k not in ("title", "ge", "le")}
        if "ge" in prop:
            schema["minimum"] = prop["ge"]
        if "le" in prop:
            schema["maximum"] = prop["le"]
        out[name] = schema
    return out


def _axis(param: dict[str, Any] | None) -> dict[str, Any]:
    """A grid/zip axis: a non-empty list (of the parameter's values), or an integer range."""
    items = param if param is not None else _SCALAR
    options: list[dict[str, Any]] = [{"type": "array", "items": items, "minItems": 1}]
    if param is None or param.get("type") == "integer":
        options.append(_RANGE)
    return {"anyOf": options}


def _field(param: dict[str, Any]) -> dict[str, Any]:
    """A parameter on a job or in defaults: one value, or a list / range (an implicit axis)."""
    return {"anyOf": [param, *_axis(param)["anyOf"]]}


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a YAML manifest."""
    params = _parameters()
    seeds = {"type": "integer", "minimum": 1, "maximum": MAX_SEEDS, "description": "N derived seeds per job"}
    count = {"type": "integer", "minimum": 1, "maximum": MAX_SAMPLE}
    sample = {
        "description": "N random prompts per job from a dynamic prompt, instead of every combination",
        "anyOf": [
            count,
            {
                "type": "object",
                "properties": {"count": count, "seed": {"type": "integer"}},
                "required": ["count"],
                "additionalProperties": False,
            },
        ],
    }
    axes = {
        "type": "object",
        "properties": {name: _axis(p) for name, p in params.items()},
        "additionalProperties": _axis(None),
    }
    job = {
        "type": "object",
        "properties": {
            **{name: _field(p) for name, p in params.items()},
            "grid": {**axes, "description": "Cartesian product of the lists"},
            "zip": {**axes, "description": "lists taken in lockstep (equal lengths)"},
            "rows": {
                "type": "string",
                "description": "a CSV file, relative to the manifest: one job per row",
            },
            "seeds": seeds,
            "sample": sample,
            "labels": {"type": "object", "additionalProperties": _SCALAR},
        },
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "batchgen manifest",
        "type": "object",
        "properties": {
            "name": {
                "type": "string",
                # ASCII as the loader's rule; other characters left to it (letters and digits
                # of any script), which a regex without Unicode classes cannot say.
                "pattern": r"^([A-Za-z0-9_\u0080-\uffff]|\{date\})([A-Za-z0-9._\u0080-\uffff-]|\{date\})*$",
                "description": "the run name, the output folder's: letters and digits of any script, . _ -"
                f" and {{date}}; at most {MAX_RUN_NAME_BYTES} bytes of UTF-8",
            },
            "model": {"type": "string", "default": "bria-text-to-image"},
            "defaults": {
                "type": "object",
                "properties": {
                    **{name: _field(p) for name, p in params.items()},
                    "seeds": seeds,
                    "sample": sample,
                },
                "additionalProperties": False,
            },
            "jobs": {"type": "array", "items": job, "minItems": 1},
            "output": {
                "type": "object",
                "properties": {
                    "filename": {
                        "type": "string",
                        "description": "template: {label}, {parameter}, {index:05d}, {key}, {name}, {date}",
                    }
                },
                "additionalProperties": False,
            },
            "report": {
                "type": "object",
                "properties": {
                    key: {
                        "description": "a parameter or label, or a list of them (the axis's levels)",
                        "anyOf": [
                            {"type": "string"},
                            {
                                "type": "array",
                                "items": {"type": "string"},
                                "minItems": 1,
                                "uniqueItems": True,
                            },
                        ],
                    }
                    for key in REPORT_KEYS
                },
                "additionalProperties": False,
            },
            "wildcards": {
                "description": "the folder(s) of wildcard files (default: wildcards/ beside the manifest)",
                "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
            },
        },
        "required": ["jobs"],
        "additionalProperties": False,
    }
