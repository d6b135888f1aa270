"""Manifest -> jobs, the one way every command takes them: load, job cap, expand, shard.

``batchgen validate``, ``plan``, ``run`` and ``status`` (and so ``report``) all call
:func:`manifest_jobs`, so they agree on which jobs a manifest holds: the cap is checked
arithmetically before a single job is built, duplicates are dropped and counted, and a
shard's jobs are picked from the whole expansion, whose filename clashes are checked
across every shard. Expansion stays lazy: ``plan --jsonl`` streams jobs as they come,
while ``run`` takes them all (every clash found) before it submits anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from batchgen.errors import Problem, UsageError
from batchgen.manifest.expand import count_jobs, expand
from batchgen.manifest.job import Job
from batchgen.manifest.load import load_manifest
from batchgen.manifest.model import Manifest
from batchgen.manifest.shard import Shard

__all__ = ["DEFAULT_MAX_JOBS", "ExpansionCounts", "ManifestJobs", "check_job_cap", "manifest_jobs"]

DEFAULT_MAX_JOBS = 100_000


def check_job_cap(manifest: Manifest, max_jobs: int = DEFAULT_MAX_JOBS) -> int:
    """The job count, or UsageError if it is above ``max_jobs`` (``--max-jobs`` raises the cap)."""
    count = count_jobs(manifest)
    if count > max_jobs:
        raise UsageError(
            f"{manifest.display} expands to {count:,} jobs, more than the limit of {max_jobs:,};"
            " pass --max-jobs to raise it"
        )
    return count


@dataclass(frozen=True, slots=True)
class ExpansionCounts:
    """What a full pass over a manifest's jobs counted: jobs kept (those of the shard, if
    one is given), duplicates dropped, warnings."""

    jobs: int
    duplicates: int
    warnings: int


class ManifestJobs:
    """The jobs of a loaded manifest within the cap, in index order, those of ``shard`` only.

    Iterate as often as needed; each iteration expands the manifest again, lazily, and
    raises :class:`~batchgen.errors.ManifestError` after the last job if any two jobs of
    the whole manifest would write one file. ``total`` (jobs of the whole manifest) and
    ``duplicates`` are final once an iteration has finished.
    """

    def __init__(self, manifest: Manifest, *, shard: Shard | None = None) -> None:
        self.manifest = manifest
        self.shard = shard
        self.total = 0
        self._expansion = expand(manifest)

    def __iter__(self) -> Iterator[Job]:
        self.total = 0
        for job in self._expansion:
            self.total += 1
            if self.shard is None or self.shard.holds(job.key):
                yield job

    @property
    def duplicates(self) -> int:
        """Jobs dropped because an earlier job had the same key (in the whole manifest)."""
        return self._expansion.duplicates

    @property
    def warnings(self) -> list[Problem]:
        """The manifest's warnings, in file order."""
        return self.manifest.warnings

    def count(self) -> ExpansionCounts:
        """Expand fully (finding every duplicate and clash) and count what ``validate`` reports."""
        jobs = sum(1 for _ in self)
        return ExpansionCounts(jobs=jobs, duplicates=self.duplicates, warnings=len(self.warnings))


def manifest_jobs(
    source: str | os.PathLike[str] | Manifest,
    *,
    max_jobs: int = DEFAULT_MAX_JOBS,
    shard: Shard | None = None,
    date: str | None = None,
) -> ManifestJobs:
    """The jobs of ``source`` (a manifest's path, loaded with ``date``, or a loaded manifest).

    Raises :class:`~batchgen.errors.ManifestError` for an invalid manifest and
    :class:`~batchgen.errors.UsageError` for one above ``max_jobs``, before any job is built.
    """
    manifest = source if isinstance(source, Manifest) else load_manifest(source, date=date)
    check_job_cap(manifest, max_jobs)
    return ManifestJobs(manifest, shard=shard)
