"""What a manifest's values must be: parameters, labels, prompts, and axes a template uses.

A :class:`Checker` collects every problem (an error: the manifest is refused) and every
warning (it runs, but likely not as meant) of one load, each located as
``FILE:LINE: where: what``, so that all of them are reported at once. Prompts the API may
reject (non-English, special characters) are warnings; prompts batchgen will not send
(over :data:`~batchgen.manifest.params.MAX_PROMPT_CHARS`, control characters) are errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from batchgen.errors import ParamsInvalid, Problem
from batchgen.manifest.model import JobSpec, Origin, RowSource, Scalar
from batchgen.manifest.params import (
    PARAMETER_NAMES,
    TEXT_PARAMS,
    control_characters,
    prompt_problems,
    prompt_warnings,
    suggest_name,
    validate_params,
)
from batchgen.manifest.prompts import Analysis, Prompts

__all__ = ["Checker", "in_file_order", "undefined"]

_RESERVED_LABELS = ("index", "key")
# Parameters an unused label may be a typo of; a misspelt prompt column is caught anyway
# (no prompt at all), while columns like prompt_id are common and deliberate.
_SUGGESTED = tuple(name for name in PARAMETER_NAMES if name != "prompt")


def undefined(name: str, known: Iterable[str], rows: RowSource | None = None) -> str:
    """The problem of a template naming ``{name}``, which nothing defines (with a "did you mean");
    for a job reading a CSV, that the CSV has no such column, and the columns it has.

    ``{prompt}`` is the one parameter a template cannot use: a prompt cannot hold itself.
    A CSV's ``prompt`` column is no exception (it sets each row's whole prompt, in place of
    the job's), so the message says that rather than that the column is missing.
    """
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    hint = f" (did you mean {{{close[0]}}}?)" if close else ""
    if name == "prompt":
        what = f"{{prompt}} is not defined: a prompt cannot use itself{hint}"
        if rows is not None and name in rows.columns:
            what += (
                f"; {rows.display}'s prompt column sets each row's whole prompt:"
                " to build prompts from a column, give it another name (e.g. subject) and use {subject}"
            )
        return what
    if rows is not None:
        columns = ", ".join(rows.columns)
        return (
            f"{{{name}}} is not defined: {rows.display} has no column {name!r} (its columns: {columns}){hint}"
        )
    return f"{{{name}}} is not defined{hint}"


def in_file_order(problems: list[Problem]) -> list[Problem]:
    """Problems sorted by file (in order of first mention) then line; stable for one line."""
    files: dict[str, int] = {}
    for problem in problems:
        files.setdefault(problem.file, len(files))
    return sorted(problems, key=lambda p: (files[p.file], p.line or 0))


class Checker:
    """Collects the problems and warnings of one manifest; ``display`` is the file they name
    unless a check says otherwise (a ``rows:`` CSV file)."""

    def __init__(self, display: str) -> None:
        self.display = display
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.prompts = Prompts(None)  # the loader gives it the manifest's wildcards
        self._axis_labels: list[tuple[JobSpec, set[str]]] = []  # for unused_axes
        self._noted: set[Problem] = set()  # problems and warnings found in wildcard files, once each
        # Parameter values found valid: a CSV column repeats a few values over many rows.
        self._valid: set[tuple[str, type, Scalar]] = set()

    # --- reporting ---------------------------------------------------------------

    def error(
        self, line: int | None, where: str, what: str, *, file: str | None = None, column: int | None = None
    ) -> None:
        """Note a problem: the manifest is refused."""
        self.problems.append(Problem(file or self.display, line, where, what, column))

    def warn(
        self, line: int | None, where: str, what: str, *, file: str | None = None, column: int | None = None
    ) -> None:
        """Note a warning: the manifest runs, but likely not as meant."""
        self.warnings.append(Problem(file or self.display, line, where, what, column))

    def note(self, problem: Problem, *, warning: bool = False) -> None:
        """Note a problem (or warning) found in another file, once however many prompts meet it."""
        if problem not in self._noted:
            self._noted.add(problem)
            (self.warnings if warning else self.problems).append(problem)

    def unknown_key(self, line: int, where: str, key: str, allowed: Sequence[str]) -> None:
        """Note a key the format does not have, with the closest allowed one."""
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        self.error(line, where, f"unknown key {key!r}{hint}; allowed: {', '.join(allowed)}")

    # --- values ------------------------------------------------------------------

    def check_param(
        self, name: str, value: Scalar, line: int | None, where: str, *, file: str | None = None
    ) -> bool:
        """Validate one parameter value on its own; report with this location."""
        known = (name, type(value), value)  # the type too: 1, 1.0 and True are equal
        if known in self._valid:
            return True
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
            if problems:
                return False
        if len(self._valid) >= 10_000:  # a column of one value per row must not grow it without end
            self._valid.clear()
        self._valid.add(known)
        return True

    def check_label(self, value: Scalar, line: int | None, where: str, *, file: str | None = None) -> bool:
        """A label value fills prompts and filenames: no control characters."""
        problem = control_characters(value) if isinstance(value, str) else None
        if problem is not None:
            self.error(line, where, problem, file=file)
        return problem is None

    def label_name(self, name: str, line: int, where: str, *, file: str | None = None) -> bool:
        """Whether ``name`` may be a label (``index`` and ``key`` are the filename's).

        A name close to a parameter's gets its "did you mean" from :meth:`unused_axes` when
        it is a grid/zip axis or a CSV column; one written under ``labels:`` is a label on
        purpose (``code`` is not a misspelt ``mode``).
        """
        if name in _RESERVED_LABELS:
            self.error(
                line, where, f"{name!r} is reserved for the filename template; choose another name", file=file
            )
            return False
        return True

    # --- prompts -----------------------------------------------------------------

    def prompt(self, text: str, origin: Origin, where: str) -> Analysis | None:
        """Check one prompt template (dynamic parts, wildcards); its analysis, or None if invalid.

        A problem inside the prompt is located to its column when the text reads as written
        in the file, else to its line and character; one inside a wildcard file, there.
        """
        analysis = self.prompts.analyse(text)
        file = origin.file
        for issue in analysis.issues:
            if issue.problem is not None:
                self.note(issue.problem)
                continue
            line, column = origin.locate(text, issue.offset or 0)
            what = issue.message
            if column is None and issue.offset is not None and "character" not in what:
                what += f" (character {issue.offset + 1})"
            self.error(line, where, what, file=file, column=column)
        for warning in analysis.warnings:
            self.note(warning, warning=True)
        if analysis.count is None:
            return None
        for message in prompt_warnings(analysis.literal):
            self.warn(origin.line, where, message, file=file)
        return analysis

    def check_prompts(self, spec: JobSpec, where: str, *, declared: Iterable[str] = ()) -> set[str]:
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
        sources: list[tuple[str, Origin, str]] = []
        for axis in prompt_axes:
            for i, v in enumerate(axis.values):
                origin = axis.origins[i] if i < len(axis.origins) else None
                sources.append((str(v), origin or Origin(None, axis.line), f"{axis.where}[{i}]"))
        if not prompt_axes and fallback is not None:
            sources.append(
                (str(fallback.value), fallback.origin or Origin(None, fallback.line), fallback.where)
            )
        names: list[list[str]] = []
        used_anywhere: set[str] = set()
        for text, origin, src_where in sources:
            analysis = self.prompt(text, origin, src_where)
            if analysis is None:
                continue
            used_anywhere.update(analysis.names)
            missing = [n for n in analysis.names if n not in known]
            for name in missing:
                self.error(origin.line, src_where, undefined(name, known, rows))
            if not missing:
                names.append(analysis.names)
            if spec.sample is not None and analysis.count is not None and analysis.count <= spec.sample.count:
                self.warn(
                    origin.line,
                    src_where,
                    f"sample: {spec.sample.count:,} but the prompt has {analysis.count:,} combinations:"
                    " every one is used (drop sample: to say so)",
                )
        cell_prompts = rows is not None and "prompt" in rows.columns and not prompt_axes
        if not sources and not cell_prompts:
            if rows is not None and not where:
                self.error(1, "", "there is no prompt column; it is required", file=rows.display)
            else:
                self.error(
                    spec.line, where, "has no prompt: set prompt on the job, in defaults, or in a grid/zip"
                )
            return used_anywhere
        if rows is None:
            return used_anywhere
        # Rows: an empty cell is "not set", so each row is checked against its own cells.
        warnings: dict[str, list[str]] = {}  # a column repeats a few values over many rows
        for row in rows.rows:
            row_names = names
            if cell_prompts and "prompt" in row.cells:
                origin = Origin(rows.display, row.line)
                analysis = self.prompt(row.cells["prompt"], origin, "column prompt")
                if analysis is None:
                    continue
                used_anywhere.update(analysis.names)
                missing = [n for n in analysis.names if n not in known]
                for name in missing:
                    self.error(row.line, "column prompt", undefined(name, known, rows), file=rows.display)
                row_names = [] if missing else [analysis.names]
            elif not sources:
                self.error(row.line, "column prompt", "is empty and the job has no prompt", file=rows.display)
                continue
            used = {n for one in row_names for n in one}
            for name in sorted(used & columns):
                if name not in row.cells:
                    self.error(
                        row.line,
                        f"column {name}",
                        f"is empty but the prompt uses {{{name}}}",
                        file=rows.display,
                    )
                else:
                    cell = row.cells[name]
                    found = warnings.get(cell)
                    if found is None:
                        found = prompt_warnings(cell)
                        if len(warnings) < 10_000:
                            warnings[cell] = found
                    for message in found:
                        self.warn(row.line, f"column {name}", message, file=rows.display)
        return used_anywhere

    # --- unused axes -------------------------------------------------------------

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
