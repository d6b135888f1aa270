"""``batchgen schema``: print the JSON Schema of the YAML manifest format, for editors."""

from __future__ import annotations

import argparse

from batchgen.outcome.exits import ExitCode

__all__ = ["configure", "handle"]


def configure(p: argparse.ArgumentParser) -> None:
    """The command's arguments: none."""
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print the schema, indented."""
    import json

    from batchgen.manifest.schema import manifest_schema

    print(json.dumps(manifest_schema(), indent=2))
    return ExitCode.OK
