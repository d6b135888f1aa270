"""The progress line: what a run is doing, jobs in doubt included."""

from __future__ import annotations

from pathlib import Path

from batchgen.engine.progress import Counts, Progress
from batchgen.outcome.summary import Summary


def test_the_progress_line_counts_the_submits_in_doubt_only_when_there_are_some() -> None:
    """Submits waiting for the request history show as `N in doubt`; none, no figure."""
    summary = Summary(total=10, out_dir=Path("out"), images_dir=Path("out/images"), ledger_path=Path("out/l"))
    counts = Counts(summary, in_flight=2)
    progress = Progress(counts, lambda: 0, tty=False, interval=10.0)
    progress.update()
    assert progress.line().startswith("progress: 0/10 done, 2 in flight, 0 failed, 0 429s")
    counts.doubts = {"a", "b", "c"}
    assert progress.line().startswith("progress: 0/10 done, 2 in flight, 3 in doubt, 0 failed, 0 429s")
    assert progress.fields()["in_doubt"] == 3
