"""The resume rule: what a rerun does with one job, given what the ledger says (:func:`decide`).

For each job of the manifest, by its key:

- not in the ledger: submit (``new``);
- ``refused`` (the last submit was answered 4xx or never left): submit (``new``, or
  ``retry`` when an earlier request was given up);
- ``submitting`` (killed between the POST and its answer) or ``uncertain`` (the POST got
  no usable answer): the submit is in doubt; look for the request in the account's
  request history before anything is submitted (``Reconcile``): adopted if found,
  submitted again only if the history, past its lag window, does not hold it;
- ``completed`` and ``OUT/<file>`` exists with the recorded sha256 (or, without reading
  it, the size and modification time recorded when it was saved:
  :func:`~batchgen.output.images.file_matches`): skip; a ``file``
  that resolves outside ``OUT/images`` (through a symlink) never counts as done and is
  submitted again (``file-outside``), and replay skips a ``completed`` line whose
  ``file`` is not a plain path under ``images/`` at all;
- ``submitted`` less than ``retention - margin`` seconds ago (1 h - 5 min by default)
  and not finished: poll the same ``request_id`` again, do not resubmit;
- a request that may have made an image that is not saved (``submitted`` longer ago,
  ``expired``, ``completed`` with its file missing or changed, ``failed`` retryably at
  the status, result or download step): poll its ``request_id`` again (``recover``): the result
  if the server still has it, else the history's ``generation_url``, and only when
  neither gives an image is the job submitted again;
- ``failed`` with ``retryable: false``: skip, unless ``--retry-failed``
  (``retry-failed``); ``failed`` with ``retryable: true`` otherwise: submit again
  (``retry``).

Every decision has a ``reason``, and :data:`RERUN_VERBS` says, for every reason, the
verb a rerun is reported under (``batchgen status``: "a rerun would: skip 3 done, ...").

Jobs in the ledger that are no longer in the manifest are left alone and reported
(:meth:`~batchgen.output.replay.LedgerState.removed`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

from batchgen.output.images import file_matches
from batchgen.output.layout import IMAGES_DIR
from batchgen.output.replay import JobRecord

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_RETENTION",
    "RERUN_VERBS",
    "Poll",
    "PollReason",
    "Reconcile",
    "ReconcileReason",
    "RerunVerb",
    "ResumeDecision",
    "ResumeReason",
    "Skip",
    "SkipReason",
    "Submit",
    "SubmitReason",
    "decide",
    "leads_outside",
    "rerun_verb",
]

# Segmind keeps a request's status and result 1 hour after submission (then 404). The one
# definition: the resume rule, the scheduler's settings, status and admission read it here.
DEFAULT_RETENTION = 3600.0
DEFAULT_MARGIN = 300.0

SkipReason: TypeAlias = Literal["completed", "failed"]
PollReason: TypeAlias = Literal["in-flight", "recover"]
ReconcileReason: TypeAlias = Literal["unanswered"]
SubmitReason: TypeAlias = Literal[
    "new", "expired", "retry", "retry-failed", "file-missing", "file-changed", "file-outside"
]
ResumeReason: TypeAlias = SkipReason | PollReason | ReconcileReason | SubmitReason

RerunVerb: TypeAlias = Literal[
    "skip", "skip failed", "repoll", "reconcile", "recover", "resubmit", "retry", "submit"
]

# Every reason a decision can give, and the verb a rerun is counted under. Exhaustive:
# tests/output/test_resume.py derives the reasons from the Literal types above.
RERUN_VERBS: Mapping[ResumeReason, RerunVerb] = {
    "completed": "skip",
    "failed": "skip failed",
    "in-flight": "repoll",
    "recover": "recover",
    "unanswered": "reconcile",
    "new": "submit",
    "expired": "resubmit",
    "retry": "retry",
    "retry-failed": "retry",
    "file-missing": "resubmit",
    "file-changed": "resubmit",
    "file-outside": "resubmit",
}


@dataclass(frozen=True, slots=True)
class Skip:
    """Nothing to do: the job is done (``completed``) or failed for good (``failed``)."""

    reason: SkipReason = "completed"


@dataclass(frozen=True, slots=True)
class Poll:
    """Poll ``request_id`` again, do not resubmit: the job is in flight within retention,
    or (``recover``) its request may have made an image that was never saved."""

    request_id: str
    submitted_at: float
    recover: bool = False

    @property
    def reason(self) -> PollReason:
        """``recover`` (an image may be waiting on the server) or ``in-flight``."""
        return "recover" if self.recover else "in-flight"


@dataclass(frozen=True, slots=True)
class Reconcile:
    """The job's submit is in doubt (a run was killed between its POST and the answer, or
    the answer was not usable): the request history decides before anything is sent."""

    body: dict[str, Any]
    intent_at: float

    @property
    def reason(self) -> ReconcileReason:
        """Always ``unanswered``: the submit's answer never reached the ledger."""
        return "unanswered"


@dataclass(frozen=True, slots=True)
class Submit:
    """Submit the job; ``previous_request_id`` is the request it replaces, if any."""

    reason: SubmitReason
    previous_request_id: str | None = None


ResumeDecision = Skip | Poll | Reconcile | Submit


def rerun_verb(decision: ResumeDecision) -> RerunVerb:
    """The verb a rerun reports ``decision`` under (:data:`RERUN_VERBS`)."""
    return RERUN_VERBS[decision.reason]


def leads_outside(out_dir: Path, file: str) -> bool:
    """Whether ``OUT/<file>`` resolves outside ``OUT/images`` (a symlink that leads out of
    the output folder): such a file is not our image, whatever its bytes."""
    if _plainly_inside(out_dir, file):
        return False
    images = (out_dir / IMAGES_DIR).resolve()
    return not (out_dir / file).resolve().is_relative_to(images)


def _plainly_inside(out_dir: Path, file: str) -> bool:
    """Whether ``file`` (``images/...``, no ``..``) reaches its target without a symlink from
    ``OUT/images`` down: then it resolves inside without resolving both paths, which costs
    a system call per folder from the root, for every image of a rerun and ``status``."""
    parts = file.split("/")
    if len(parts) < 2 or parts[0] != IMAGES_DIR or ".." in parts:
        return False
    path = os.fspath(out_dir)
    for part in parts:
        path = os.path.join(path, part)
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return False
        except OSError:
            return False  # missing: the careful way says what it means
    return True


# Steps that follow a request already paid for: a failure there (an outage of status or
# result, a download that never worked) leaves a request a rerun polls, never replaces.
_FOLLOW_STEPS = frozenset({"status", "result", "download"})


def decide(
    record: JobRecord | None,
    *,
    out_dir: Path,
    now: float,
    retention: float = DEFAULT_RETENTION,
    margin: float = DEFAULT_MARGIN,
    retry_failed: bool = False,
) -> ResumeDecision:
    """What a rerun does with one job, given its ledger record (see the module docstring).

    ``now`` is the wall clock in epoch seconds (the same clock the ledger stamps with).
    A ``completed`` record is checked against the file on disk (this hashes it).
    """
    if record is None:
        return Submit("new")

    def recover(reason: Literal["expired", "retry", "file-missing", "file-changed"]) -> Poll | Submit:
        if record.request_id and record.submitted_at is not None:
            return Poll(record.request_id, record.submitted_at, recover=True)
        return Submit(reason, record.request_id)

    if record.state in ("submitting", "uncertain"):
        if record.body is not None and record.intent_at is not None:
            return Reconcile(record.body, record.intent_at)
        return Submit("retry")
    if record.state == "refused":  # its last submit was not accepted: nothing paid
        return Submit("new") if record.request_id is None else Submit("retry", record.request_id)
    if record.state == "completed":
        if not record.file or not (out_dir / record.file).is_file():
            return recover("file-missing")
        if leads_outside(out_dir, record.file):
            return Submit("file-outside", record.request_id)
        if record.sha256 is None or not file_matches(
            out_dir, record.file, record.sha256, size=record.bytes, mtime_ns=record.mtime_ns
        ):
            return recover("file-changed")
        return Skip("completed")
    if record.state == "submitted":
        if (
            record.request_id
            and record.submitted_at is not None
            and now - record.submitted_at < retention - margin
        ):
            return Poll(record.request_id, record.submitted_at)
        return recover("expired")
    if record.state == "expired":
        return recover("expired")
    # failed
    if record.retryable:
        if record.step in _FOLLOW_STEPS:
            return recover("retry")
        return Submit("retry", record.request_id)
    if retry_failed:
        return Submit("retry-failed", record.request_id)
    return Skip("failed")
