"""The command line: argv -> the chosen command's parser -> its handler -> exit code.

Each command lives in its own module (``batchgen.cli.run``, ``status``, ...) with a
``configure(parser)`` that adds its arguments and a ``handle(args)`` that runs it. Only
the chosen command's module is imported, and each imports what it needs when it runs,
so ``batchgen --version`` and ``batchgen status`` import no HTTP stack and no emulator.

This is the only place that turns errors into exit codes and messages; nothing
below it prints tracebacks for expected failures.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from batchgen import __version__
from batchgen.errors import BatchgenError, LocalWriteError, ManifestError
from batchgen.outcome.exits import ExitCode, exit_code_for

__all__ = ["COMMANDS", "ExitCode", "console", "main"]

# Each command's one-line help (what `batchgen --help` lists), in the order listed; its
# module is batchgen.cli.<name>.
COMMANDS = {
    "run": "generate every image of a manifest (resumable)",
    "status": "how the run in an output folder is doing (safe while it runs)",
    "report": "write OUT/report.html: header, failures, contact sheets, gallery",
    "tidy": "move the images of jobs no longer in the manifest aside (to OUT/removed/)",
    "validate": "check a manifest; print a one-line summary",
    "plan": "show the jobs a manifest expands to",
    "schema": "print the JSON Schema of the YAML manifest format",
    "emulator": "serve a local emulator of the Segmind API",
}


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser, with the arguments of the command ``argv`` names (the others only listed)."""
    parser = argparse.ArgumentParser(
        prog="batchgen",
        description="Batch image generation on Segmind's Bria text-to-image API.",
    )
    parser.add_argument("--version", action="version", version=f"batchgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The top level has no option that takes a value, so the first word that is not an
    # option is the command.
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == chosen:
            importlib.import_module(f"batchgen.cli.{name}").configure(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one batchgen command and return its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(argv).parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    say = _errors_to(args)
    try:
        return int(handler(args))
    except BatchgenError as exc:
        if isinstance(exc, ManifestError):
            for problem in exc.problems:
                say(str(problem))
            noun = "problem" if len(exc.problems) == 1 else "problems"
            say(f"error: {len(exc.problems)} {noun}; nothing was submitted")
        elif isinstance(exc, LocalWriteError) and args.command == "run":
            say(f"error: {exc}; nothing was submitted")
        else:
            say(f"error: {exc}")
        return exit_code_for(exc)
    except KeyboardInterrupt as exc:
        say("interrupted")
        return exit_code_for(exc)
    except BrokenPipeError as exc:
        # The reader went away (`batchgen plan --jsonl | head`): not an error.
        _stdout_lost(exc)
        return exit_code_for(exc)
    except OSError as exc:
        if exc.errno not in _OUTPUT_LOST:
            return _bug()
        # stdout is full or gone (`> /dev/full`, a closed terminal): the output is lost.
        _stdout_lost(exc)
        return 1
    except Exception:
        return _bug()
    finally:
        # Output still buffered goes now, not in the interpreter's last flush (whose
        # failure would be a traceback-like message and exit 120): the code stays the command's.
        try:
            sys.stdout.flush()
        except OSError as exc:
            _stdout_lost(exc)


# Errors of a write to stdout that mean the output is lost, not that the command failed.
_OUTPUT_LOST = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG, errno.EBADF})


def _bug() -> int:
    """An exception batchgen did not expect: its traceback on stderr as Python would print it
    (it is a bug to report), but without the key, should its text hold it; exit 1."""
    import traceback

    from batchgen.api.key import redact

    print(redact(traceback.format_exc()), file=sys.stderr, end="")
    return 1


def _stdout_lost(exc: OSError) -> None:
    from batchgen.cli.printing import stdout_lost  # imported only when it is needed

    stdout_lost(exc)


def console() -> NoReturn:
    """The process's entry point (``batchgen``, ``python -m batchgen``): :func:`main`, then exit
    without tearing the interpreter down.

    Once the command returned, every file it wrote is closed and renamed into place, so
    the only work left at exit is freeing the modules and objects of the process one by
    one: 0.1-0.3 s that a short run would wait for (measured with ``bench/short.py``).
    Threads still running are waited for, the streams flushed and logging shut down
    first: all an orderly exit would have done that anyone can see.
    """
    # httpx's __init__ tries to import its own command line (httpx._main), which imports
    # click and pygments when they are installed (uvicorn brings click): 25 ms and more of
    # every start, for a function this process never calls. Marked absent, httpx falls
    # back to a stub (its documented behaviour without the `cli` extra).
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    code = main()
    import logging
    import threading

    # As the interpreter would: a thread still finishing its work (a report left behind by
    # a signal) is waited for.
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone (a closed pipe) or a stream closed
            pass
    os._exit(code)


def _errors_to(args: argparse.Namespace) -> Callable[[str], None]:
    """Where a command's final error goes: ``run`` logs it (timestamp, level, its
    ``--log-format``), so a cron log can date it; other commands print it plainly."""
    if getattr(args, "log_format", None) is None:
        return lambda text: print(text, file=sys.stderr)
    import logging

    from batchgen.cli.logs import configure

    configure(verbosity=args.verbose - args.quiet, fmt=args.log_format)
    log = logging.getLogger("batchgen")
    return lambda text: log.error("%s", text.removeprefix("error: "))
