"""Wildcard files: the collections of values a prompt's ``__name__`` draws from.

The folders: those a manifest names (``wildcards: path``, or a list of paths, relative
to the manifest), else ``wildcards/`` beside the manifest when there is one. In a folder:

- ``colours.txt`` is the collection ``colours``, one value a line (blank lines and lines
  starting with ``#`` are skipped); ``clothes/tops.txt`` is ``clothes/tops``.
- ``.yaml`` / ``.yml`` / ``.json``: a mapping whose keys name collections and whose lists
  hold the values; nested keys make a path (``clothes: {tops: [...]}`` is
  ``clothes/tops``), prefixed by the file's folder (not by the file's name, as in
  ``dynamicprompts``); a file holding just a list is named after the file. A value may
  carry a weight for random draws: ``"2::red"`` or ``{text: red, weight: 2}``.

A collection keeps its values in file order, each once. A name is matched exactly, or as
a glob (``__colours*__``, ``__clothes/*__``; ``*`` also crosses ``/``); a glob takes the
values of every collection it matches, in name order. A ``.txt`` file's name wins over
the same name in a YAML/JSON file (so looking a ``.txt`` name up reads no YAML); the
same name in two YAML/JSON files is an error where it is used.

Files are listed once and read only when a prompt uses them, each within a size cap;
every file read for a collection used is remembered as a :class:`~batchgen.manifest.model.Source`
(:attr:`Wildcards.used`): the manifest's sha256 covers them.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from batchgen.errors import Problem
from batchgen.manifest.model import Origin, Source
from batchgen.manifest.params import control_characters
from batchgen.manifest.reads import MAX_YAML_BYTES, Unreadable, read_bounded
from batchgen.manifest.yamlnodes import MAX_DEPTH, TooDeep, compose, text_origin

__all__ = ["MAX_TEXT_BYTES", "MAX_WILDCARD_FILES", "Collection", "Missing", "WildValue", "Wildcards"]

MAX_TEXT_BYTES = 16 << 20  # a .txt wildcard file: hundreds of thousands of lines
MAX_WILDCARD_FILES = 100_000  # files listed under the wildcard folders
_STRUCTURED = (".yaml", ".yml", ".json")
_GLOB = frozenset("*?[")
_MAX_ENTRIES = 200_000  # names and lists walked in one YAML/JSON file


@dataclass(frozen=True, slots=True)
class WildValue:
    """One value of a collection: its text (itself a prompt), weight, and where it is written."""

    text: str
    weight: float
    origin: Origin


@dataclass(frozen=True, slots=True)
class Collection:
    """A named list of values from one file."""

    name: str
    file: str  # as problems name it
    values: tuple[WildValue, ...]


class Missing(Exception):
    """A wildcard pattern that cannot be used: ``message`` (if any) says why where the pattern
    is written, with a "did you mean"; ``problems`` are located in wildcard files (a file that
    cannot be read, whose collections are unknown and may be the one meant; a bad value).
    """

    def __init__(self, message: str | None, problems: list[Problem]) -> None:
        super().__init__(message or "; ".join(str(p) for p in problems))
        self.message = message
        self.problems = problems


@dataclass
class _Folder:
    path: Path
    display: str


@dataclass
class _Index:
    text_files: dict[str, tuple[Path, str]] = field(default_factory=dict)  # name -> (path, display)
    structured: list[tuple[Path, str, str]] = field(default_factory=list)  # (path, display, prefix)
    problems: list[Problem] = field(default_factory=list)


class Wildcards:
    """The wildcard collections of some folders, listed and read on first use."""

    def __init__(self, folders: list[tuple[Path, str]], *, absent: Sequence[str] = ()) -> None:
        """``folders``: each folder's path and its name in messages, first wins; ``absent``:
        the folders looked for that are not there, each said with where it is named, so that
        a wildcard not found says where it was looked for."""
        self.folders = [_Folder(path, display) for path, display in folders]
        self.absent = tuple(absent)
        self.used: dict[str, Source] = {}  # display -> every file read for a collection used
        self._index: _Index | None = None
        self._text: dict[str, Collection | Problem] = {}
        self._structured: dict[str, list[Collection]] | None = None
        self._structured_problems: list[Problem] = []
        self._file_problems: dict[str, list[Problem]] = {}  # bad values, by file
        self._read_files: dict[str, Source] = {}  # display -> every file read

    # --- lookup ------------------------------------------------------------------

    def find(self, pattern: str) -> list[Collection]:
        """The collections ``pattern`` names (one, or every one a glob matches), or :class:`Missing`."""
        index = self._listed()
        name = pattern.strip("/")
        if not (_GLOB & set(name)):
            if name in index.text_files:
                found = self._read_text(name)
                if isinstance(found, Problem):
                    raise Missing(f"__{pattern}__: its file cannot be read", [found])
                return self._use([found])
            structured = self._parsed()
            matches = structured.get(name, [])
            if len(matches) > 1:
                files = " and ".join(c.file for c in matches)
                raise Missing(f"__{pattern}__ is defined twice: in {files}", [])
            if matches:
                return self._use(matches)
            raise Missing(self._not_found(pattern, name), self._problems())
        found_all: list[Collection] = []
        structured = self._parsed()
        for each in sorted({*index.text_files, *structured}):
            if fnmatch.fnmatchcase(each, name):
                if each in index.text_files:
                    one = self._read_text(each)
                    if isinstance(one, Problem):
                        raise Missing(f"__{pattern}__: a file it matches cannot be read", [one])
                    found_all.append(one)
                else:
                    found_all.extend(structured[each])
        if not found_all:
            raise Missing(f"__{pattern}__ matches no wildcard{self._where()}", self._problems())
        return self._use(found_all)

    def _use(self, collections: list[Collection]) -> list[Collection]:
        """Note the files of ``collections`` as used."""
        for one in collections:
            self.used.setdefault(one.file, self._read_files[one.file])
        return collections

    def problems(self, collections: list[Collection]) -> list[Problem]:
        """The problems of the files ``collections`` come from (bad values, left out of them)."""
        found: dict[Problem, None] = {}
        for one in collections:
            found.update(dict.fromkeys(self._file_problems.get(one.file, ())))
        return list(found)

    def _where(self, hint: str = "") -> str:
        """Where a wildcard was looked for (the folders, then ``hint``), and the folders not there."""
        text = (" in " + ", ".join(f.display for f in self.folders) if self.folders else "") + hint
        if self.absent:
            text += ("; " if self.folders else ": ") + "; ".join(self.absent)
        return text

    def _not_found(self, pattern: str, name: str) -> str:
        names = sorted({*self._listed().text_files, *self._parsed()})
        hint = ""
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        folded = [n for n in names if n.casefold() == name.casefold()]
        nested = [n for n in names if n.endswith("/" + name)]
        if folded:
            hint = f" (did you mean __{folded[0]}__?)"
        elif close:
            hint = f" (did you mean __{close[0]}__?)"
        elif nested:
            hint = f" (did you mean __{nested[0]}__?)"
        return f"no wildcard __{pattern}__{self._where(hint)}"

    def _problems(self) -> list[Problem]:
        return [*self._listed().problems, *self._structured_problems]

    # --- listing and reading ---------------------------------------------------------

    def _listed(self) -> _Index:
        """Every wildcard file under the folders (hidden ones skipped), listed once."""
        if self._index is not None:
            return self._index
        index = _Index()
        count = 0
        for folder in self.folders:
            if not folder.path.is_dir():
                what = "does not exist" if not folder.path.exists() else "is not a folder"
                index.problems.append(Problem(folder.display, None, "", f"the wildcards folder {what}"))
                continue
            for dirpath, dirnames, filenames in os.walk(folder.path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                rel_dir = Path(dirpath).relative_to(folder.path)
                for filename in sorted(filenames):
                    if filename.startswith("."):
                        continue
                    count += 1
                    if count > MAX_WILDCARD_FILES:
                        index.problems.append(
                            Problem(folder.display, None, "", f"holds more than {MAX_WILDCARD_FILES:,} files")
                        )
                        self._index = index
                        return index
                    path = Path(dirpath) / filename
                    display = os.path.join(folder.display, *rel_dir.parts, filename)
                    suffix = path.suffix.lower()
                    prefix = rel_dir.as_posix() if rel_dir != Path(".") else ""
                    if suffix == ".txt":
                        name = f"{prefix}/{path.stem}" if prefix else path.stem
                        index.text_files.setdefault(name, (path, display))
                    elif suffix in _STRUCTURED:
                        index.structured.append((path, display, prefix))
        self._index = index
        return index

    def _read(self, path: Path, display: str, cap: int) -> str | Problem:
        """A wildcard file's text (its sha256 noted), or the problem reading it."""
        try:
            data = read_bounded(path, cap, "a wildcard file")
        except Unreadable as exc:
            return Problem(display, None, "", f"wildcard file {exc}")
        self._read_files[display] = Source(display, hashlib.sha256(data).hexdigest(), path)
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return Problem(display, None, "", f"is not UTF-8 text ({exc.reason} at byte {exc.start})")

    def _read_text(self, name: str) -> Collection | Problem:
        """The collection of a ``.txt`` file, read once."""
        cached = self._text.get(name)
        if cached is not None:
            return cached
        path, display = self._listed().text_files[name]
        text = self._read(path, display, MAX_TEXT_BYTES)
        if isinstance(text, Problem):
            self._text[name] = text
            return text
        values: dict[str, WildValue] = {}
        problems = self._file_problems.setdefault(display, [])
        for number, raw in enumerate(text.split("\n"), start=1):
            line = raw.rstrip("\r")
            value = line.strip()
            if not value or value.startswith("#"):
                continue
            problem = control_characters(value)
            if problem is not None:
                problems.append(Problem(display, number, "", problem))  # reported where the file is used
                continue
            indent = len(line) - len(line.lstrip())
            values.setdefault(value, WildValue(value, 1.0, Origin(display, number, indent + 1)))
        found: Collection | Problem
        if not values:
            found = Problem(display, None, "", "holds no values (only blank lines and # comments)")
        else:
            found = Collection(name, display, tuple(values.values()))
        self._text[name] = found
        return found

    def _parsed(self) -> dict[str, list[Collection]]:
        """Every collection of the YAML/JSON files, parsed once (all of them: any may hold a name)."""
        if self._structured is not None:
            return self._structured
        found: dict[str, list[Collection]] = {}
        for path, display, prefix in self._listed().structured:
            text = self._read(path, display, MAX_YAML_BYTES)
            if isinstance(text, Problem):
                self._structured_problems.append(text)
                continue
            problems: list[Problem] = []
            collections = _structured(text, display, prefix, path.stem, problems)
            if collections:
                self._file_problems[display] = problems
            else:
                self._structured_problems.extend(problems)
            for collection in collections:
                found.setdefault(collection.name, []).append(collection)
        self._structured = found
        return found


def _structured(text: str, display: str, prefix: str, stem: str, problems: list[Problem]) -> list[Collection]:
    """The collections of one YAML or JSON wildcard file; its problems appended to ``problems``."""
    try:
        root, _ = compose(text)
    except TooDeep as exc:
        problems.append(Problem(display, exc.line, "", f"nested more than {MAX_DEPTH} levels deep"))
        return []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else None
        what = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        problems.append(Problem(display, line, "", f"syntax error: {what}"))
        return []
    except (yaml.YAMLError, RecursionError) as exc:
        problems.append(Problem(display, None, "", f"cannot be read: {exc}"))
        return []
    out: list[Collection] = []
    budget = [_MAX_ENTRIES]  # aliases can make a small file a huge tree: walk a bounded part

    def join(*parts: str) -> str:
        return "/".join(p for p in parts if p)

    def walk(node: yaml.Node, name: str) -> None:
        budget[0] -= 1
        if budget[0] == 0:
            what = f"holds more than {_MAX_ENTRIES:,} entries (aliases?)"
            problems.append(Problem(display, None, "", what))
        if budget[0] <= 0:
            return
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and str(key.value):
                    walk(value, join(name, str(key.value)))
            return
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        values: dict[str, WildValue] = {}
        for item in items:
            value = _item(item, display, problems)
            if value is not None:
                values.setdefault(value.text, value)
        if values and name:
            out.append(Collection(name, display, tuple(values.values())))

    if isinstance(root, yaml.SequenceNode):
        walk(root, join(prefix, stem))
    elif isinstance(root, yaml.MappingNode):
        walk(root, prefix)
    elif root is not None:
        problems.append(
            Problem(display, None, "", "must be a mapping of names to lists of values, or a list")
        )
    return out


def _item(node: yaml.Node, display: str, problems: list[Problem]) -> WildValue | None:
    """One value of a YAML/JSON list: text, ``"2::text"``, or ``{text: ..., weight: 2}``."""
    line = int(node.start_mark.line) + 1
    weight = 1.0
    if isinstance(node, yaml.MappingNode):
        fields = {str(k.value): v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
        body = fields.get("text") or fields.get("content")
        raw_weight = fields.get("weight")
        if not isinstance(body, yaml.ScalarNode):
            problems.append(Problem(display, line, "", "a value written as a mapping needs text: ..."))
            return None
        if raw_weight is not None:
            try:
                weight = float(str(raw_weight.value)) if isinstance(raw_weight, yaml.ScalarNode) else -1.0
            except ValueError:
                weight = -1.0
            if not weight >= 0:
                problems.append(Problem(display, line, "", "weight must be a number of at least 0"))
                return None
        node = body
    if not isinstance(node, yaml.ScalarNode):
        problems.append(Problem(display, line, "", "a value must be text, not a list"))
        return None
    text = str(node.value)
    origin = text_origin(node, display)
    head, sep, rest = text.partition("::")
    if sep and head[:1].isdigit():
        try:
            weight = float(head)
        except ValueError:
            pass
        else:
            text = rest
            column = origin.column + len(head) + 2 if origin.column is not None else None
            origin = Origin(display, origin.line, column, origin.block_indent)
    stripped = text.strip()
    if not stripped:
        return None
    problem = control_characters(stripped)
    if problem is not None:
        problems.append(Problem(display, line, "", problem))
        return None
    if stripped != text and origin.column is not None:
        origin = Origin(display, origin.line, origin.column + len(text) - len(text.lstrip()), None)
    return WildValue(stripped, weight, origin)
