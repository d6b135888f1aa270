"""Load and validate a manifest file (YAML or CSV) into a Manifest; pure and sync.

Every problem is collected, located as ``FILE:LINE: where: what``, and raised together
as one :class:`~batchgen.errors.ManifestError`. Nothing here expands the jobs: a grid
is checked one axis value at a time, so a 10**12-job grid validates as fast as a small
one.

This module walks the YAML's top-level keys into a :class:`~batchgen.manifest.model.Manifest`.
What it leans on: :mod:`~batchgen.manifest.reads` (bounded file reads),
:mod:`~batchgen.manifest.yamlnodes` (the depth-bounded composer, tags, node reading),
:mod:`~batchgen.manifest.entry` (one entry of ``jobs``), :mod:`~batchgen.manifest.values`
(one value, a list or a range), :mod:`~batchgen.manifest.csvrows` (CSV rows),
:mod:`~batchgen.manifest.checks` (parameters, labels, prompts, unused axes),
:mod:`~batchgen.manifest.wildcards` (wildcard files), :mod:`~batchgen.manifest.jsonl`
(JSON Lines manifests) and :mod:`~batchgen.manifest.dates` (``{date}``).

``-`` reads the manifest from standard input: JSON Lines when its first line is a JSON
object, else YAML; its ``rows:`` and wildcard paths are relative to the current folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from dataclasses import replace
from pathlib import Path

import yaml

from batchgen.errors import ManifestError, Problem, TemplateError
from batchgen.manifest.checks import Checker, in_file_order, undefined
from batchgen.manifest.csvrows import read_rows
from batchgen.manifest.dates import run_date
from batchgen.manifest.entry import read_entry
from batchgen.manifest.job import DEFAULT_MODEL
from batchgen.manifest.jsonl import MAX_JSONL_BYTES, read_jsonl
from batchgen.manifest.model import Axis, JobSpec, Manifest, Sample, Source, Value
from batchgen.manifest.params import PARAMETER_NAMES
from batchgen.manifest.prompts import Prompts
from batchgen.manifest.reads import MAX_CSV_BYTES, MAX_YAML_BYTES, Unreadable, read_bounded, read_stdin
from batchgen.manifest.runname import run_name_problem
from batchgen.manifest.template import parse_template
from batchgen.manifest.values import param_value, sample_setting, seed_count
from batchgen.manifest.wildcards import Wildcards
from batchgen.manifest.yamlnodes import MAX_DEPTH, Nodes, TooDeep, bad_tags, compose, describe_node

__all__ = [
    "DEFAULT_FILENAME",
    "DEFAULT_WILDCARDS",
    "FILENAME_BUILTINS",
    "OUTPUT_KEYS",
    "REPORT_KEYS",
    "STDIN",
    "TOP_KEYS",
    "load_manifest",
    "sources_sha256",
]

TOP_KEYS = ("name", "model", "defaults", "jobs", "output", "report", "wildcards")
STDIN = "-"  # the manifest path that reads standard input
DEFAULT_WILDCARDS = "wildcards"  # the folder beside a manifest its __name__ wildcards come from
OUTPUT_KEYS = ("filename",)
REPORT_KEYS = ("rows", "columns")
FILENAME_BUILTINS = ("date", "index", "key", "name")
DEFAULT_FILENAME = "{index:05d}-{key}.png"

_MODEL = re.compile(r"[a-z0-9][a-z0-9._-]*")


def load_manifest(path: str | os.PathLike[str], *, date: str | None = None) -> Manifest:
    """Load a YAML (.yaml/.yml), CSV (.csv) or JSON Lines (.jsonl) manifest, or ``-`` (standard
    input); raise ManifestError with every problem.

    ``date`` (``YYYY-MM-DD``, default today in UTC) fills ``{date}`` in the run name and
    the output filenames (never in prompts: a job's key must not change with the day).
    """
    date = run_date(date)
    stdin = str(path) == STDIN
    p = Path(path)
    display = "<stdin>" if stdin else str(path)
    suffix = p.suffix.lower()
    if stdin:
        try:
            data = read_stdin(MAX_JSONL_BYTES)
        except Unreadable as exc:
            raise ManifestError([Problem(display, None, "", str(exc))]) from None
        kind = "jsonl" if _first_line_is_json(data) else "yaml"
        if kind == "yaml" and len(data) > MAX_YAML_BYTES:
            raise ManifestError(
                [Problem(display, None, "", "is larger than 1 MiB, the limit for a YAML manifest")]
            )
    elif suffix not in (".csv", ".yaml", ".yml", ".jsonl"):
        raise ManifestError(
            [
                Problem(
                    display,
                    None,
                    "",
                    "a manifest is a .yaml, .yml, .csv or .jsonl file (or - for standard input)",
                )
            ]
        )
    else:
        kind = {".csv": "csv", ".jsonl": "jsonl"}.get(suffix, "yaml")
        cap = {"csv": MAX_CSV_BYTES, "jsonl": MAX_JSONL_BYTES}.get(kind, MAX_YAML_BYTES)
        what = {"csv": "a CSV manifest", "jsonl": "a JSON Lines manifest"}.get(kind, "a YAML manifest")
        hint = " (put long lists of values in a rows: CSV file)" if kind == "yaml" else ""
        try:
            data = read_bounded(p, cap, what, hint)
        except Unreadable as exc:
            what = "no such file" if exc.missing else str(exc)
            raise ManifestError([Problem(display, None, "", what)]) from None
    walk = _Walk(p, display, date, stdin=stdin)
    sha = hashlib.sha256(data).hexdigest()
    if kind == "jsonl":
        manifest = walk.jsonl_manifest(data, sha)
    else:
        manifest = walk.csv_manifest(data, sha) if kind == "csv" else walk.yaml_manifest(data, sha)
    check = walk.check
    if check.problems or manifest is None:
        fallback = [Problem(display, None, "", "invalid manifest")]
        raise ManifestError(in_file_order(check.problems) or fallback)
    sources = walk.sources(Source(display, sha, None if stdin else p))
    return replace(
        manifest,
        warnings=in_file_order(check.warnings),
        date=date,
        sources=sources,
        sha256=sources_sha256(sources),
        stdin=stdin,
    )


def sources_sha256(sources: tuple[Source, ...]) -> str:
    """THE sha256 of a manifest, which a run records and ``status``, the report and the
    owner check compare: the file's own when the jobs come from it alone, else that of a
    ``sha256sum``-style listing of every file (the manifest first).

    The listing names each file by its path relative to the manifest's folder (the
    manifest by its file name; ``-`` for standard input), as ``sha256sum`` run in that
    folder would: the same sha256 whether the manifest was given as ``m.yaml``, ``./m.yaml``
    or an absolute path, and from whichever folder.
    """
    if len(sources) == 1:
        return sources[0].sha256
    manifest = sources[0].path
    folder = os.path.abspath(manifest.parent if manifest is not None else ".")
    listing = "".join(f"{s.sha256}  {_listed_name(s.path, folder)}\n" for s in sources)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def _listed_name(path: Path | None, folder: str) -> str:
    """How the sha256 listing names a file: relative to the manifest's ``folder``, with ``/``."""
    if path is None:
        return STDIN
    full = os.path.abspath(path)
    try:
        relative = os.path.relpath(full, folder)
    except ValueError:  # another drive (Windows): no relative path
        relative = full
    return Path(relative).as_posix()


def _yaml_error(text: str, exc: yaml.MarkedYAMLError) -> tuple[int | None, str, int | None]:
    """Where a YAML syntax error is, and what: an unclosed quote is named at its opening line.

    PyYAML notices an unclosed quote only where the quoted text ends: at the end of the
    file, or at the next quote, lines later. Neither is where the mistake is.
    """
    what = " ".join(str(part) for part in (exc.context, exc.problem) if part)
    if exc.context == "while scanning a quoted scalar" and exc.context_mark is not None:
        opened = int(exc.context_mark.line) + 1
        if "end of stream" in str(exc.problem):
            what = "YAML syntax error: the quote that opens here is never closed"
            return opened, what, int(exc.context_mark.column) + 1
    mark = exc.problem_mark or exc.context_mark
    line = int(mark.line) + 1 if mark is not None else None
    hint = ""
    if line is not None:
        # A double quote left open takes the lines after it as its text, up to the next
        # quote: the error shows there. Name the last line before it with an odd count.
        before = text.split("\n")[: line - 1]
        for number in range(len(before), 0, -1):
            one = before[number - 1].replace('\\"', "")
            if one.count('"') % 2:
                hint = f" (is the quote on line {number} closed?)"
                break
    return line, f"YAML syntax error: {what}{hint}", None


def _first_line_is_json(data: bytes) -> bool:
    """Whether standard input is JSON Lines: its first non-blank line is a JSON object."""
    for raw in data.splitlines():
        if raw.strip():
            try:
                return isinstance(json.loads(raw.decode("utf-8-sig", errors="replace")), dict)
            except ValueError:
                return False
    return False


class _Walk:
    """One load of one manifest file: walks it, noting every problem in ``check``."""

    def __init__(self, path: Path, display: str, date: str, *, stdin: bool = False) -> None:
        self.path = path
        self.display = display
        self.date = date
        self.stdin = stdin
        self.check = Checker(display)
        self.nodes = Nodes(self.check)
        self.csv_sources: list[Source] = []

    @property
    def folder(self) -> tuple[Path, str]:
        """The folder the manifest's relative paths start from, and its name in messages."""
        if self.stdin:
            return Path("."), ""
        return self.path.parent, os.path.dirname(self.display)

    def sources(self, manifest: Source) -> tuple[Source, ...]:
        """Every file the jobs come from: the manifest, its CSV files, the wildcard files used."""
        found = {manifest.display: manifest}
        for source in self.csv_sources:
            found.setdefault(source.display, source)
        wildcards = self.check.prompts.wildcards
        if wildcards is not None:
            for display, source in sorted(wildcards.used.items()):
                found.setdefault(display, source)
        return tuple(found.values())

    def use_wildcards(self, written: list[str] | None, line: int | None) -> None:
        """Give the checker the wildcard folders: those the manifest names, else ``wildcards/``
        beside it if there is one; a folder looked for and not there is said where a wildcard
        is not found (and, when the manifest names it, is an error at ``line``)."""
        base, shown = self.folder
        if written is None:
            default = os.path.join(shown, DEFAULT_WILDCARDS)
            if not (base / DEFAULT_WILDCARDS).is_dir():
                absent = f"there is no {default}/ folder, and the manifest names none (wildcards: PATH)"
                self.check.prompts = Prompts(Wildcards([], absent=[absent]))
                return
            written = [DEFAULT_WILDCARDS]
        folders = []
        missing = []
        for rel in written:
            path = base / Path(rel).expanduser()
            display = os.path.join(shown, rel) if not Path(rel).expanduser().is_absolute() else rel
            if not path.is_dir():
                what = "does not exist" if not path.exists() else "is not a folder"
                self.check.error(line, "wildcards", f"{display} {what}")
                missing.append(f"the wildcards folder {display} {what} ({self.display}:{line})")
                continue
            folders.append((path, display))
        self.check.prompts = Prompts(Wildcards(folders, absent=missing))

    def name_from_file(self) -> str:
        """The run name a manifest without ``name:`` gets: its file name without the extension.

        The name becomes the folder ``output/<name>/``: a stem of ``..`` (``...yaml``) or
        ``.`` would put the images and the ledger in ``.`` or above it, and a leading dot
        hides the folder. Leading dots are dropped, and a name left empty becomes
        ``manifest``, with a warning.
        """
        if self.stdin:
            return "stdin"
        stem = self.path.stem
        name = stem.lstrip(".")
        if name == stem and name:
            return name
        name = name or "manifest"
        self.check.warn(
            None, "", f"the file name gives the run name {stem!r}, which is not a folder name; using {name!r}"
        )
        return name

    def csv_manifest(self, data: bytes, sha: str) -> Manifest | None:
        """A CSV manifest: one job entry whose rows are the file's."""
        self.use_wildcards(None, None)
        source = read_rows(self.check, self.path, self.display, None, "", data=data)
        if source is None:
            return None
        spec = JobSpec("", None, {}, {}, (), (), source, None)
        self.check.axis_labels(spec, self.check.check_prompts(spec, ""))
        self.check.unused_axes(parse_template(DEFAULT_FILENAME).names)
        return Manifest(
            path=self.path,
            name=self.name_from_file(),
            model=DEFAULT_MODEL,
            sha256=sha,
            jobs=(spec,),
            filename=parse_template(DEFAULT_FILENAME),
            filename_line=None,
            warnings=self.check.warnings,
            prompts=self.check.prompts,
        )

    def jsonl_manifest(self, data: bytes, sha: str) -> Manifest | None:
        """A JSON Lines manifest: one resolved job a line."""
        name = self.name_from_file()
        lines = read_jsonl(self.check, data, parse_template(DEFAULT_FILENAME), name=name)
        if lines is None:
            return None
        jobs, model = lines
        return Manifest(
            path=self.path,
            name=name,
            model=model,
            sha256=sha,
            jobs=(),
            filename=parse_template(DEFAULT_FILENAME),
            filename_line=None,
            warnings=self.check.warnings,
            lines=jobs,
        )

    def _root(self, data: bytes) -> yaml.Node | None:
        """The composed YAML tree of the file, or None with the reason noted."""
        check = self.check
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            check.error(None, "", f"is not UTF-8 text ({exc.reason} at byte {exc.start})")
            return None
        try:
            root, explicit = compose(text)
        except TooDeep as exc:
            check.error(exc.line, "", f"nested more than {MAX_DEPTH} levels deep; a manifest needs 5")
            return None
        except RecursionError:  # a backstop: the depth bound should always come first
            check.error(None, "", "nested too deeply to read")
            return None
        except yaml.MarkedYAMLError as exc:
            line, what, column = _yaml_error(text, exc)
            check.error(line, "", what, column=column)
            return None
        except yaml.reader.ReaderError as exc:
            # Raised by the reader for characters YAML forbids (NUL, other controls); it
            # carries a character offset, not a line.
            line = text.count("\n", 0, exc.position) + 1
            char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
            name = "a NUL character" if char == 0 else f"the control character U+{char:04X}"
            check.error(line, "", f"{name} is not allowed in YAML (a binary file, or a bad paste?)")
            return None
        except yaml.YAMLError as exc:
            check.error(None, "", f"YAML error: {exc}")
            return None
        if root is not None:
            for line, where, what in bad_tags(root, explicit):
                check.error(line, where, what)
            if check.problems:
                return None
        if root is None or (isinstance(root, yaml.ScalarNode) and root.value == ""):
            check.error(None, "", "the manifest is empty; it needs at least a jobs list")
            return None
        return root

    def yaml_manifest(self, data: bytes, sha: str) -> Manifest | None:
        """A YAML manifest: its top-level keys, each job entry, the output and report keys."""
        check, nodes = self.check, self.nodes
        root = self._root(data)
        if root is None:
            return None
        top = nodes.mapping(root, "", TOP_KEYS)
        if not isinstance(root, yaml.MappingNode):
            return None

        name = self.name_from_file() if "name" not in top else self.path.stem
        if "name" in top:
            node = top["name"]
            value = nodes.scalar(node) if isinstance(node, yaml.ScalarNode) else None
            run_name = str(value).replace("{date}", self.date) if isinstance(value, (str, int)) else None
            # NFC, as filenames are: one name typed two ways (é, e + U+0301) is one folder.
            run_name = unicodedata.normalize("NFC", run_name) if run_name is not None else None
            problem = run_name_problem(run_name) if run_name is not None else "is not text"
            if problem is None and run_name is not None:
                name = run_name
            else:
                check.error(nodes.at(node), "name", f"{problem} (the run name is the output folder's name)")
        model = DEFAULT_MODEL
        if "model" in top:
            node = top["model"]
            value = nodes.scalar(node) if isinstance(node, yaml.ScalarNode) else None
            if isinstance(value, str) and _MODEL.fullmatch(value):
                model = value
            else:
                check.error(nodes.at(node), "model", "must be a Segmind model slug like bria-text-to-image")

        written: list[str] | None = None
        if "wildcards" in top:
            node = top["wildcards"]
            items_ = node.value if isinstance(node, yaml.SequenceNode) else [node]
            paths = [nodes.scalar(n) if isinstance(n, yaml.ScalarNode) else None for n in items_]
            if paths and all(isinstance(one, str) and one.strip() for one in paths):
                written = [str(one) for one in paths]
            else:
                check.error(nodes.at(node), "wildcards", "must be a folder's path, or a list of them")
        self.use_wildcards(written, nodes.at(top["wildcards"]) if "wildcards" in top else None)

        defaults: dict[str, Value | Axis] = {}
        default_seeds: int | None = None
        default_sample: Sample | None = None
        if "defaults" in top:
            items = nodes.mapping(top["defaults"], "defaults", (*PARAMETER_NAMES, "seeds", "sample"))
            for key, node in items.items():
                if key == "seeds":
                    default_seeds = seed_count(nodes, node, "defaults.seeds")
                    continue
                if key == "sample":
                    default_sample = sample_setting(nodes, node, "defaults.sample")
                    continue
                setting = param_value(nodes, key, node, f"defaults.{key}")
                if setting is not None:
                    defaults[key] = setting
            if default_seeds is not None and "seed" in defaults:
                check.error(nodes.at(top["defaults"]), "defaults", "set seed or seeds, not both")

        jobs: list[JobSpec] = []
        known = set(FILENAME_BUILTINS) | set(PARAMETER_NAMES)
        jobs_ok = True  # a job too broken to define its names: name checks below would only echo it
        if "jobs" not in top:
            check.error(nodes.at(root), "", "missing key 'jobs': the list of jobs to run")
        else:
            node = top["jobs"]
            if not isinstance(node, yaml.SequenceNode):
                check.error(nodes.at(node), "jobs", f"must be a list of jobs, not {describe_node(node)}")
            elif not node.value:
                check.error(nodes.at(node), "jobs", "is empty; a manifest needs at least one job")
            else:
                for i, job_node in enumerate(node.value):
                    spec, names = read_entry(
                        nodes,
                        job_node,
                        f"jobs[{i}]",
                        defaults,
                        default_seeds,
                        default_sample,
                        path=self.folder[0],
                        display=self.folder[1],
                        sources=self.csv_sources,
                    )
                    if spec is not None:
                        jobs.append(spec)
                    if names is None:
                        jobs_ok = False
                    else:
                        known.update(names)

        filename = parse_template(DEFAULT_FILENAME)
        filename_line: int | None = None
        if "output" in top:
            items = nodes.mapping(top["output"], "output", OUTPUT_KEYS)
            if "filename" in items:
                node = items["filename"]
                filename_line = nodes.at(node)
                value = nodes.scalar(node) if isinstance(node, yaml.ScalarNode) else None
                if not isinstance(value, str) or not value.strip():
                    check.error(filename_line, "output.filename", "must be a non-empty template string")
                else:
                    try:
                        filename = parse_template(value)
                    except TemplateError as exc:
                        check.error(filename_line, "output.filename", str(exc))
        for missing in [n for n in filename.names if n not in known and jobs_ok]:
            check.error(filename_line, "output.filename", undefined(missing, known))

        report: dict[str, tuple[str, ...]] = {}
        if "report" in top:
            items = nodes.mapping(top["report"], "report", REPORT_KEYS)
            for key, node in items.items():
                # One name, or a list of names (the levels of that axis, outermost first).
                listed = node.value if isinstance(node, yaml.SequenceNode) and node.value else [node]
                values = [nodes.scalar(n) if isinstance(n, yaml.ScalarNode) else None for n in listed]
                axis = tuple(v for v in values if isinstance(v, str))
                wrong = [
                    v
                    for v in values
                    if not isinstance(v, str) or (jobs_ok and v not in known - {"index", "key"})
                ]
                if wrong or len(set(axis)) != len(axis):
                    shown = ", ".join(repr(v) for v in wrong) or "a name listed twice"
                    check.error(
                        nodes.at(node),
                        f"report.{key}",
                        f"must name a parameter or a label of the jobs, or a list of them ({shown})",
                    )
                else:
                    report[key] = axis
        check.unused_axes({*filename.names, *(n for axis in report.values() for n in axis)})

        return Manifest(
            path=self.path,
            name=name,
            model=model,
            sha256=sha,
            jobs=tuple(jobs),
            filename=filename,
            filename_line=filename_line,
            warnings=check.warnings,
            report=report,
            prompts=check.prompts,
        )
