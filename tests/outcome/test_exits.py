"""Exit codes: one table from every error class to its code, true to the drawn error tree."""

from __future__ import annotations

import inspect
import re

from batchgen import errors
from batchgen.outcome.exits import ERROR_EXITS, EXIT_MEANINGS, ExitCode, exit_code_for


def error_classes() -> set[type[BaseException]]:
    """Every exception class batchgen/errors.py defines."""
    return {
        cls
        for cls in vars(errors).values()
        if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == errors.__name__
    }


def test_every_error_class_has_an_exit_code() -> None:
    """A class added to errors.py without a row in ERROR_EXITS fails here."""
    missing = error_classes() - set(ERROR_EXITS)
    assert not missing, f"no exit code for {sorted(c.__name__ for c in missing)}"


def test_the_drawn_tree_says_the_same_codes() -> None:
    """Each ``(exit N)`` in errors.py's drawing is the code the table gives that class."""
    drawn: dict[str, int] = {}
    name = ""
    for line in (errors.__doc__ or "").splitlines():
        # A line that starts with a class name starts its entry; "(exit N)" may be on a later line.
        if (found := re.match(r"[\s│├└─]*(\w+)", line)) and hasattr(errors, found.group(1)):
            name = found.group(1)
        if code := re.search(r"\(exit (\d+)\)", line):
            drawn[name] = int(code.group(1))
    assert set(drawn) >= {"UsageError", "ManifestError", "LockedError", "LocalWriteError", "FatalApiError"}
    for name, code in drawn.items():
        assert ERROR_EXITS[getattr(errors, name)] == code, name


def test_a_subclass_takes_its_nearest_row() -> None:
    """An error class defined elsewhere gets the code of its nearest base in the table."""

    class Elsewhere(errors.LocalWriteError):
        pass

    assert exit_code_for(Elsewhere("x")) is ExitCode.WRITE_FAILED
    assert exit_code_for(errors.ManifestError([])) is ExitCode.USAGE
    assert exit_code_for(errors.FatalApiError("401")) is ExitCode.FATAL_API
    assert exit_code_for(KeyboardInterrupt()) is ExitCode.INTERRUPTED
    assert exit_code_for(BrokenPipeError()) is ExitCode.OK


def test_every_code_has_a_meaning() -> None:
    """summary.json's exit_meaning exists for every code."""
    assert set(EXIT_MEANINGS) == set(ExitCode)
