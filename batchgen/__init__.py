"""batchgen: batch image generation on Segmind's Bria text-to-image API."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("batchgen")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

# The embedding entry point (Airflow, notebooks): ``await batchgen.run("batch.yaml")``.
# Imported after __version__, which the runner records in the ledger.
from batchgen.engine.runner import run
from batchgen.engine.settings import RunSettings

__all__ = ["RunSettings", "__version__", "run"]
