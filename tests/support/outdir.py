"""Reading a run's OUT folder in tests: ledger lines, events by kind, images that decode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from batchgen.manifest.job import Job

__all__ = [
    "assert_all_images_decode",
    "assert_images_valid",
    "assert_whole_lines",
    "events",
    "keys",
    "ledger",
]


def ledger(out: Path) -> list[dict[str, Any]]:
    """Every whole line of ``out/ledger.jsonl`` (none when it does not exist yet).

    A run may be appending while a test reads: only lines ended by a newline count.
    """
    path = out / "ledger.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line.strip()]


def events(out: Path, event: str) -> list[dict[str, Any]]:
    """The ledger lines of one kind, in order."""
    return [e for e in ledger(out) if e["event"] == event]


def keys(out: Path, event: str) -> set[str]:
    """The job keys that have a ledger line of this kind."""
    return {e["key"] for e in events(out, event)}


def assert_whole_lines(out: Path) -> None:
    """The ledger ends with a newline and every line is a JSON object."""
    text = (out / "ledger.jsonl").read_text()
    assert text.endswith("\n")
    for line in text.splitlines():
        assert isinstance(json.loads(line), dict)


def assert_all_images_decode(out: Path, count: int) -> None:
    """``out/images`` holds exactly ``count`` PNGs, each decodes, and no ``.part`` is left."""
    files = sorted((out / "images").glob("*.png"))
    assert len(files) == count
    for path in files:
        with Image.open(path) as im:
            im.load()
    assert not list((out / "images").glob("*.part"))


def assert_images_valid(out: Path, jobs: list[Job]) -> None:
    """Each job's image is in ``out/images`` and decodes, and no ``.part`` is left."""
    for job in jobs:
        with Image.open(out / "images" / job.filename) as im:
            im.load()
    assert not list((out / "images").glob("*.part"))
