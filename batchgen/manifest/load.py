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
:mod:`~batchgen.manifest.checks` (parameters, labels, prompts, unused axes) and
:mod:`~batchgen.manifest.dates` (``{date}``).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import replace
from pathlib import Path

import yaml

from batchgen.errors import ManifestError, Problem, TemplateError
from batchgen.manifest.checks import Checker, in_file_order, undefined
from batchgen.manifest.csvrows import read_rows
from batchgen.manifest.dates import run_date
from batchgen.manifest.entry import read_entry
from batchgen.manifest.job import DEFAULT_MODEL
from batchgen.manifest.model import Axis, JobSpec, Manifest, Value
from batchgen.manifest.params import PARAMETER_NAMES
from batchgen.manifest.reads import MAX_CSV_BYTES, MAX_YAML_BYTES, Unreadable, read_bounded
from batchgen.manifest.template import parse_template
from batchgen.manifest.values import param_value, seed_count
from batchgen.manifest.yamlnodes import MAX_DEPTH, Nodes, TooDeep, bad_tags, compose, describe_node

__all__ = [
    "DEFAULT_FILENAME",
    "FILENAME_BUILTINS",
    "OUTPUT_KEYS",
    "REPORT_KEYS",
    "TOP_KEYS",
    "load_manifest",
]

TOP_KEYS = ("name", "model", "defaults", "jobs", "output", "report")
OUTPUT_KEYS = ("filename",)
REPORT_KEYS = ("rows", "columns")
FILENAME_BUILTINS = ("date", "index", "key", "name")
DEFAULT_FILENAME = "{index:05d}-{key}.png"

_RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_MODEL = re.compile(r"[a-z0-9][a-z0-9._-]*")


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
        data = read_bounded(p, cap, what, hint)
    except Unreadable as exc:
        what = "no such file" if exc.missing else str(exc)
        raise ManifestError([Problem(display, None, "", what)]) from None
    walk = _Walk(p, display, date)
    sha = hashlib.sha256(data).hexdigest()
    manifest = walk.csv_manifest(data, sha) if is_csv else walk.yaml_manifest(data, sha)
    check = walk.check
    if check.problems or manifest is None:
        fallback = [Problem(display, None, "", "invalid manifest")]
        raise ManifestError(in_file_order(check.problems) or fallback)
    return replace(manifest, warnings=in_file_order(check.warnings), date=date)


class _Walk:
    """One load of one manifest file: walks it, noting every problem in ``check``."""

    def __init__(self, path: Path, display: str, date: str) -> None:
        self.path = path
        self.display = display
        self.date = date
        self.check = Checker(display)
        self.nodes = Nodes(self.check)

    def name_from_file(self) -> str:
        """The run name a manifest without ``name:`` gets: its file name without the extension.

        The name becomes the folder ``output/<name>/``: a stem of ``..`` (``...yaml``) or
        ``.`` would put the images and the ledger in ``.`` or above it, and a leading dot
        hides the folder. Leading dots are dropped, and a name left empty becomes
        ``manifest``, with a warning.
        """
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
            mark = exc.problem_mark or exc.context_mark
            line = int(mark.line) + 1 if mark is not None else None
            what = " ".join(str(part) for part in (exc.context, exc.problem) if part)
            check.error(line, "", f"YAML syntax error: {what}")
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
            if run_name is not None and _RUN_NAME.fullmatch(run_name):
                name = run_name
            else:
                check.error(
                    nodes.at(node),
                    "name",
                    "must be a plain name (letters, digits, . _ -, and {date}), used as the output folder",
                )
        model = DEFAULT_MODEL
        if "model" in top:
            node = top["model"]
            value = nodes.scalar(node) if isinstance(node, yaml.ScalarNode) else None
            if isinstance(value, str) and _MODEL.fullmatch(value):
                model = value
            else:
                check.error(nodes.at(node), "model", "must be a Segmind model slug like bria-text-to-image")

        defaults: dict[str, Value | Axis] = {}
        default_seeds: int | None = None
        if "defaults" in top:
            items = nodes.mapping(top["defaults"], "defaults", (*PARAMETER_NAMES, "seeds"))
            for key, node in items.items():
                if key == "seeds":
                    default_seeds = seed_count(nodes, node, "defaults.seeds")
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
                        path=self.path,
                        display=self.display,
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
        )
