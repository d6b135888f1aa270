"""Load and validate a manifest (YAML or CSV) into a :class:`Manifest`; pure and sync.

Every problem is collected, located as ``FILE:LINE: where: what``, and raised together
as one :class:`~batchgen.errors.ManifestError`. Nothing here expands the jobs: a grid
is checked one axis value at a time, so a 10**12-job grid validates as fast as a small
one. Prompts the API may reject (non-English, special characters) are warnings;
prompts batchgen will not send (over :data:`~batchgen.manifest.params.MAX_PROMPT_CHARS`, control
characters) are errors.

Hostile input is refused, never crashes or hangs: manifests and ``rows:`` files are read
only if they are regular files (not a FIFO, not ``/dev/zero``) of at most
:data:`MAX_YAML_BYTES` / :data:`MAX_CSV_BYTES`; YAML nesting is bounded by
:data:`MAX_DEPTH` before PyYAML's recursive composer can hit the recursion limit; a
value tagged ``!!float`` (``!!int``, ``!!bool``) must be one; ranges hold at most
:data:`MAX_RANGE_VALUES` values.

YAML is composed into its node tree rather than loaded, because the nodes carry the
line of every key and list item.
"""

from __future__ import annotations

import csv
import datetime
import difflib
import hashlib
import io
import os
import re
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from batchgen.errors import ManifestError, Problem
from batchgen.manifest.job import DEFAULT_MODEL
from batchgen.manifest.params import (
    INTEGER_PARAMS,
    PARAMETER_NAMES,
    STRING_PARAMS,
    TEXT_PARAMS,
    ParamsInvalid,
    control_characters,
    prompt_problems,
    prompt_warnings,
    suggest_name,
    validate_params,
)
from batchgen.manifest.template import Template, TemplateError, parse_template

__all__ = [
    "DEFAULT_FILENAME",
    "MAX_CSV_BYTES",
    "MAX_DEPTH",
    "MAX_RANGE_VALUES",
    "MAX_YAML_BYTES",
    "FILENAME_BUILTINS",
    "JOB_KEYS",
    "MAX_SEEDS",
    "OUTPUT_KEYS",
    "REPORT_KEYS",
    "TOP_KEYS",
    "Axis",
    "JobSpec",
    "Manifest",
    "Row",
    "RowSource",
    "Scalar",
    "Value",
    "load_manifest",
    "run_date",
    "parse_range",
]

Scalar = str | int | float | bool

TOP_KEYS = ("name", "model", "defaults", "jobs", "output", "report")
JOB_KEYS = ("prompt", *PARAMETER_NAMES[1:], "grid", "zip", "rows", "seeds", "labels")
OUTPUT_KEYS = ("filename",)
REPORT_KEYS = ("rows", "columns")
FILENAME_BUILTINS = ("date", "index", "key", "name")
_RESERVED_LABELS = ("index", "key")
# Parameters an unused label may be a typo of; a misspelt prompt column is caught anyway
# (no prompt at all), while columns like prompt_id are common and deliberate.
_SUGGESTED = tuple(name for name in PARAMETER_NAMES if name != "prompt")
MAX_SEEDS = 10_000
MAX_RANGE_VALUES = 1_000_000_000  # far above any batch; keeps len() of a range a machine integer
# A manifest is at most 5 levels deep (jobs, an entry, grid, an axis, its list); 32
# leaves room for anything sensible while keeping PyYAML's recursive composer (about
# three Python frames a level) far from the interpreter's recursion limit.
MAX_DEPTH = 32
# Bounded reads: a manifest is read whole before anything is checked, so a runaway file
# (a log pasted by mistake, /dev/zero) must be refused by its size, not parsed for minutes.
# Pure-Python YAML composes about 1 MB a second, so 1 MiB keeps validation near a second;
# a hand-written manifest is a few KB, and long lists belong in a ``rows:`` CSV, which is
# read by the C csv module (64 MiB is 100,000 rows of over 600 bytes).
MAX_YAML_BYTES = 1 << 20
MAX_CSV_BYTES = 64 << 20
DEFAULT_FILENAME = "{index:05d}-{key}.png"

# Digit counts are bounded so that int() never meets Python's 4,300-digit limit.
_RANGE = re.compile(r"\s*(-?\d{1,30})\s*-\s*(-?\d{1,30})\s*(?:\(\s*\+\s*(\d{1,30})\s*\))?\s*")
_DECIMAL = re.compile(r"[+-]?(?:0|[1-9][0-9]{0,99})")
_RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_MODEL = re.compile(r"[a-z0-9][a-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class Value:
    """One located value: a job field, a default, or a label."""

    value: Scalar
    where: str
    line: int | None


@dataclass(frozen=True, slots=True)
class Axis:
    """A list of values for one name (grid, zip, or a list-valued field); ``values`` may be a range."""

    name: str
    values: Sequence[Scalar]
    where: str
    line: int | None


@dataclass(frozen=True, slots=True)
class Row:
    """One CSV row: its line and its non-empty cells (an empty cell is "not set")."""

    line: int
    cells: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RowSource:
    """The rows of a CSV file, read once at load."""

    path: Path
    display: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One entry of ``jobs`` with everything resolved except the expansion itself.

    ``fields`` merges ``defaults`` and the job's own scalar fields (job wins); ``axes``
    are the grid axes in written order, then list-valued fields; ``zip`` axes have equal
    lengths; rows (if any) override all of them cell by cell.
    """

    where: str
    line: int | None
    fields: Mapping[str, Value]
    labels: Mapping[str, Value]
    axes: tuple[Axis, ...]
    zip: tuple[Axis, ...]
    rows: RowSource | None
    seeds: int | None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest, ready for :func:`batchgen.manifest.expand.expand`."""

    path: Path
    name: str
    model: str
    sha256: str
    jobs: tuple[JobSpec, ...]
    filename: Template
    filename_line: int | None
    warnings: list[Problem] = field(default_factory=list)
    report: Mapping[str, str] = field(default_factory=dict)
    date: str = ""  # the run's date (UTC, YYYY-MM-DD): fills {date} in the name and filenames

    @property
    def display(self) -> str:
        """The manifest's path as problems name it."""
        return str(self.path)


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


def _is_range_text(text: str) -> bool:
    return _RANGE.fullmatch(text) is not None


def _describe_node(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return repr(node.value)


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


class _Loader:
    """Walks the composed YAML tree, collecting problems and building job specs."""

    def __init__(self, path: Path, display: str, date: str = "") -> None:
        self.path = path
        self.display = display
        self.date = date
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self._constructor = yaml.SafeLoader("")
        self._key_lines: dict[int, int] = {}
        self._axis_labels: list[tuple[JobSpec, set[str]]] = []  # for unused_axes

    def at(self, node: yaml.Node) -> int:
        """The line to report for a value: its key's line if it has one (block lists start below)."""
        return self._key_lines.get(id(node), _line(node))

    # --- reporting ---------------------------------------------------------------

    def error(self, line: int | None, where: str, what: str, *, file: str | None = None) -> None:
        self.problems.append(Problem(file or self.display, line, where, what))

    def warn(self, line: int | None, where: str, what: str, *, file: str | None = None) -> None:
        self.warnings.append(Problem(file or self.display, line, where, what))

    def unknown_key(self, line: int, where: str, key: str, allowed: Sequence[str]) -> None:
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        self.error(line, where, f"unknown key {key!r}{hint}; allowed: {', '.join(allowed)}")

    def axis_labels(self, spec: JobSpec, used: set[str]) -> None:
        """Note a job's label axes and CSV columns, and the names its prompts use."""
        self._axis_labels.append((spec, used))

    def unused_axes(self, elsewhere: Iterable[str]) -> None:
        """Report label axes and CSV columns no template uses (``elsewhere``: the filename's
        and the report's names, which every job shares).

        Such a name sets no parameter and fills nothing, so its values only multiply jobs
        that send identical requests, each one paid for. Close to a parameter name it is
        surely a typo (``step_num``): an error. Otherwise a warning: a CSV column may well
        be kept on purpose, as a label for the ledger and the report.
        """
        shared = set(elsewhere)
        # A CSV file may feed several jobs: a column is used if any of them uses it.
        by_file: dict[str, set[str]] = {}
        for spec, used in self._axis_labels:
            if spec.rows is not None:
                by_file.setdefault(spec.rows.display, set()).update(used)
        named: list[tuple[str, int | None, str, str | None, int | None, set[str]]] = []
        for spec, used in self._axis_labels:
            named.extend(
                (a.name, a.line, a.where, None, len(a.values), used)
                for a in (*spec.axes, *spec.zip)
                if a.name not in PARAMETER_NAMES
            )
        for display, used in by_file.items():
            columns = next(
                s.rows.columns for s, _ in self._axis_labels if s.rows and s.rows.display == display
            )
            named.extend(
                (c, 1, f"column {c}", display, None, used) for c in columns if c not in PARAMETER_NAMES
            )
        for name, line, where, file, count, used in named:
            if name in used or name in shared:
                hint = suggest_name(name)
                if hint:
                    self.warn(
                        line,
                        where,
                        f"{name!r} is not a parameter, so it is a label (did you mean {hint}?)",
                        file=file,
                    )
                continue
            hint = suggest_name(name, _SUGGESTED)
            if hint:
                what = f"{name!r} is not a parameter (did you mean {hint}?) and no template uses {{{name}}}"
            else:
                what = f"{name!r} sets no parameter and no template uses {{{name}}}"
            if count is None:
                what += ": the column is unused, kept only as a label"
            elif count > 1:
                what += f": its {count:,} values make jobs that send identical requests"
            else:
                what += ": the axis is unused"
            (self.error if hint else self.warn)(line, where, what, file=file)

    # --- YAML node helpers -------------------------------------------------------

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
            except ValueError:  # reported by _check_tags; keep the text
                return raw
            return value if isinstance(value, float) else raw
        return raw

    def mapping(self, node: yaml.Node, where: str, allowed: Sequence[str] | None) -> dict[str, yaml.Node]:
        """The items of a mapping node by key; reports duplicates, unknown keys, non-mappings."""
        if not isinstance(node, yaml.MappingNode):
            self.error(self.at(node), where, f"must be a mapping, not {_describe_node(node)}")
            return {}
        items: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            sub = f"{where}.{key_node.value}" if where else str(key_node.value)
            if not isinstance(key_node, yaml.ScalarNode):
                self.error(self.at(key_node), where, "keys must be plain names")
                continue
            key = str(key_node.value)
            if key in items:
                self.error(self.at(key_node), sub, "duplicate key (the later one would silently win)")
                continue
            if allowed is not None and key not in allowed:
                self.unknown_key(self.at(key_node), where, key, allowed)
                continue
            items[key] = value_node
            self._key_lines[id(value_node)] = _line(key_node)
        return items

    def check_param(
        self, name: str, value: Scalar, line: int | None, where: str, *, file: str | None = None
    ) -> bool:
        """Validate one parameter value on its own; report with this location."""
        try:
            validate_params({"prompt": value} if name == "prompt" else {"prompt": "x", name: value})
        except ParamsInvalid as exc:
            for problem in exc.problems:
                self.error(line, where, problem.message, file=file)
            return False
        if name in TEXT_PARAMS and isinstance(value, str):
            problems = prompt_problems(value)
            for message in problems:
                self.error(line, where, message, file=file)
            return not problems
        return True

    def check_label(self, value: Scalar, line: int | None, where: str, *, file: str | None = None) -> bool:
        """A label value fills prompts and filenames: no control characters."""
        problem = control_characters(value) if isinstance(value, str) else None
        if problem is not None:
            self.error(line, where, problem, file=file)
        return problem is None

    def param_value(self, name: str, node: yaml.Node, where: str) -> Value | Axis | None:
        """A parameter's value: a scalar, or (becoming an axis) a list or an integer range."""
        line = self.at(node)
        if isinstance(node, yaml.SequenceNode):
            return self.axis(name, node, where)
        if not isinstance(node, yaml.ScalarNode):
            self.error(line, where, f"must be a value or a list, not {_describe_node(node)}")
            return None
        value = self.scalar(node)
        if name in STRING_PARAMS and value is not None and node.style is None:
            value = str(node.value)  # plain `4:5` is a string, not YAML 1.1 base-60
        if value is None:
            self.error(line, where, "has no value")
            return None
        if name in INTEGER_PARAMS and isinstance(value, str) and _is_range_text(value):
            return self.axis(name, node, where)
        if self.check_param(name, value, line, where):
            return Value(value, where, line)
        return None

    def axis(self, name: str, node: yaml.Node, where: str) -> Axis | None:
        """A grid/zip axis (or list-valued field): a list of values, or a range string."""
        line = self.at(node)
        is_param = name in PARAMETER_NAMES
        if isinstance(node, yaml.ScalarNode):
            raw = self.scalar(node)
            rng = parse_range(raw) if isinstance(raw, str) else None
            if rng is None or (is_param and name not in INTEGER_PARAMS):
                what = "must be a list" + (
                    ' or a range like "1-8"' if not is_param or name in INTEGER_PARAMS else ""
                )
                self.error(line, where, f"{what}, not {_describe_node(node)}")
                return None
            size = _range_size(rng)
            if size == 0:
                self.error(line, where, f"range {raw!r} is empty (the start is above the end)")
                return None
            if size > MAX_RANGE_VALUES:
                self.error(line, where, f"range {raw!r} has {size:,} values; at most {MAX_RANGE_VALUES:,}")
                return None
            ok = True
            if is_param:
                ok = self.check_param(name, rng[0], line, where) and self.check_param(
                    name, rng[-1], line, where
                )
            return Axis(name, rng, where, line) if ok else None
        if not isinstance(node, yaml.SequenceNode):
            self.error(line, where, f"must be a list, not {_describe_node(node)}")
            return None
        if not node.value:
            self.error(line, where, "is an empty list")
            return None
        values: list[Scalar] = []
        ok = True
        for i, item in enumerate(node.value):
            item_where = f"{where}[{i}]"
            if not isinstance(item, yaml.ScalarNode):
                self.error(self.at(item), item_where, f"must be a value, not {_describe_node(item)}")
                ok = False
                continue
            value = self.scalar(item)
            if name in STRING_PARAMS and value is not None and item.style is None:
                value = str(item.value)
            if value is None:
                self.error(self.at(item), item_where, "has no value")
                ok = False
                continue
            if is_param and not self.check_param(name, value, self.at(item), item_where):
                ok = False
                continue
            if not is_param and not self.check_label(value, self.at(item), item_where):
                ok = False
                continue
            values.append(value)
        return Axis(name, tuple(values), where, line) if ok else None

    def label_name(
        self, name: str, line: int, where: str, *, file: str | None = None, axis: bool = False
    ) -> bool:
        """Whether ``name`` may be a label; a constant label close to a parameter name warns.

        For an ``axis`` (grid, zip, CSV column) that warning waits for :meth:`unused_axes`,
        which knows whether any template uses the name.
        """
        if name in _RESERVED_LABELS:
            self.error(
                line, where, f"{name!r} is reserved for the filename template; choose another name", file=file
            )
            return False
        hint = suggest_name(name)
        if hint and name not in PARAMETER_NAMES and not axis:
            self.warn(
                line,
                where,
                f"{name!r} is not a parameter, so it is a label (did you mean {hint}?)",
                file=file,
            )
        return True


class _Unreadable(Exception):
    """A file that is not read: missing, not a regular file, too large; the message says which.

    The message completes a sentence whose subject is the file (``is a FIFO ...``).
    """

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _read_bounded(path: Path, cap: int, what: str, hint: str = "") -> bytes:
    """The bytes of a regular file of at most ``cap`` bytes, or :class:`_Unreadable`.

    Opened non-blocking so that a FIFO is refused instead of waiting for a writer; a
    device (``/dev/zero``) is refused by its type, a file growing while read by ``cap``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _Unreadable("does not exist", missing=True) from None
    except OSError as exc:
        raise _Unreadable(f"cannot be read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
            raise _Unreadable(f"is {kind}; {what} must be a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= cap:
            chunk = os.read(fd, min(1 << 20, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise _Unreadable(f"cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > cap:
        raise _Unreadable(f"is larger than {_size(cap)}, the limit for {what}{hint}")
    return b"".join(chunks)


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n:,} bytes"


class _TooDeep(Exception):
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
                raise _TooDeep(int(event.start_mark.line) + 1)
            node = super().compose_node(parent, index)
            if isinstance(event, yaml.ScalarEvent) and event.tag not in (None, "!"):
                assert isinstance(node, yaml.ScalarNode)
                self.explicit.append(node)
            return node
        finally:
            self._depth -= 1


def _compose(text: str) -> tuple[yaml.Node | None, list[yaml.ScalarNode]]:
    """The YAML node tree of ``text``, at most :data:`MAX_DEPTH` levels deep, and its
    explicitly tagged scalars."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_node(), loader.explicit
    finally:
        loader.dispose()


# Tags whose values batchgen reads as numbers or booleans: a value written with one of
# them must be one (``!!float abc`` is a mistake, not the text "abc").
_TYPED_TAGS = {
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:bool": "true or false",
}


def _check_tags(loader: _Loader, root: yaml.Node, explicit: list[yaml.ScalarNode]) -> None:
    """Report every scalar written ``!!float`` / ``!!int`` / ``!!bool`` whose text is not one."""
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
    if not bad:
        return
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
            loader.error(_line(node), where, bad[id(node)])


def run_date(text: str | None = None, *, now: float | None = None) -> str:
    """The run's date for ``{date}``: ``text`` if it is a real ``YYYY-MM-DD`` date (else
    :class:`ValueError`), or the UTC date at ``now`` (default: now)."""
    if text is not None:
        if not _DATE.fullmatch(text):
            raise ValueError(f"date {text!r} is not YYYY-MM-DD")
        try:
            return datetime.date.fromisoformat(text).isoformat()
        except ValueError as exc:  # 2026-02-30
            raise ValueError(f"date {text!r}: {exc}") from None
    moment = datetime.datetime.fromtimestamp(time.time() if now is None else now, tz=datetime.UTC)
    return moment.date().isoformat()


def load_manifest(path: str | os.PathLike[str], *, date: str | None = None) -> Manifest:
    """Load a YAML (.yaml/.yml) or CSV (.csv) manifest; raise ManifestError with every problem.

    ``date`` (``YYYY-MM-DD``, default today in UTC) fills ``{date}`` in the run name and
    the output filenames (never in prompts: a job's key must not change with the day).
    """
    date = run_date(date)
    p = Path(path)
    display = str(path)
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".yaml", ".yml"):
        raise ManifestError([Problem(display, None, "", "a manifest is a .yaml, .yml or .csv file")])
    is_csv = suffix == ".csv"
    cap = MAX_CSV_BYTES if is_csv else MAX_YAML_BYTES
    what = "a CSV manifest" if is_csv else "a YAML manifest"
    hint = "" if is_csv else " (put long lists of values in a rows: CSV file)"
    try:
        data = _read_bounded(p, cap, what, hint)
    except _Unreadable as exc:
        what = "no such file" if exc.missing else str(exc)
        raise ManifestError([Problem(display, None, "", what)]) from None
    loader = _Loader(p, display, date)
    sha = hashlib.sha256(data).hexdigest()
    if is_csv:
        manifest = _load_csv_manifest(loader, data, sha)
    else:
        manifest = _load_yaml_manifest(loader, data, sha)
    if loader.problems or manifest is None:
        fallback = [Problem(display, None, "", "invalid manifest")]
        raise ManifestError(_in_file_order(loader.problems) or fallback)
    return replace(manifest, warnings=_in_file_order(loader.warnings), date=date)


def _in_file_order(problems: list[Problem]) -> list[Problem]:
    """Problems sorted by file (in order of first mention) then line; stable for one line."""
    files: dict[str, int] = {}
    for problem in problems:
        files.setdefault(problem.file, len(files))
    return sorted(problems, key=lambda p: (files[p.file], p.line or 0))


def _name_from_file(loader: _Loader) -> str:
    """The run name a manifest without ``name:`` gets: its file name without the extension.

    The name becomes the folder ``output/<name>/``: a stem of ``..`` (``...yaml``) or
    ``.`` would put the images and the ledger in ``.`` or above it, and a leading dot
    hides the folder. Leading dots are dropped, and a name left empty becomes
    ``manifest``, with a warning.
    """
    stem = loader.path.stem
    name = stem.lstrip(".")
    if name == stem and name:
        return name
    name = name or "manifest"
    loader.warn(
        None, "", f"the file name gives the run name {stem!r}, which is not a folder name; using {name!r}"
    )
    return name


def _load_csv_manifest(loader: _Loader, data: bytes, sha: str) -> Manifest | None:
    source = _read_csv(loader, loader.path, loader.display, None, "", data=data)
    if source is None:
        return None
    spec = JobSpec("", None, {}, {}, (), (), source, None)
    loader.axis_labels(spec, _check_prompts(loader, spec, ""))
    loader.unused_axes(parse_template(DEFAULT_FILENAME).names)
    return Manifest(
        path=loader.path,
        name=_name_from_file(loader),
        model=DEFAULT_MODEL,
        sha256=sha,
        jobs=(spec,),
        filename=parse_template(DEFAULT_FILENAME),
        filename_line=None,
        warnings=loader.warnings,
    )


def _load_yaml_manifest(loader: _Loader, data: bytes, sha: str) -> Manifest | None:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        loader.error(None, "", f"is not UTF-8 text ({exc.reason} at byte {exc.start})")
        return None
    try:
        root, explicit = _compose(text)
    except _TooDeep as exc:
        loader.error(exc.line, "", f"nested more than {MAX_DEPTH} levels deep; a manifest needs 5")
        return None
    except RecursionError:  # a backstop: the depth bound should always come first
        loader.error(None, "", "nested too deeply to read")
        return None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else None
        what = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        loader.error(line, "", f"YAML syntax error: {what}")
        return None
    except yaml.reader.ReaderError as exc:
        # Raised by the reader for characters YAML forbids (NUL, other controls); it
        # carries a character offset, not a line.
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        name = "a NUL character" if char == 0 else f"the control character U+{char:04X}"
        loader.error(line, "", f"{name} is not allowed in YAML (a binary file, or a bad paste?)")
        return None
    except yaml.YAMLError as exc:
        loader.error(None, "", f"YAML error: {exc}")
        return None
    if root is not None:
        _check_tags(loader, root, explicit)
        if loader.problems:
            return None
    if root is None or (isinstance(root, yaml.ScalarNode) and root.value == ""):
        loader.error(None, "", "the manifest is empty; it needs at least a jobs list")
        return None
    top = loader.mapping(root, "", TOP_KEYS)
    if not isinstance(root, yaml.MappingNode):
        return None

    name = _name_from_file(loader) if "name" not in top else loader.path.stem
    if "name" in top:
        node = top["name"]
        value = loader.scalar(node) if isinstance(node, yaml.ScalarNode) else None
        run_name = str(value).replace("{date}", loader.date) if isinstance(value, (str, int)) else None
        if run_name is not None and _RUN_NAME.fullmatch(run_name):
            name = run_name
        else:
            loader.error(
                loader.at(node),
                "name",
                "must be a plain name (letters, digits, . _ -, and {date}), used as the output folder",
            )
    model = DEFAULT_MODEL
    if "model" in top:
        node = top["model"]
        value = loader.scalar(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, str) and _MODEL.fullmatch(value):
            model = value
        else:
            loader.error(loader.at(node), "model", "must be a Segmind model slug like bria-text-to-image")

    defaults: dict[str, Value | Axis] = {}
    default_seeds: int | None = None
    if "defaults" in top:
        items = loader.mapping(top["defaults"], "defaults", (*PARAMETER_NAMES, "seeds"))
        for key, node in items.items():
            if key == "seeds":
                default_seeds = _seeds(loader, node, "defaults.seeds")
                continue
            setting = loader.param_value(key, node, f"defaults.{key}")
            if setting is not None:
                defaults[key] = setting
        if default_seeds is not None and "seed" in defaults:
            loader.error(loader.at(top["defaults"]), "defaults", "set seed or seeds, not both")

    jobs: list[JobSpec] = []
    known = set(FILENAME_BUILTINS) | set(PARAMETER_NAMES)
    jobs_ok = True  # a job too broken to define its names: name checks below would only echo it
    if "jobs" not in top:
        loader.error(loader.at(root), "", "missing key 'jobs': the list of jobs to run")
    else:
        node = top["jobs"]
        if not isinstance(node, yaml.SequenceNode):
            loader.error(loader.at(node), "jobs", f"must be a list of jobs, not {_describe_node(node)}")
        elif not node.value:
            loader.error(loader.at(node), "jobs", "is empty; a manifest needs at least one job")
        else:
            for i, job_node in enumerate(node.value):
                spec, names = _job(loader, job_node, f"jobs[{i}]", defaults, default_seeds)
                if spec is not None:
                    jobs.append(spec)
                if names is None:
                    jobs_ok = False
                else:
                    known.update(names)

    filename = parse_template(DEFAULT_FILENAME)
    filename_line: int | None = None
    if "output" in top:
        items = loader.mapping(top["output"], "output", OUTPUT_KEYS)
        if "filename" in items:
            node = items["filename"]
            filename_line = loader.at(node)
            value = loader.scalar(node) if isinstance(node, yaml.ScalarNode) else None
            if not isinstance(value, str) or not value.strip():
                loader.error(filename_line, "output.filename", "must be a non-empty template string")
            else:
                try:
                    filename = parse_template(value)
                except TemplateError as exc:
                    loader.error(filename_line, "output.filename", str(exc))
    for missing in [n for n in filename.names if n not in known and jobs_ok]:
        loader.error(filename_line, "output.filename", _undefined(missing, known))

    report: dict[str, str] = {}
    if "report" in top:
        items = loader.mapping(top["report"], "report", REPORT_KEYS)
        for key, node in items.items():
            value = loader.scalar(node) if isinstance(node, yaml.ScalarNode) else None
            if not isinstance(value, str) or (jobs_ok and value not in known - {"index", "key"}):
                loader.error(loader.at(node), f"report.{key}", "must name a parameter or a label of the jobs")
            else:
                report[key] = value
    loader.unused_axes({*filename.names, *report.values()})

    return Manifest(
        path=loader.path,
        name=name,
        model=model,
        sha256=sha,
        jobs=tuple(jobs),
        filename=filename,
        filename_line=filename_line,
        warnings=loader.warnings,
        report=report,
    )


def _undefined(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    hint = f" (did you mean {{{close[0]}}}?)" if close else ""
    return f"{{{name}}} is not defined{hint}"


def _seeds(loader: _Loader, node: yaml.Node, where: str) -> int | None:
    value = loader.scalar(node) if isinstance(node, yaml.ScalarNode) else None
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SEEDS:
        return value
    loader.error(
        loader.at(node),
        where,
        f"must be a whole number of seeds from 1 to {MAX_SEEDS}, not {_describe_node(node)}",
    )
    return None


def _label_names(spec: JobSpec) -> set[str]:
    names = set(spec.labels)
    names.update(a.name for a in (*spec.axes, *spec.zip) if a.name not in PARAMETER_NAMES)
    if spec.rows is not None:
        names.update(c for c in spec.rows.columns if c not in PARAMETER_NAMES)
    return names


def _job(
    loader: _Loader,
    node: yaml.Node,
    where: str,
    defaults: Mapping[str, Value | Axis],
    default_seeds: int | None,
) -> tuple[JobSpec | None, set[str] | None]:
    """The job's spec if it is valid, and the label names it defines if its structure is."""
    if isinstance(node, yaml.ScalarNode) and isinstance(loader.scalar(node), str):
        loader.error(loader.at(node), where, "must be a mapping; write `- prompt: ...` for a single prompt")
        return None, None
    start = len(loader.problems)
    items = loader.mapping(node, where, JOB_KEYS)
    line = loader.at(node)

    own: dict[str, Value | Axis] = {}
    for key, value_node in items.items():
        if key in PARAMETER_NAMES:
            value = loader.param_value(key, value_node, f"{where}.{key}")
            if value is not None:
                own[key] = value

    labels: dict[str, Value] = {}
    if "labels" in items:
        for key, value_node in loader.mapping(items["labels"], f"{where}.labels", None).items():
            sub = f"{where}.labels.{key}"
            if key in PARAMETER_NAMES:
                loader.error(
                    loader.at(value_node), sub, f"{key} is a parameter; set it on the job, not as a label"
                )
                continue
            if not loader.label_name(key, loader.at(value_node), sub):
                continue
            label = loader.scalar(value_node) if isinstance(value_node, yaml.ScalarNode) else None
            if label is None:
                loader.error(
                    loader.at(value_node), sub, "must be a single value (text, number or true/false)"
                )
                continue
            if loader.check_label(label, loader.at(value_node), sub):
                labels[key] = Value(label, sub, loader.at(value_node))

    grid = _axes(loader, items, "grid", where)
    zipped = _axes(loader, items, "zip", where)
    if "zip" in items:
        lengths = {len(a.values) for a in zipped}
        if len(lengths) > 1:
            sizes = ", ".join(f"{a.name} has {len(a.values)}" for a in zipped)
            loader.error(loader.at(items["zip"]), f"{where}.zip", f"lists must have equal lengths: {sizes}")

    rows: RowSource | None = None
    if "rows" in items:
        value_node = items["rows"]
        rel = loader.scalar(value_node) if isinstance(value_node, yaml.ScalarNode) else None
        if not isinstance(rel, str) or not rel.strip():
            loader.error(loader.at(value_node), f"{where}.rows", "must be the path of a CSV file")
        else:
            csv_path = loader.path.parent / rel
            shown = os.path.join(os.path.dirname(loader.display), rel)
            rows = _read_csv(loader, csv_path, shown, loader.at(value_node), f"{where}.rows")

    seeds: int | None = None
    if "seeds" in items:
        seeds = _seeds(loader, items["seeds"], f"{where}.seeds")
        if "seed" in own:
            loader.error(loader.at(items["seeds"]), f"{where}.seeds", "set seed or seeds on a job, not both")

    # Names set twice at the same level are a mistake, not a precedence question.
    seen: dict[str, str] = {}
    for axis in (*grid, *zipped):
        if axis.name in seen:
            loader.error(axis.line, axis.where, f"{axis.name} is already set by {seen[axis.name]}")
        seen[axis.name] = axis.where
    for name in labels:
        if name in seen:
            loader.error(labels[name].line, labels[name].where, f"{name} is already set by {seen[name]}")
    if rows is not None:
        for column in rows.columns:
            if column in seen:
                loader.error(
                    loader.at(items["rows"]),
                    f"{where}.rows",
                    f"column {column} is already set by {seen[column]}",
                )
            elif column in labels:
                loader.error(
                    loader.at(items["rows"]),
                    f"{where}.rows",
                    f"column {column} is already a label of this job",
                )
    if seeds is not None and "seed" in seen:
        loader.error(loader.at(items["seeds"]), f"{where}.seeds", f"seed is already set by {seen['seed']}")

    # Precedence: API defaults < defaults < job fields < grid/zip/row values.
    merged: dict[str, Value | Axis] = dict(defaults)
    if ("seed" in own or seeds is not None) and "seed" in merged:
        del merged["seed"]
    merged.update(own)
    if seeds is None and "seed" not in own:
        seeds = default_seeds
    fields = {k: v for k, v in merged.items() if isinstance(v, Value) and k not in seen}
    implicit = [v for k, v in merged.items() if isinstance(v, Axis) and k not in seen]
    spec = JobSpec(where, line, fields, labels, (*grid, *implicit), tuple(zipped), rows, seeds)
    structure_ok = len(loader.problems) == start
    # Check the prompt templates even when a value above was wrong, so every problem is
    # reported at once; names written under labels/grid/zip count as defined even if one
    # of their values was invalid, and a CSV that could not be read hides its columns.
    has_prompt = "prompt" in fields or any(a.name == "prompt" for a in (*grid, *zipped))
    used: set[str] = set()
    if structure_ok or (has_prompt and not ("rows" in items and rows is None)):
        used = _check_prompts(loader, spec, where, declared=_written_names(items))
    if not structure_ok:
        return None, None
    loader.axis_labels(spec, used)
    return (spec if len(loader.problems) == start else None), _label_names(spec)


def _axes(loader: _Loader, items: Mapping[str, yaml.Node], section: str, where: str) -> list[Axis]:
    """The valid axes of a job's ``grid`` or ``zip`` mapping, in written order."""
    axes: list[Axis] = []
    if section not in items:
        return axes
    for key, value_node in loader.mapping(items[section], f"{where}.{section}", None).items():
        sub = f"{where}.{section}.{key}"
        if key not in PARAMETER_NAMES and not loader.label_name(key, loader.at(value_node), sub, axis=True):
            continue
        axis = loader.axis(key, value_node, sub)
        if axis is not None:
            axes.append(axis)
    return axes


def _written_names(items: Mapping[str, yaml.Node]) -> set[str]:
    """Every name written under a job's labels, grid or zip, valid or not."""
    names: set[str] = set()
    for section in ("labels", "grid", "zip"):
        node = items.get(section)
        if isinstance(node, yaml.MappingNode):
            names.update(str(key.value) for key, _ in node.value if isinstance(key, yaml.ScalarNode))
    return names


def _read_csv(
    loader: _Loader, path: Path, shown: str, line: int | None, where: str, *, data: bytes | None = None
) -> RowSource | None:
    """Read a CSV (UTF-8 with or without BOM, CRLF or LF); check parameter cells.

    ``data`` is the file's content when the caller has read it already (a CSV manifest).
    """
    try:
        if data is None:
            data = _read_bounded(path, MAX_CSV_BYTES, "a rows: CSV file")
        text = data.decode("utf-8-sig")
    except _Unreadable as exc:
        if exc.missing:
            loader.error(line, where, f"CSV file not found: {shown}")
        else:
            loader.error(line, where, f"{shown} {exc}")
        return None
    except UnicodeDecodeError as exc:
        loader.error(None, "", f"is not UTF-8 text ({exc.reason} at byte {exc.start})", file=shown)
        return None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        loader.error(line, where, f"{shown} is empty; it needs a header row and at least one row")
        return None
    except csv.Error as exc:
        loader.error(1, "", f"CSV error: {exc}", file=shown)
        return None
    ok = True
    for i, column in enumerate(header):
        if not column:
            loader.error(1, f"column {i + 1}", "has no name in the header", file=shown)
            ok = False
        elif header.index(column) != i:
            loader.error(1, f"column {column}", "appears twice in the header", file=shown)
            ok = False
        elif column not in PARAMETER_NAMES:
            ok = loader.label_name(column, 1, f"column {column}", file=shown, axis=True) and ok
    rows: list[Row] = []
    previous = reader.line_num
    try:
        for record in reader:
            row_line = previous + 1
            previous = reader.line_num
            if not any(cell.strip() for cell in record):
                continue  # blank lines are not rows
            if len(record) != len(header):
                loader.error(
                    row_line, "", f"has {len(record)} cells; the header has {len(header)}", file=shown
                )
                ok = False
                continue
            cells = {h: c for h, c in zip(header, record, strict=True) if c.strip() and h}
            # A bad cell is reported but keeps its row: the row's other checks (its
            # prompt, its template names) still run, so every problem shows at once.
            for column, cell in cells.items():
                if column in PARAMETER_NAMES:
                    loader.check_param(column, cell, row_line, f"column {column}", file=shown)
                else:
                    loader.check_label(cell, row_line, f"column {column}", file=shown)
            rows.append(Row(row_line, cells))
    except csv.Error as exc:
        loader.error(reader.line_num, "", f"CSV error: {exc}", file=shown)
        return None
    if not rows:
        loader.error(line, where, f"{shown} has a header but no rows")
        return None
    return RowSource(path, shown, tuple(header), tuple(rows)) if ok else None


def _check_template(
    loader: _Loader, text: str, line: int | None, where: str, file: str | None
) -> Template | None:
    try:
        template = parse_template(text)
    except TemplateError as exc:
        loader.error(line, where, f"invalid template: {exc}", file=file)
        return None
    for message in prompt_warnings(template.render({}, missing="")):
        loader.warn(line, where, message, file=file)
    return template


def _check_prompts(loader: _Loader, spec: JobSpec, where: str, *, declared: Iterable[str] = ()) -> set[str]:
    """Every prompt the job can use parses, and names only what that job (or row) defines.

    Returns every name the job's prompts use.
    """
    static = set(PARAMETER_NAMES) - {"prompt"}
    static.update(declared)
    static.update(spec.labels)
    static.update(a.name for a in (*spec.axes, *spec.zip) if a.name not in PARAMETER_NAMES)
    rows = spec.rows
    columns = {c for c in rows.columns if c not in PARAMETER_NAMES} if rows is not None else set()
    known = static | columns
    prompt_axes = [a for a in (*spec.axes, *spec.zip) if a.name == "prompt"]
    fallback = spec.fields.get("prompt")
    sources: list[tuple[str, int | None, str]] = []
    for axis in prompt_axes:
        sources.extend((str(v), axis.line, f"{axis.where}[{i}]") for i, v in enumerate(axis.values))
    if not prompt_axes and fallback is not None:
        sources.append((str(fallback.value), fallback.line, fallback.where))
    templates: list[Template] = []
    used_anywhere: set[str] = set()
    for text, line, src_where in sources:
        template = _check_template(loader, text, line, src_where, None)
        if template is None:
            continue
        used_anywhere.update(template.names)
        undefined = [n for n in template.names if n not in known]
        for name in undefined:
            loader.error(line, src_where, _undefined(name, known))
        if not undefined:
            templates.append(template)
    cell_prompts = rows is not None and "prompt" in rows.columns and not prompt_axes
    if not sources and not cell_prompts:
        if rows is not None and not where:
            loader.error(1, "", "there is no prompt column; it is required", file=rows.display)
        else:
            loader.error(
                spec.line, where, "has no prompt: set prompt on the job, in defaults, or in a grid/zip"
            )
        return used_anywhere
    if rows is None:
        return used_anywhere
    # Rows: an empty cell is "not set", so each row is checked against its own cells.
    for row in rows.rows:
        row_templates = templates
        if cell_prompts and "prompt" in row.cells:
            template = _check_template(loader, row.cells["prompt"], row.line, "column prompt", rows.display)
            if template is None:
                continue
            used_anywhere.update(template.names)
            undefined = [n for n in template.names if n not in known]
            for name in undefined:
                loader.error(row.line, "column prompt", _undefined(name, known), file=rows.display)
            row_templates = [] if undefined else [template]
        elif not sources:
            loader.error(row.line, "column prompt", "is empty and the job has no prompt", file=rows.display)
            continue
        used = {n for t in row_templates for n in t.names}
        for name in sorted(used & columns):
            if name not in row.cells:
                loader.error(
                    row.line, f"column {name}", f"is empty but the prompt uses {{{name}}}", file=rows.display
                )
            else:
                for message in prompt_warnings(row.cells[name]):
                    loader.warn(row.line, f"column {name}", message, file=rows.display)
    return used_anywhere
