"""The command line: argv -> settings -> one ``anyio.run`` -> exit code.

This is the only place that turns errors into exit codes and messages; nothing
below it prints tracebacks for expected failures.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from enum import IntEnum

from batchgen import __version__
from batchgen.errors import BatchgenError, LockedError, ManifestError, UsageError

__all__ = ["ExitCode", "main"]


class ExitCode(IntEnum):
    """Exit codes of every batchgen command (documented in the README)."""

    OK = 0
    JOBS_FAILED = 1
    USAGE = 2
    FATAL_API = 3
    INTERRUPTED = 130


# --- emulator --------------------------------------------------------------------


def _add_emulator(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("emulator", help="serve a local emulator of the Segmind API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="accept only this key (default: any non-empty key)")
    p.add_argument("--credits", type=int, help="credits, one per accepted submit (default: unlimited)")
    p.add_argument("--rpm", type=int, help="requests per minute per key (default: off)")
    p.add_argument("--rpm-counts-polls", action="store_true", help="status polls count against --rpm")
    p.add_argument("--workers", type=int, default=4, help="jobs processed at once (default 4)")
    p.add_argument("--time-scale", type=float, default=1.0, help="multiply inference times (e.g. 0.001)")
    p.add_argument("--blocked-terms", default="", help="comma-separated terms moderation blocks")
    p.add_argument("--ttl", type=float, default=3600.0, help="seconds results are kept (default 3600)")
    p.add_argument("--fault-rate", type=float, default=0.0, help="fraction answered 500/502/504")
    p.add_argument("--drop-rate", type=float, default=0.0, help="fraction closed without an answer")
    p.add_argument("--fault-seed", type=int, default=0, help="seed for faults (reproducible)")
    p.add_argument("--latency", type=float, default=0.0, metavar="MS", help="added delay per request")
    p.add_argument("--image-format", choices=["png", "jpeg"], default="png")
    p.add_argument("--image-size", type=int, default=512, help="long side in pixels (default 512)")
    p.add_argument("--seed", type=int, default=0, help="seed for inference-time draws")
    p.set_defaults(handler=_cmd_emulator)


def _cmd_emulator(args: argparse.Namespace) -> int:
    from batchgen.emulator import EmulatorConfig, serve

    config = EmulatorConfig(
        api_key=args.api_key,
        credits=args.credits,
        rpm=args.rpm,
        rpm_counts_polls=args.rpm_counts_polls,
        workers=args.workers,
        time_scale=args.time_scale,
        blocked_terms=tuple(t.strip() for t in args.blocked_terms.split(",") if t.strip()),
        ttl=args.ttl,
        fault_rate=args.fault_rate,
        drop_rate=args.drop_rate,
        fault_seed=args.fault_seed,
        latency_ms=args.latency,
        image_format=args.image_format,
        image_size=args.image_size,
        seed=args.seed,
    )
    serve(config, host=args.host, port=args.port)
    return ExitCode.OK


# --- manifests: validate, plan, schema -------------------------------------------


def _add_manifest_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="check a manifest; print a one-line summary")
    p.add_argument("manifest")
    p.set_defaults(handler=_cmd_validate)

    p = sub.add_parser("plan", help="show the jobs a manifest expands to")
    p.add_argument("manifest")
    p.add_argument("--jsonl", action="store_true", help="print every job as one JSON line")
    p.add_argument("--limit", type=int, default=20, help="rows in the table (default 20)")
    p.set_defaults(handler=_cmd_plan)

    p = sub.add_parser("schema", help="print the JSON Schema of the YAML manifest format")
    p.set_defaults(handler=_cmd_schema)


def _cmd_validate(args: argparse.Namespace) -> int:
    raise UsageError("validate is not available yet")


def _cmd_plan(args: argparse.Namespace) -> int:
    raise UsageError("plan is not available yet")


def _cmd_schema(args: argparse.Namespace) -> int:
    raise UsageError("schema is not available yet")


# --- run -------------------------------------------------------------------------


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="generate every image of a manifest (resumable)")
    p.add_argument("manifest")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    raise UsageError("run is not available yet")


# --- entry point -----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchgen",
        description="Batch image generation on Segmind's Bria text-to-image API.",
    )
    parser.add_argument("--version", action="version", version=f"batchgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_manifest_commands(sub)
    _add_emulator(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one batchgen command and return its exit code."""
    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return int(handler(args))
    except ManifestError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        noun = "problem" if len(exc.problems) == 1 else "problems"
        print(f"error: {len(exc.problems)} {noun}; nothing was submitted", file=sys.stderr)
        return ExitCode.USAGE
    except (UsageError, LockedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except BatchgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.FATAL_API
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
