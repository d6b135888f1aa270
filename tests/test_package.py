"""The public surface: ``import batchgen`` is cheap, and ``run`` / ``RunSettings`` come on first use."""

from __future__ import annotations

import json
import subprocess
import sys

import batchgen

# What `import batchgen` must not pull in: the HTTP stack, the event loop library (and so
# its runner), the emulator's web framework, and batchgen's own engine.
HEAVY = (
    "httpx",
    "httpcore",
    "anyio",
    "starlette",
    "uvicorn",
    "pydantic",
    "batchgen.engine",
    "batchgen.emulator",
)


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_import_batchgen_imports_no_runner_and_no_http_stack() -> None:
    """`import batchgen` leaves httpx, anyio, starlette and batchgen.engine unimported."""
    loaded = modules_after("import batchgen; assert batchgen.__version__")
    assert not [name for name in HEAVY if name in loaded]


def test_run_and_run_settings_are_imported_on_first_use() -> None:
    """`batchgen.run` and `batchgen.RunSettings` are the runner's, imported when first named."""
    loaded = modules_after("import batchgen; batchgen.RunSettings; batchgen.run")
    assert {"batchgen.engine.runner", "httpx"} <= loaded
    from batchgen.engine import runner  # which imports RunSettings from wherever it lives

    assert (batchgen.run, batchgen.RunSettings) == (runner.run, runner.RunSettings)
    assert batchgen.__all__ == sorted(batchgen.__all__) and set(batchgen.__all__) <= set(dir(batchgen))


def test_an_unknown_name_is_an_attribute_error() -> None:
    """A name the package does not have raises AttributeError naming it (so hasattr works)."""
    assert not hasattr(batchgen, "runn")
