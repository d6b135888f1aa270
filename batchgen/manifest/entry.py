"""One entry of a manifest's ``jobs`` list, read into a :class:`~batchgen.manifest.model.JobSpec`.

An entry sets parameters (one value, a list, or a range), labels, ``grid`` and ``zip``
axes, a ``rows:`` CSV file and a ``seeds:`` count. Precedence, lowest first: the API's
defaults, ``defaults``, the entry's own fields, then grid, zip and row values. A name
set twice at one level is a mistake, not a precedence question, and is reported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from batchgen.manifest.csvrows import read_rows
from batchgen.manifest.model import Axis, JobSpec, RowSource, Sample, Source, Value
from batchgen.manifest.params import PARAMETER_NAMES
from batchgen.manifest.values import axis, param_value, sample_setting, seed_count
from batchgen.manifest.yamlnodes import Nodes

__all__ = ["JOB_KEYS", "read_entry"]

JOB_KEYS = ("prompt", *PARAMETER_NAMES[1:], "grid", "zip", "rows", "seeds", "sample", "labels")


def read_entry(
    nodes: Nodes,
    node: yaml.Node,
    where: str,
    defaults: Mapping[str, Value | Axis],
    default_seeds: int | None,
    default_sample: Sample | None = None,
    *,
    path: Path,
    display: str,
    sources: list[Source] | None = None,
) -> tuple[JobSpec | None, set[str] | None]:
    """The entry's spec if it is valid, and the label names it defines if its structure is.

    ``path`` and ``display`` are the folder a ``rows:`` file is relative to (the
    manifest's) and its name in messages; each CSV file read is added to ``sources``.
    """
    check = nodes.check
    if isinstance(node, yaml.ScalarNode) and isinstance(nodes.scalar(node), str):
        check.error(nodes.at(node), where, "must be a mapping; write `- prompt: ...` for a single prompt")
        return None, None
    start = len(check.problems)
    items = nodes.mapping(node, where, JOB_KEYS)
    line = nodes.at(node)

    own: dict[str, Value | Axis] = {}
    for key, value_node in items.items():
        if key in PARAMETER_NAMES:
            value = param_value(nodes, key, value_node, f"{where}.{key}")
            if value is not None:
                own[key] = value

    labels: dict[str, Value] = {}
    if "labels" in items:
        for key, value_node in nodes.mapping(items["labels"], f"{where}.labels", None).items():
            sub = f"{where}.labels.{key}"
            if key in PARAMETER_NAMES:
                check.error(
                    nodes.at(value_node), sub, f"{key} is a parameter; set it on the job, not as a label"
                )
                continue
            # Written under labels:, it is a label on purpose: no "did you mean" a parameter.
            if not check.label_name(key, nodes.at(value_node), sub):
                continue
            label = nodes.scalar(value_node) if isinstance(value_node, yaml.ScalarNode) else None
            if label is None:
                check.error(nodes.at(value_node), sub, "must be a single value (text, number or true/false)")
                continue
            if check.check_label(label, nodes.at(value_node), sub):
                labels[key] = Value(label, sub, nodes.at(value_node))

    grid = _axes(nodes, items, "grid", where)
    zipped = _axes(nodes, items, "zip", where)
    if "zip" in items:
        lengths = {len(a.values) for a in zipped}
        if len(lengths) > 1:
            sizes = ", ".join(f"{a.name} has {len(a.values)}" for a in zipped)
            check.error(nodes.at(items["zip"]), f"{where}.zip", f"lists must have equal lengths: {sizes}")

    rows: RowSource | None = None
    if "rows" in items:
        value_node = items["rows"]
        rel = nodes.scalar(value_node) if isinstance(value_node, yaml.ScalarNode) else None
        if not isinstance(rel, str) or not rel.strip():
            check.error(nodes.at(value_node), f"{where}.rows", "must be the path of a CSV file")
        else:
            csv_path = path / rel
            shown = os.path.join(display, rel)
            rows = read_rows(check, csv_path, shown, nodes.at(value_node), f"{where}.rows")
            if rows is not None and sources is not None:
                sources.append(Source(rows.display, rows.sha256, rows.path))

    sample = default_sample
    if "sample" in items:
        sample = sample_setting(nodes, items["sample"], f"{where}.sample")

    seeds: int | None = None
    if "seeds" in items:
        seeds = seed_count(nodes, items["seeds"], f"{where}.seeds")
        if "seed" in own:
            check.error(nodes.at(items["seeds"]), f"{where}.seeds", "set seed or seeds on a job, not both")

    # Names set twice at the same level are a mistake, not a precedence question.
    seen: dict[str, str] = {}
    for one in (*grid, *zipped):
        if one.name in seen:
            check.error(one.line, one.where, f"{one.name} is already set by {seen[one.name]}")
        seen[one.name] = one.where
    for name in labels:
        if name in seen:
            check.error(labels[name].line, labels[name].where, f"{name} is already set by {seen[name]}")
    if rows is not None:
        for column in rows.columns:
            if column in seen:
                check.error(
                    nodes.at(items["rows"]),
                    f"{where}.rows",
                    f"column {column} is already set by {seen[column]}",
                )
            elif column in labels:
                check.error(
                    nodes.at(items["rows"]),
                    f"{where}.rows",
                    f"column {column} is already a label of this job",
                )
    if seeds is not None and "seed" in seen:
        check.error(nodes.at(items["seeds"]), f"{where}.seeds", f"seed is already set by {seen['seed']}")

    # Precedence: API defaults < defaults < job fields < grid/zip/row values.
    merged: dict[str, Value | Axis] = dict(defaults)
    if ("seed" in own or seeds is not None) and "seed" in merged:
        del merged["seed"]
    merged.update(own)
    if seeds is None and "seed" not in own:
        seeds = default_seeds
    fields = {k: v for k, v in merged.items() if isinstance(v, Value) and k not in seen}
    implicit = [v for k, v in merged.items() if isinstance(v, Axis) and k not in seen]
    spec = JobSpec(where, line, fields, labels, (*grid, *implicit), tuple(zipped), rows, seeds, sample)
    structure_ok = len(check.problems) == start
    # Check the prompt templates even when a value above was wrong, so every problem is
    # reported at once; names written under labels/grid/zip count as defined even if one
    # of their values was invalid, and a CSV that could not be read hides its columns.
    has_prompt = (
        "prompt" in fields
        or any(a.name == "prompt" for a in (*grid, *zipped))
        or (rows is not None and "prompt" in rows.columns)
    )
    used: set[str] = set()
    if structure_ok or (has_prompt and not ("rows" in items and rows is None)):
        used = check.check_prompts(spec, where, declared=_written_names(items))
    if not structure_ok:
        return None, None
    check.axis_labels(spec, used)
    return (spec if len(check.problems) == start else None), _label_names(spec)


def _axes(nodes: Nodes, items: Mapping[str, yaml.Node], section: str, where: str) -> list[Axis]:
    """The valid axes of a job's ``grid`` or ``zip`` mapping, in written order."""
    found: list[Axis] = []
    if section not in items:
        return found
    for key, value_node in nodes.mapping(items[section], f"{where}.{section}", None).items():
        sub = f"{where}.{section}.{key}"
        if key not in PARAMETER_NAMES and not nodes.check.label_name(key, nodes.at(value_node), sub):
            continue
        one = axis(nodes, key, value_node, sub)
        if one is not None:
            found.append(one)
    return found


def _written_names(items: Mapping[str, yaml.Node]) -> set[str]:
    """Every name written under a job's labels, grid or zip, valid or not."""
    names: set[str] = set()
    for section in ("labels", "grid", "zip"):
        node = items.get(section)
        if isinstance(node, yaml.MappingNode):
            names.update(str(key.value) for key, _ in node.value if isinstance(key, yaml.ScalarNode))
    return names


def _label_names(spec: JobSpec) -> set[str]:
    """The label names a job defines: its labels, its label axes and its CSV's label columns."""
    names = set(spec.labels)
    names.update(a.name for a in (*spec.axes, *spec.zip) if a.name not in PARAMETER_NAMES)
    if spec.rows is not None:
        names.update(c for c in spec.rows.columns if c not in PARAMETER_NAMES)
    return names
