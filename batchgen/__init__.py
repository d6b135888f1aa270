"""batchgen: batch image generation on Segmind's Bria text-to-image API.

The embedding entry point (Airflow, notebooks) is ``await batchgen.run("batch.yaml")``
with ``batchgen.RunSettings``. Both are imported on first use (PEP 562), so that
``import batchgen`` and ``batchgen --version`` import neither the runner nor httpx.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchgen.engine.runner import run
    from batchgen.engine.settings import RunSettings

try:
    __version__ = version("batchgen")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["RunSettings", "__version__", "run"]


def __getattr__(name: str) -> object:
    """``run`` and ``RunSettings``, imported when first asked for."""
    if name == "run":
        from batchgen.engine.runner import run

        value: object = run
    elif name == "RunSettings":
        from batchgen.engine.settings import RunSettings

        value = RunSettings
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
