"""Expand a validated :class:`~batchgen.manifest.model.Manifest` into jobs, lazily.

Order, for each entry of ``jobs`` in turn: CSV rows (outermost), then the zipped
tuples, then the grid axes in written order (the last one varies fastest) followed by
list-valued fields, then the prompts a dynamic prompt stands for (every combination,
or ``sample:`` random ones: :mod:`batchgen.manifest.prompts`), then seeds. Jobs with the
same key are one job: later copies are dropped and counted in
:attr:`Expansion.duplicates`. Indexes count the jobs kept, from 0. A JSON Lines
manifest's jobs are already resolved: they keep their own indexes.

Counting is arithmetic (:func:`count_jobs`), so a 10**12-job grid (or prompt) is refused
by :func:`~batchgen.manifest.pipeline.check_job_cap` without a single job being built.
Filenames follow the one output-path rule of :mod:`batchgen.manifest.paths`; two jobs
that would write one file (equal ignoring case and the image extension) make the
manifest invalid, every such pair reported with both jobs once the expansion is complete.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence

from batchgen.errors import ManifestError, ParamsInvalid, Problem
from batchgen.manifest.job import Job, LabelValue, canonical_json, job_key
from batchgen.manifest.model import Axis, JobSpec, Manifest, Row, Scalar
from batchgen.manifest.params import (
    PARAMETER_NAMES,
    SEED_MAX,
    SEED_MIN,
    ValuesCache,
    prompt_problems,
    trusted_params,
)
from batchgen.manifest.paths import PathTooDeep, clash_key, clean_value, image_extension, output_path
from batchgen.manifest.prompts import Prompts
from batchgen.manifest.template import Template, parse_template

__all__ = ["Expansion", "count_jobs", "derive_seeds", "expand"]


def derive_seeds(content: str, count: int) -> list[int]:
    """``count`` distinct seeds in SEED_MIN..SEED_MAX, a pure function of ``content``."""
    seeds: list[int] = []
    seen: set[int] = set()
    counter = 0
    span = SEED_MAX - SEED_MIN + 1
    while len(seeds) < count:
        digest = hashlib.sha256(f"{content}\x00{counter}".encode()).digest()
        counter += 1
        seed = int.from_bytes(digest[:8], "big") % span + SEED_MIN
        if seed not in seen:
            seen.add(seed)
            seeds.append(seed)
    return seeds


def _row_axes(spec: JobSpec, row: Row | None) -> list[Axis]:
    """The axes that apply to a row: a set cell overrides the axis of the same name."""
    if row is None:
        return list(spec.axes)
    return [a for a in spec.axes if a.name not in row.cells]


def _seeded(spec: JobSpec, row: Row | None, axes: Sequence[Axis]) -> bool:
    """Whether a seed is given for this row (so ``seeds: N`` does not apply)."""
    return (
        "seed" in spec.fields
        or (row is not None and "seed" in row.cells)
        or any(a.name == "seed" for a in (*axes, *spec.zip))
    )


def _prompts_of(manifest: Manifest) -> Prompts:
    return manifest.prompts if manifest.prompts is not None else Prompts(None)


def _spec_count(spec: JobSpec, prompts: Prompts) -> int:
    """The jobs of one entry: rows x zip x grid x prompts x seeds, a prompt counted for what
    it stands for (every combination, or the ``sample:`` drawn)."""
    sample = spec.sample.count if spec.sample is not None else None

    def prompt_count(text: Scalar) -> int:
        return prompts.sampled_count(str(text), sample)

    total = 0
    for row in spec.rows.rows if spec.rows is not None else (None,):
        axes = _row_axes(spec, row)
        if spec.zip:
            zipped = next((a for a in spec.zip if a.name == "prompt"), None)
            n = sum(prompt_count(v) for v in zipped.values) if zipped else len(spec.zip[0].values)
        else:
            zipped, n = None, 1
        prompt_axis = next((a for a in axes if a.name == "prompt"), None)
        n *= math.prod(len(a.values) for a in axes if a is not prompt_axis)
        if prompt_axis is not None:
            n *= sum(prompt_count(v) for v in prompt_axis.values)
        elif zipped is None:
            cell = row.cells.get("prompt") if row is not None else None
            field = spec.fields.get("prompt")
            text = cell if cell is not None else (field.value if field is not None else None)
            if text is not None:
                n *= prompt_count(text)
        if spec.seeds is not None and not _seeded(spec, row, axes):
            n *= spec.seeds
        total += n
    return total


def count_jobs(manifest: Manifest) -> int:
    """How many jobs the manifest expands to before duplicates are dropped; arithmetic only."""
    if manifest.lines is not None:
        return len(manifest.lines)
    prompts = _prompts_of(manifest)
    return sum(_spec_count(spec, prompts) for spec in manifest.jobs)


def _product(axes: Sequence[Axis]) -> Iterator[tuple[Scalar, ...]]:
    """Cartesian product by index (an odometer): ranges stay ranges, nothing is materialised."""
    if any(len(a.values) == 0 for a in axes):
        return
    index = [0] * len(axes)
    while True:
        yield tuple(a.values[i] for a, i in zip(axes, index, strict=True))
        pos = len(axes) - 1
        while pos >= 0:
            index[pos] += 1
            if index[pos] < len(axes[pos].values):
                break
            index[pos] = 0
            pos -= 1
        if pos < 0:
            return


class Expansion:
    """The jobs of a manifest, in index order, deduplicated; iterate as often as needed.

    ``duplicates`` is the number of jobs dropped because an earlier job had the same
    key; it is final once an iteration has finished.
    """

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.duplicates = 0
        self._templates: dict[str, tuple[Template, tuple[str, ...]]] = {}
        self._rendered: dict[tuple[object, ...], str] = {}  # see _job
        self._filename_names = manifest.filename.names
        self._prompts = _prompts_of(manifest)
        self._values = ValuesCache()

    def __iter__(self) -> Iterator[Job]:
        """Every job in index order; ManifestError after the last one if any two clash."""
        self.duplicates = 0
        # 128 bits of a clash key's hash tell names apart and keep memory small; the
        # names and origins of clashing jobs are found again, by a second pass, only
        # when there are clashes to report.
        files: dict[int, int] = {}
        clashes: list[tuple[int, int]] = []
        for job, _, _ in self._kept():
            digest = hashlib.blake2b(clash_key(job.filename).encode("utf-8"), digest_size=16).digest()
            first = files.setdefault(int.from_bytes(digest), job.index)
            if first != job.index:
                clashes.append((first, job.index))
            yield job
        if clashes:
            involved = {i for pair in clashes for i in pair}
            found = {
                job.index: (job.index, job.filename, position, line)
                for job, position, line in self._kept(count=False)
                if job.index in involved
            }
            raise ManifestError([self._clash(found[a], found[b]) for a, b in clashes])

    def _kept(self, *, count: bool = True) -> Iterator[tuple[Job, int, int | None]]:
        """Jobs without duplicates, each with its entry's position and its CSV line (if any);
        a JSON Lines manifest's jobs with position -1 and their line."""
        seen: set[int] = set()
        if self.manifest.lines is not None:
            for one in self.manifest.lines:
                short = int(one.job.key[:32], 16)
                if short in seen:
                    if count:
                        self.duplicates += 1
                    continue
                seen.add(short)
                yield one.job, -1, one.line
            return
        index = 0
        for position, spec in enumerate(self.manifest.jobs):
            for params, labels, row, written in self._resolved(spec):
                job = self._job(spec, row, index, params, labels, written)
                # 128 bits of the key are plenty to tell jobs apart and keep memory small.
                short = int(job.key[:32], 16)
                if short in seen:
                    if count:
                        self.duplicates += 1
                    continue
                seen.add(short)
                index += 1
                yield job, position, row.line if row is not None else None

    def _origin(self, position: int, line: int | None) -> str:
        """Where a job comes from, for a manifest with more than one source of jobs."""
        if position < 0:
            return f" (line {line})"
        spec = self.manifest.jobs[position]
        parts = []
        if len(self.manifest.jobs) > 1 and spec.where:
            parts.append(spec.where)
        if line is not None and spec.rows is not None:
            parts.append(f"{spec.rows.display}:{line}")
        return f" ({', '.join(parts)})" if parts else ""

    def _clash(
        self, first: tuple[int, str, int, int | None], second: tuple[int, str, int, int | None]
    ) -> Problem:
        """The problem of two jobs writing one file, naming both."""
        (i, a, pos_a, line_a), (j, b, pos_b, line_b) = first, second
        jobs = f"jobs {i}{self._origin(pos_a, line_a)} and {j}{self._origin(pos_b, line_b)}"
        if a == b:
            what = f"{jobs} would both write {a}"
        elif a.casefold() == b.casefold():
            what = f"{jobs} would write {a} and {b}: one file where names ignore case (macOS, Windows)"
        else:
            ext_a, ext_b = image_extension(a), image_extension(b)
            what = (
                f"{jobs} would write {a} and {b}: one file once the extension follows the image"
                f" format the server sends ({ext_a} or {ext_b})"
            )
        if pos_b < 0:
            return Problem(
                self.manifest.display, line_b, "filename", what + "; give each line its own filename"
            )
        return Problem(
            self.manifest.display,
            self.manifest.filename_line,
            "output.filename",
            what + "; add {key} or {index} to the template",
        )

    def _resolved(
        self, spec: JobSpec
    ) -> Iterator[tuple[dict[str, Scalar], dict[str, LabelValue], Row | None, str]]:
        """Parameters (validated, every one in table order; the prompt a field template, its
        dynamic parts chosen), labels, CSV row and the prompt as written, of every job of one entry."""
        model = self.manifest.model
        for row in spec.rows.rows if spec.rows is not None else (None,):
            params: dict[str, Scalar] = {k: v.value for k, v in spec.fields.items()}
            labels: dict[str, LabelValue] = {k: v.value for k, v in spec.labels.items()}
            if row is not None:
                for name, cell in row.cells.items():
                    if name in PARAMETER_NAMES:
                        params[name] = cell
                    else:
                        labels[name] = cell
            axes = _row_axes(spec, row)
            seeded = _seeded(spec, row, axes)
            zip_len = len(spec.zip[0].values) if spec.zip else 1
            for z in range(zip_len):
                for axis in spec.zip:
                    (params if axis.name in PARAMETER_NAMES else labels)[axis.name] = axis.values[z]
                for combo in _product(axes):
                    for axis, value in zip(axes, combo, strict=True):
                        (params if axis.name in PARAMETER_NAMES else labels)[axis.name] = value
                    base = self._validate(spec, row, params)
                    written = str(base["prompt"])
                    for text in self._prompt_texts(spec, written, labels):
                        one = base if text == written else {**base, "prompt": text}
                        if seeded or spec.seeds is None:
                            yield one, dict(labels), row, written
                            continue
                        # Derived from the prompt with its choices made, fields not yet
                        # filled: a plain prompt's seeds are what they always were.
                        content = dict(one)
                        del content["seed"]
                        for seed in derive_seeds(canonical_json(model, content, labels), spec.seeds):
                            yield {**one, "seed": seed}, dict(labels), row, written

    def _prompt_texts(self, spec: JobSpec, written: str, labels: dict[str, LabelValue]) -> Iterator[str]:
        """The prompts (field templates) a job's written prompt stands for: every combination,
        or the ``sample:`` drawn for this job's labels."""
        if spec.sample is None:
            yield from self._prompts.each(written)
            return
        salt = canonical_json("", {}, labels)
        yield from self._prompts.sample(written, spec.sample.count, seed=spec.sample.seed, salt=salt)

    def _validate(self, spec: JobSpec, row: Row | None, params: dict[str, Scalar]) -> dict[str, Scalar]:
        try:
            return self._values.api_values(params)
        except ParamsInvalid as exc:  # every value was checked at load; this is a safety net
            raise ManifestError(
                [self._problem(spec, row, spec.where or p.field, p.message) for p in exc.problems]
            ) from None

    def _problem(self, spec: JobSpec, row: Row | None, where: str, what: str) -> Problem:
        """A problem located at the CSV row a job comes from, else at its entry in the manifest."""
        if row is not None and spec.rows is not None:
            return Problem(spec.rows.display, row.line, where, what)
        return Problem(self.manifest.display, spec.line, where, what)

    def _template(self, text: str) -> tuple[Template, tuple[str, ...]]:
        """The parsed template of ``text`` and the names it uses."""
        found = self._templates.get(text)
        if found is None:
            template = parse_template(text)
            found = self._templates[text] = (template, template.names)
        return found

    def _job(
        self,
        spec: JobSpec,
        row: Row | None,
        index: int,
        params: dict[str, Scalar],
        labels: dict[str, LabelValue],
        written: str,
    ) -> Job:
        template, used = self._template(str(params["prompt"]))
        values = _fields(used, params, labels)
        # Jobs that differ only in their seed or a label the prompt does not use share
        # its text: each distinct prompt is rendered and checked once.
        known = (template.text, *((type(v), v) for v in values.values()), *values)
        prompt = self._rendered.get(known)
        if prompt is None:
            prompt = self._render_prompt(spec, row, template, values)
            if len(self._rendered) >= 10_000:
                self._rendered.clear()
            self._rendered[known] = prompt
        final = dict(params)
        final["prompt"] = prompt
        key = job_key(self.manifest.model, final, labels)
        # The filename's names: index and key, then a label, a parameter, and the prompt,
        # the run's name and date.
        names: dict[str, object] = {}
        for name in self._filename_names:
            if name == "index":
                names[name] = index
            elif name == "key":
                names[name] = key[:12]
            elif name in labels:
                names[name] = labels[name]
            elif name in params and name != "prompt":
                names[name] = params[name]
            elif name == "prompt":
                names[name] = prompt
            elif name == "name":
                names[name] = self.manifest.name
            elif name == "date":
                names[name] = self.manifest.date
        try:
            filename = output_path(self.manifest.filename.render(names, missing="", convert=clean_value))
        except PathTooDeep as exc:
            line = self.manifest.filename_line
            raise ManifestError([Problem(self.manifest.display, line, "output.filename", str(exc))]) from None
        return Job(
            index=index,
            key=key,
            model=self.manifest.model,
            params=trusted_params(final),
            labels=labels,
            filename=filename,
            template=written if written != prompt else None,
        )

    def _render_prompt(
        self, spec: JobSpec, row: Row | None, template: Template, values: dict[str, object]
    ) -> str:
        """A job's prompt, its fields filled in; ManifestError if it renders empty or too long."""
        prompt = template.render(values, missing="")
        if not prompt.strip():
            raise ManifestError([self._problem(spec, row, spec.where, "a prompt renders empty")])
        # Each piece was checked at load; filled in, the whole may still be too long.
        problems = prompt_problems(prompt)
        if problems:
            where = f"{spec.where}.prompt" if spec.where else "prompt"
            raise ManifestError(
                [self._problem(spec, row, where, f"filled in, it {what}") for what in problems]
            )
        return prompt


def _fields(
    names: Sequence[str], params: dict[str, Scalar], labels: dict[str, LabelValue]
) -> dict[str, object]:
    """The values a prompt's ``names`` take in one job: a label's, else a parameter's (not the
    prompt's own); a name the job lacks is left out."""
    values: dict[str, object] = {}
    for name in names:
        if name in labels:
            values[name] = labels[name]
        elif name in params and name != "prompt":
            values[name] = params[name]
    return values


def expand(manifest: Manifest) -> Expansion:
    """The jobs of ``manifest``, lazily; nothing is built until it is iterated."""
    return Expansion(manifest)
