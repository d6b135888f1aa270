"""Splitting a batch across processes or machines: ``--shard K/N`` (K from 1 to N, as
``split -n K/N``).

A job belongs to shard ``int(key[:16], 16) % N + 1``. Keys are content hashes (model,
parameters, labels), so a job stays in its shard whatever else the manifest gains or
loses, and the N shards of a manifest are disjoint and together hold every job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from batchgen.manifest.job import Job

__all__ = ["MAX_SHARDS", "Shard"]

MAX_SHARDS = 999_999  # the largest N: _SPEC reads six digits
_SPEC = re.compile(r"\s*(\d{1,6})\s*/\s*(\d{1,6})\s*")


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}/{self.count}: K must be from 1 to N")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"2/3"`` -> ``Shard(2, 3)``; :class:`ValueError` naming the text otherwise."""
        found = _SPEC.fullmatch(text)
        if found is None:
            raise ValueError(f"shard {text!r} is not K/N (e.g. 1/3)")
        return cls(int(found.group(1)), int(found.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def suffix(self) -> str:
        """What the default output folder gets: ``-shard-2-of-3``."""
        return f"-shard-{self.index}-of-{self.count}"

    def holds(self, key: str) -> bool:
        """Whether the job with this (hex sha256) key is in this shard."""
        return int(key[:16], 16) % self.count == self.index - 1

    def select(self, jobs: Iterable[Job]) -> Iterator[Job]:
        """The jobs of this shard, in their order."""
        return (job for job in jobs if self.holds(job.key))
