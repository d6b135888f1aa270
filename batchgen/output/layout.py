"""Every name batchgen writes under OUT, in one place.

::

    OUT/
      images/...        the images (IMAGES_DIR), each written to ``<name>.part`` first
      ledger.jsonl      the run ledger (LEDGER_NAME)
      .lock             the output lock, holding the owner's pid (LOCK_NAME)
      summary.json      the last run's outcome (SUMMARY_JSON)
      report.html       the page about the run (REPORT_HTML)
      thumbs/           its thumbnails (THUMBS_DIR)
      grids/            its contact sheets as PNG (GRIDS_DIR)
      removed/          images of jobs no longer in the manifest, set aside by ``batchgen tidy`` (REMOVED_DIR)

summary.json, report.html, thumbnails and grids are written whole through
``.<name>.<pid>.tmp`` beside them (:mod:`batchgen.output.temporary`).
"""

from __future__ import annotations

__all__ = [
    "GRIDS_DIR",
    "IMAGES_DIR",
    "LEDGER_NAME",
    "LOCK_NAME",
    "PART_SUFFIX",
    "REMOVED_DIR",
    "REPORT_HTML",
    "SUMMARY_JSON",
    "THUMBS_DIR",
]

IMAGES_DIR = "images"
PART_SUFFIX = ".part"
LEDGER_NAME = "ledger.jsonl"
LOCK_NAME = ".lock"
SUMMARY_JSON = "summary.json"
REPORT_HTML = "report.html"
THUMBS_DIR = "thumbs"
GRIDS_DIR = "grids"
REMOVED_DIR = "removed"
