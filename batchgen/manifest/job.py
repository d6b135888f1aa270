"""A job: one fully resolved request to the API and where its image goes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchgen.manifest.params import BriaParams

__all__ = ["DEFAULT_MODEL", "Job", "LabelValue", "canonical_json", "job_key"]

DEFAULT_MODEL = "bria-text-to-image"

LabelValue = str | int | float | bool


def canonical_json(model: str, params: Mapping[str, Any], labels: Mapping[str, LabelValue]) -> str:
    """The canonical JSON of a job's content: what its key and derived seeds hash."""
    return json.dumps(
        {"model": model, "params": dict(params), "labels": dict(labels)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def job_key(model: str, params: BriaParams, labels: Mapping[str, LabelValue]) -> str:
    """sha256 (hex) of the canonical JSON of model, resolved parameters and labels."""
    return hashlib.sha256(canonical_json(model, params.to_api(), labels).encode("utf-8")).hexdigest()


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
