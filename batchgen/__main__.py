"""Allow ``python -m batchgen``."""

from __future__ import annotations

from batchgen.cli.main import console

console()
