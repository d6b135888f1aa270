"""A parameter's or label's value as written in YAML: one value, a list, a range; a seed
count; a ``sample:`` setting.

A list (or, for an integer parameter or a label, a range string like ``"1-8"`` or
``"1-100 (+10)"``) becomes an :class:`~batchgen.manifest.model.Axis`; anything else is a
single :class:`~batchgen.manifest.model.Value`. A range stays a ``range``: nothing is
materialised, so it is checked by its ends and holds at most :data:`MAX_RANGE_VALUES`.
"""

from __future__ import annotations

import re

import yaml

from batchgen.manifest.model import Axis, Origin, Sample, Scalar, Value
from batchgen.manifest.params import INTEGER_PARAMS, PARAMETER_NAMES, STRING_PARAMS, TEXT_PARAMS
from batchgen.manifest.yamlnodes import Nodes, describe_node, text_origin

__all__ = [
    "MAX_RANGE_VALUES",
    "MAX_SAMPLE",
    "MAX_SEEDS",
    "axis",
    "param_value",
    "parse_range",
    "sample_setting",
    "seed_count",
]

MAX_RANGE_VALUES = 1_000_000_000  # far above any batch; keeps len() of a range a machine integer
MAX_SEEDS = 10_000
MAX_SAMPLE = 100_000  # random prompts per job; the job cap bounds the whole anyway

# Digit counts are bounded so that int() never meets Python's 4,300-digit limit.
_RANGE = re.compile(r"\s*(-?\d{1,30})\s*-\s*(-?\d{1,30})\s*(?:\(\s*\+\s*(\d{1,30})\s*\))?\s*")


def parse_range(text: str) -> range | None:
    """``"1-8"`` -> range(1, 9); ``"1-100 (+10)"`` -> range(1, 101, 10); None if not a range."""
    match = _RANGE.fullmatch(text)
    if match is None:
        return None
    start, stop, step = int(match.group(1)), int(match.group(2)), int(match.group(3) or 1)
    return range(start, stop + 1, max(step, 1)) if step >= 1 else range(0)


def _range_size(rng: range) -> int:
    """How many values ``rng`` holds, by arithmetic (``len()`` overflows past 2**63)."""
    return max(0, (rng.stop - rng.start + rng.step - 1) // rng.step)


def param_value(nodes: Nodes, name: str, node: yaml.Node, where: str) -> Value | Axis | None:
    """A parameter's value: a scalar, or (becoming an axis) a list or an integer range."""
    check = nodes.check
    line = nodes.at(node)
    if isinstance(node, yaml.SequenceNode):
        return axis(nodes, name, node, where)
    if not isinstance(node, yaml.ScalarNode):
        check.error(line, where, f"must be a value or a list, not {describe_node(node)}")
        return None
    value = nodes.scalar(node)
    if name in STRING_PARAMS and value is not None and node.style is None:
        value = str(node.value)  # plain `4:5` is a string, not YAML 1.1 base-60
    if value is None:
        check.error(line, where, "has no value")
        return None
    if name in INTEGER_PARAMS and isinstance(value, str) and _RANGE.fullmatch(value) is not None:
        return axis(nodes, name, node, where)
    if check.check_param(name, value, line, where):
        # A text parameter's origin locates a character of a prompt (an error at a column).
        origin = text_origin(node) if name in TEXT_PARAMS else None
        return Value(value, where, line, origin)
    return None


def axis(nodes: Nodes, name: str, node: yaml.Node, where: str) -> Axis | None:
    """A grid/zip axis (or list-valued field): a list of values, or a range string."""
    check = nodes.check
    line = nodes.at(node)
    is_param = name in PARAMETER_NAMES
    if isinstance(node, yaml.ScalarNode):
        raw = nodes.scalar(node)
        rng = parse_range(raw) if isinstance(raw, str) else None
        if rng is None or (is_param and name not in INTEGER_PARAMS):
            what = "must be a list" + (
                ' or a range like "1-8"' if not is_param or name in INTEGER_PARAMS else ""
            )
            check.error(line, where, f"{what}, not {describe_node(node)}")
            return None
        size = _range_size(rng)
        if size == 0:
            check.error(line, where, f"range {raw!r} is empty (the start is above the end)")
            return None
        if size > MAX_RANGE_VALUES:
            check.error(line, where, f"range {raw!r} has {size:,} values; at most {MAX_RANGE_VALUES:,}")
            return None
        ok = True
        if is_param:
            ok = check.check_param(name, rng[0], line, where) and check.check_param(
                name, rng[-1], line, where
            )
        return Axis(name, rng, where, line) if ok else None
    if not isinstance(node, yaml.SequenceNode):
        check.error(line, where, f"must be a list, not {describe_node(node)}")
        return None
    if not node.value:
        check.error(line, where, "is an empty list")
        return None
    values: list[Scalar] = []
    origins: list[Origin | None] = []
    ok = True
    for i, item in enumerate(node.value):
        item_where = f"{where}[{i}]"
        if not isinstance(item, yaml.ScalarNode):
            check.error(nodes.at(item), item_where, f"must be a value, not {describe_node(item)}")
            ok = False
            continue
        value = nodes.scalar(item)
        if name in STRING_PARAMS and value is not None and item.style is None:
            value = str(item.value)
        if value is None:
            check.error(nodes.at(item), item_where, "has no value")
            ok = False
            continue
        if is_param and not check.check_param(name, value, nodes.at(item), item_where):
            ok = False
            continue
        if not is_param and not check.check_label(value, nodes.at(item), item_where):
            ok = False
            continue
        values.append(value)
        origins.append(text_origin(item) if name in TEXT_PARAMS else None)
    return Axis(name, tuple(values), where, line, tuple(origins)) if ok else None


def seed_count(nodes: Nodes, node: yaml.Node, where: str) -> int | None:
    """A ``seeds:`` count: a whole number from 1 to :data:`MAX_SEEDS`."""
    value = nodes.scalar(node) if isinstance(node, yaml.ScalarNode) else None
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SEEDS:
        return value
    nodes.check.error(
        nodes.at(node),
        where,
        f"must be a whole number of seeds from 1 to {MAX_SEEDS}, not {describe_node(node)}",
    )
    return None


def sample_setting(nodes: Nodes, node: yaml.Node, where: str) -> Sample | None:
    """A ``sample:`` setting: a count of random prompts, or ``{count: N, seed: S}``."""
    check = nodes.check
    count_node, seed_node = node, None
    if isinstance(node, yaml.MappingNode):
        items = nodes.mapping(node, where, ("count", "seed"))
        if "count" not in items:
            check.error(nodes.at(node), where, "needs count: how many random prompts per job")
            return None
        count_node, seed_node = items["count"], items.get("seed")
    count = nodes.scalar(count_node) if isinstance(count_node, yaml.ScalarNode) else None
    if not (isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= MAX_SAMPLE):
        check.error(
            nodes.at(count_node),
            where if seed_node is None and count_node is node else f"{where}.count",
            f"must be a whole number of prompts from 1 to {MAX_SAMPLE:,}, not {describe_node(count_node)}",
        )
        return None
    seed = 0
    if seed_node is not None:
        value = nodes.scalar(seed_node) if isinstance(seed_node, yaml.ScalarNode) else None
        if not (isinstance(value, int) and not isinstance(value, bool)):
            check.error(
                nodes.at(seed_node),
                f"{where}.seed",
                f"must be a whole number, not {describe_node(seed_node)}",
            )
            return None
        seed = value
    return Sample(count, seed)
