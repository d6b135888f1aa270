"""The YAML side of a manifest: a depth-bounded composer, typed-tag checks, and node reading.

YAML is composed into its node tree rather than loaded, because the nodes carry the
line of every key and list item. Nesting is bounded by :data:`MAX_DEPTH` before PyYAML's
recursive composer can hit the recursion limit, and a value tagged ``!!float``
(``!!int``, ``!!bool``) must be one. Scalars are read by YAML 1.2 rules, so text that
YAML 1.1 would mangle (``4:5``, ``0123``, ``no``, dates) stays text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import yaml

from batchgen.manifest.model import Origin, Scalar

if TYPE_CHECKING:  # checks -> prompts -> wildcards reads YAML here
    from batchgen.manifest.checks import Checker

__all__ = [
    "MAX_DEPTH",
    "Nodes",
    "TooDeep",
    "bad_tags",
    "compose",
    "describe_node",
    "node_line",
    "text_origin",
]

# A manifest is at most 5 levels deep (jobs, an entry, grid, an axis, its list); 32
# leaves room for anything sensible while keeping PyYAML's recursive composer (about
# three Python frames a level) far from the interpreter's recursion limit.
MAX_DEPTH = 32

# Digit counts are bounded so that int() never meets Python's 4,300-digit limit.
_DECIMAL = re.compile(r"[+-]?(?:0|[1-9][0-9]{0,99})")

# Tags whose values batchgen reads as numbers or booleans: a value written with one of
# them must be one (``!!float abc`` is a mistake, not the text "abc").
_TYPED_TAGS = {
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:bool": "true or false",
}


class TooDeep(Exception):
    """The YAML nests deeper than :data:`MAX_DEPTH`; ``line`` is where the limit was crossed."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a depth bound on its recursive composer.

    Without it, 5,000 nested ``[`` (or 1,500 indented keys) end in a RecursionError; the
    bound is checked before each level recurses, so it holds whatever the stack size.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self.explicit: list[yaml.ScalarNode] = []  # scalars written with an explicit tag (``!!float x``)

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            event: Any = self.peek_event()  # type: ignore[no-untyped-call]
            if self._depth > MAX_DEPTH:
                raise TooDeep(int(event.start_mark.line) + 1)
            node = super().compose_node(parent, index)
            if isinstance(event, yaml.ScalarEvent) and event.tag not in (None, "!"):
                assert isinstance(node, yaml.ScalarNode)
                self.explicit.append(node)
            return node
        finally:
            self._depth -= 1


def compose(text: str) -> tuple[yaml.Node | None, list[yaml.ScalarNode]]:
    """The YAML node tree of ``text``, at most :data:`MAX_DEPTH` levels deep, and its
    explicitly tagged scalars; :class:`TooDeep` or PyYAML's own errors otherwise."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_node(), loader.explicit
    finally:
        loader.dispose()


def bad_tags(root: yaml.Node, explicit: list[yaml.ScalarNode]) -> list[tuple[int, str, str]]:
    """``(line, where, what)`` for every scalar written ``!!float`` / ``!!int`` / ``!!bool``
    whose text is not one."""
    constructor = yaml.SafeLoader("")
    bad: dict[int, str] = {}
    for scalar in explicit:
        if scalar.tag not in _TYPED_TAGS:
            continue
        try:
            constructor.construct_object(scalar)
        except Exception:  # ValueError, KeyError, OverflowError: whatever the constructor meets
            kind = scalar.tag.rsplit(":", 1)[-1]
            bad[id(scalar)] = f"{scalar.value!r} is tagged !!{kind} but is not {_TYPED_TAGS[scalar.tag]}"
    found: list[tuple[int, str, str]] = []
    if not bad:
        return found
    # Walk the tree once to name where each bad value is (iterative: depth is bounded,
    # but aliases can make a tree wide; each node is visited once).
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    seen: set[int] = set()
    while stack:
        node, where = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in reversed(node.value):
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                stack.append((value, f"{where}.{name}" if where else name))
                stack.append((key, where))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{where}[{i}]") for i, item in reversed(list(enumerate(node.value))))
        elif id(node) in bad:
            found.append((node_line(node), where, bad[id(node)]))
    return found


def describe_node(node: yaml.Node) -> str:
    """What a node is, for a message: ``a mapping``, ``a list``, or its text quoted."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return repr(node.value)


def node_line(node: yaml.Node) -> int:
    """The 1-based line a node starts on."""
    return int(node.start_mark.line) + 1


def text_origin(node: yaml.ScalarNode, file: str | None = None) -> Origin:
    """Where a scalar's text starts, precisely enough to locate a character in it when it can be.

    A plain scalar on one line reads as written; a quoted one too when it has no escape
    (its span is its text and two quotes); a literal block's lines are its text's lines,
    each indented alike. Folded and multi-line flow scalars give the line only.
    """
    start, end = node.start_mark, node.end_mark
    line = int(start.line) + 1
    one_line = start.line == end.line
    value = str(node.value)
    if node.style is None and one_line:
        return Origin(file, line, int(start.column) + 1)
    if node.style in ("'", '"') and one_line and end.index - start.index == len(value) + 2:
        return Origin(file, line, int(start.column) + 2)
    buffer = start.buffer
    if node.style == "|" and isinstance(buffer, str):
        body = buffer.find("\n", start.index) + 1
        if body > 0:
            first = buffer[body : buffer.find("\n", body) if "\n" in buffer[body:] else len(buffer)]
            indent = len(first) - len(first.lstrip(" "))
            if first.strip():
                return Origin(file, line + 1, None, block_indent=indent)
    return Origin(file, line)


class Nodes:
    """Reads a composed manifest's nodes, reporting what is wrong with them to ``check``.

    It remembers the line of each mapping value's key: a block list starts on the line
    below its key, and the key's line is the one a reader looks for.
    """

    def __init__(self, check: Checker) -> None:
        self.check = check
        self._constructor = yaml.SafeLoader("")
        self._key_lines: dict[int, int] = {}

    def at(self, node: yaml.Node) -> int:
        """The line to report for a value: its key's line if it has one (block lists start below)."""
        return self._key_lines.get(id(node), node_line(node))

    def scalar(self, node: yaml.ScalarNode) -> Scalar | None:
        """The value of a scalar node, keeping text that YAML 1.1 would mangle (4:5, 0123, no, dates)."""
        tag = node.tag.rsplit(":", 1)[-1]
        raw = str(node.value)
        if tag == "str":
            return raw
        if tag == "null":
            return None
        if tag == "int":
            return int(raw) if _DECIMAL.fullmatch(raw) else raw
        if tag == "bool":
            # YAML 1.2 booleans only: `no` / `on` as a label (a country, a switch) stay text.
            return raw.lower() == "true" if raw.lower() in ("true", "false") else raw
        if tag == "float":
            try:
                value = self._constructor.construct_object(node)
            except ValueError:  # reported by bad_tags; keep the text
                return raw
            return value if isinstance(value, float) else raw
        return raw

    def mapping(self, node: yaml.Node, where: str, allowed: Sequence[str] | None) -> dict[str, yaml.Node]:
        """The items of a mapping node by key; reports duplicates, unknown keys, non-mappings."""
        if not isinstance(node, yaml.MappingNode):
            self.check.error(self.at(node), where, f"must be a mapping, not {describe_node(node)}")
            return {}
        items: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            sub = f"{where}.{key_node.value}" if where else str(key_node.value)
            if not isinstance(key_node, yaml.ScalarNode):
                self.check.error(self.at(key_node), where, "keys must be plain names")
                continue
            key = str(key_node.value)
            if key in items:
                self.check.error(self.at(key_node), sub, "duplicate key (the later one would silently win)")
                continue
            if allowed is not None and key not in allowed:
                self.check.unknown_key(self.at(key_node), where, key, allowed)
                continue
            items[key] = value_node
            self._key_lines[id(value_node)] = node_line(key_node)
        return items
