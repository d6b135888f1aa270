"""JSON Lines manifests: one resolved job a line, as ``batchgen plan --jsonl`` prints them.

A line is a JSON object with the job's parameters under ``params`` (or ``body``, as an
OpenAI Batch request line has them) and, optionally, ``labels``, ``filename``,
``model``, ``index``, ``key`` and ``template`` (the prompt as written before its choices
and fields, recorded with the job). From an OpenAI Batch file, ``custom_id`` becomes the
label ``custom_id``, and ``method`` and ``url`` are read and ignored. Blank lines are
skipped.

Prompts here are final: nothing in them is a template. A job's key is computed from its
model, parameters and labels, as for any manifest, so ``plan x.yaml --jsonl | run -``
runs the very jobs of ``run x.yaml``; a ``key`` that does not match the line's content
(an edited line) is an error rather than silently another job. ``index`` is the line's,
or its position among the lines; ``filename`` goes through the one output-path rule,
and defaults to the manifest default ``{index:05d}-{key}.png``.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

from batchgen.errors import ParamsInvalid
from batchgen.manifest.checks import Checker
from batchgen.manifest.job import DEFAULT_MODEL, Job, LabelValue, job_key
from batchgen.manifest.params import (
    PARAMETER_NAMES,
    TEXT_PARAMS,
    prompt_problems,
    prompt_warnings,
    validate_params,
)
from batchgen.manifest.paths import clean_value, output_path
from batchgen.manifest.template import Template

__all__ = ["LINE_KEYS", "MAX_JSONL_BYTES", "JobLine", "read_jsonl"]

MAX_JSONL_BYTES = 64 << 20  # like a CSV manifest: 100,000 jobs of over 600 bytes
LINE_KEYS = (
    "params",
    "body",
    "labels",
    "filename",
    "model",
    "index",
    "key",
    "template",
    "custom_id",
    "method",
    "url",
)
_MODEL = re.compile(r"[a-z0-9][a-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class JobLine:
    """A job of a JSON Lines manifest and the line it is written on."""

    job: Job
    line: int


def read_jsonl(
    check: Checker, data: bytes, filename: Template, *, name: str
) -> tuple[tuple[JobLine, ...], str] | None:
    """The jobs of a JSON Lines manifest and its model, or None with every problem noted in
    ``check`` (each at its line). ``filename`` renders a line's filename when it has none;
    ``name`` is the run name it may use."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        check.error(None, "", f"is not UTF-8 text ({exc.reason} at byte {exc.start})")
        return None
    jobs: list[JobLine] = []
    indexes: dict[int, int] = {}  # index -> line
    model: str | None = None
    model_line = 0
    position = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        one = _Line(check, number)
        job = one.read(raw, position, filename, name)
        position += 1
        if job is None:
            continue
        if model is None:
            model, model_line = job.model, number
        elif job.model != model:
            check.error(
                number,
                "model",
                f"{job.model!r} differs from line {model_line}'s {model!r}; a run uses one model",
            )
            continue
        first = indexes.setdefault(job.index, number)
        if first != number:
            check.error(number, "index", f"{job.index} is already the index of line {first}")
            continue
        jobs.append(JobLine(job, number))
    if position == 0:
        check.error(None, "", "holds no jobs: one JSON object a line")
        return None
    if check.problems:
        return None
    return tuple(jobs), model or DEFAULT_MODEL


class _Line:
    """One line of a JSON Lines manifest, its problems noted at its line number."""

    def __init__(self, check: Checker, number: int) -> None:
        self.check = check
        self.number = number
        self.ok = True

    def error(self, where: str, what: str) -> None:
        self.check.error(self.number, where, what)
        self.ok = False

    def read(self, raw: str, position: int, filename: Template, name: str) -> Job | None:
        try:
            item = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            self.error("", f"is not JSON: {exc}")
            return None
        if not isinstance(item, dict):
            self.error("", "must be a JSON object (one job a line)")
            return None
        for key in item:
            if key not in LINE_KEYS:
                close = difflib.get_close_matches(key, LINE_KEYS, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]}?)" if close else ""
                if key in PARAMETER_NAMES:
                    hint = " (parameters go under params)"
                self.error("", f"unknown key {key!r}{hint}; allowed: {', '.join(LINE_KEYS)}")
        params = self.params(item)
        labels = self.labels(item)
        model = item.get("model", DEFAULT_MODEL)
        if not (isinstance(model, str) and _MODEL.fullmatch(model)):
            self.error("model", "must be a Segmind model slug like bria-text-to-image")
        index = item.get("index", position)
        if not (isinstance(index, int) and not isinstance(index, bool) and 0 <= index < 10**12):
            self.error("index", f"must be a whole number from 0, not {json.dumps(index)}")
        template = item.get("template")
        if template is not None and not isinstance(template, str):
            self.error("template", "must be text: the prompt as written")
        for key in ("method", "url"):
            if key in item and not isinstance(item[key], str):
                self.error(key, "must be text")
        if not self.ok or params is None or labels is None:
            return None
        key = job_key(model, params, labels)
        given = item.get("key")
        if given is not None and given != key:
            self.error(
                "key",
                "does not match the line's model, params and labels (was the line edited?);"
                " a job's key is computed from them: remove key, or restore the line",
            )
            return None
        written = item.get("filename")
        if written is None:
            values: dict[str, object] = {"name": name, "date": "", "index": index, "key": key[:12]}
            values.update(labels)
            written = filename.render(values, missing="", convert=clean_value)
        elif not isinstance(written, str) or not written.strip():
            self.error("filename", "must be the image's path (relative to the images folder)")
            return None
        prompt = params.prompt
        return Job(
            index=index,
            key=key,
            model=model,
            params=params,
            labels=labels,
            filename=output_path(written),
            template=template if template != prompt else None,
        )

    def params(self, item: dict[str, Any]) -> Any:
        if "params" in item and "body" in item:
            self.error("", "has both params and body; a job has one set of parameters")
            return None
        where = "params" if "params" in item else "body"
        values = item.get(where)
        if values is None:
            self.error("", 'has no params: {"params": {"prompt": "..."}} (or body, as in OpenAI Batch)')
            return None
        if not isinstance(values, dict):
            self.error(where, "must be a JSON object of parameters")
            return None
        try:
            params = validate_params(values)
        except ParamsInvalid as exc:
            for problem in exc.problems:
                self.error(f"{where}.{problem.field}", problem.message)
            return None
        for field in TEXT_PARAMS:
            text = getattr(params, field)
            for message in prompt_problems(text):
                self.error(f"{where}.{field}", message)
            for message in prompt_warnings(text):
                self.check.warn(self.number, f"{where}.{field}", message)
        return params

    def labels(self, item: dict[str, Any]) -> dict[str, LabelValue] | None:
        labels = item.get("labels", {})
        if not isinstance(labels, dict):
            self.error("labels", "must be a JSON object of names and values")
            return None
        out: dict[str, LabelValue] = {}
        for key, value in labels.items():
            where = f"labels.{key}"
            if key in PARAMETER_NAMES:
                self.error(where, f"{key} is a parameter; put it under params")
                continue
            if not self.check.label_name(key, self.number, where):
                self.ok = False
                continue
            if not isinstance(value, str | int | float | bool) or value is None:
                self.error(where, "must be a single value (text, number or true/false)")
                continue
            if not self.check.check_label(value, self.number, where):
                self.ok = False
                continue
            out[key] = value
        custom_id = item.get("custom_id")
        if custom_id is not None:
            if not isinstance(custom_id, str | int) or isinstance(custom_id, bool):
                self.error("custom_id", "must be text")
            elif "custom_id" in out:
                self.error("custom_id", "is also a label of this line")
            else:
                out["custom_id"] = custom_id
        return out
