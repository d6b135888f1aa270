"""Exit codes: what each means, which error gives which, and the rule for a run's outcome.

With ``OUT/summary.json`` the exit code is the contract with schedulers (cron, systemd,
Kubernetes); the README's table says the same. Two ways lead to a code:

- an error raised out of a command (:func:`exit_code_for`: :data:`ERROR_EXITS` has a row
  for every exception class of :mod:`batchgen.errors`, and for an interrupt and a closed
  pipe);
- a ``batchgen run`` that finished, or was refused holding its folder
  (:func:`outcome_exit_code`: the first that applies of 2, 4, 130, 3, 6, 5, 1, else 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import TYPE_CHECKING

from batchgen import errors

if TYPE_CHECKING:
    from batchgen.outcome.summary import Summary

__all__ = ["ERROR_EXITS", "EXIT_MEANINGS", "ExitCode", "exit_code_for", "outcome_exit_code"]


class ExitCode(IntEnum):
    """Exit codes of every batchgen command."""

    OK = 0
    JOBS_FAILED = 1
    USAGE = 2
    FATAL_API = 3
    WRITE_FAILED = 4
    BUDGET = 5
    FAILURE_RATE = 6
    INTERRUPTED = 130


EXIT_MEANINGS: Mapping[int, str] = {
    ExitCode.OK: "every job of the manifest has its image",
    ExitCode.JOBS_FAILED: (
        "the run finished, but some jobs failed (now, or permanently in an earlier run),"
        " or are not known whether paid (a submit in doubt, left for a rerun)"
    ),
    ExitCode.USAGE: (
        "usage or manifest error, no key, the output folder locked or another batch's, or the estimate"
        " over --budget: nothing was submitted"
    ),
    ExitCode.FATAL_API: "fatal API condition (key, permissions, unknown model, no credits, a redirect)",
    ExitCode.WRITE_FAILED: "a file under the output folder could not be written (disk full?); rerun then",
    ExitCode.BUDGET: "--budget reached: nothing more submitted, jobs in flight finished",
    ExitCode.FAILURE_RATE: "--halt-on-failure-rate: too many jobs failed; nothing more submitted",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C / SIGTERM / SIGHUP): rerun the same command to finish",
}

# One row per exception class of batchgen.errors (a test checks none is missing), and the
# two the command line meets from outside it. Errors below the API layer are handled
# inside a run; one that still escapes a command means the run could not go on: 3.
ERROR_EXITS: Mapping[type[BaseException], ExitCode] = {
    errors.UsageError: ExitCode.USAGE,
    errors.ManifestError: ExitCode.USAGE,
    # The loader turns these two into Problems of a ManifestError; one that escapes is still
    # a manifest error.
    errors.TemplateError: ExitCode.USAGE,
    errors.ParamsInvalid: ExitCode.USAGE,
    errors.LockedError: ExitCode.USAGE,
    errors.LocalWriteError: ExitCode.WRITE_FAILED,
    errors.BatchgenError: ExitCode.FATAL_API,
    errors.ImageInvalid: ExitCode.FATAL_API,
    errors.JobTimedOut: ExitCode.FATAL_API,
    errors.HistoryUnavailable: ExitCode.FATAL_API,
    errors.ApiError: ExitCode.FATAL_API,
    errors.TransientError: ExitCode.FATAL_API,
    errors.SubmitUncertain: ExitCode.FATAL_API,
    errors.ImageUnavailable: ExitCode.FATAL_API,
    errors.RateLimited: ExitCode.FATAL_API,
    errors.RateLimitStalled: ExitCode.FATAL_API,
    errors.BadRequest: ExitCode.FATAL_API,
    errors.RequestFailed: ExitCode.FATAL_API,
    errors.RequestNotFound: ExitCode.FATAL_API,
    errors.InsufficientCredits: ExitCode.FATAL_API,
    errors.FatalApiError: ExitCode.FATAL_API,
    KeyboardInterrupt: ExitCode.INTERRUPTED,
    # The reader went away (`batchgen plan --jsonl | head`): not an error.
    BrokenPipeError: ExitCode.OK,
}


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code of a command that raised ``exc`` (by its class, else its nearest base).

    Raises KeyError for an exception with no row: that is a bug, not an outcome.
    """
    for cls in type(exc).__mro__:
        if cls in ERROR_EXITS:
            return ERROR_EXITS[cls]
    raise KeyError(f"no exit code for {type(exc).__name__}")


def outcome_exit_code(summary: Summary) -> ExitCode:
    """The exit code a finished run's outcome calls for.

    2 refused before anything was sent (an estimate over ``--budget``), 4 a file under
    OUT could not be written (disk full; it may also have been
    interrupted), 130 interrupted, 3 stopped by a fatal API condition, 6 the failure
    rate went over ``--halt-on-failure-rate`` (whether or not jobs were left to submit:
    the flag in ``summary.json`` and the code say the same), 5 stopped at ``--budget``,
    1 some job failed (now or, not retried, earlier) or is not known to be paid for (its
    submit in doubt, left for a rerun), else 0.
    """
    s = summary
    if s.refused:
        return ExitCode.USAGE
    if s.write_error:
        return ExitCode.WRITE_FAILED
    if s.interrupted:
        return ExitCode.INTERRUPTED
    if s.fatal:
        return ExitCode.FATAL_API
    if s.failure_rate_halted:
        return ExitCode.FAILURE_RATE
    if s.budget_reached and not s.all_done:
        return ExitCode.BUDGET
    if s.failed or s.skipped_failed or s.uncertain:
        return ExitCode.JOBS_FAILED
    return ExitCode.OK
