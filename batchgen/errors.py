"""Every error batchgen raises on purpose, drawn by what happens when it is raised.

    BatchgenError
    ├── UsageError               bad command line or settings           (exit 2)
    ├── ManifestError            bad manifest; carries every Problem    (exit 2)
    ├── TemplateError            a prompt or filename template that does not parse (also a
    │                            ValueError; ``offset`` says where): a Problem of the ManifestError
    ├── ParamsInvalid            parameters the API would refuse; carries every ParamProblem (also a
    │                            ValueError): Problems of the ManifestError; the emulator answers 400
    ├── LockedError              another run holds the output directory (exit 2)
    ├── LocalWriteError          a file under the output directory cannot be written
    │                            (disk full, file too large, permissions): stop the run  (exit 4)
    ├── ImageInvalid             a downloaded image is corrupt, truncated, too large or not the claimed type
    ├── JobTimedOut              a request not finished within the retention window (fails the job, retryably)
    ├── HistoryUnavailable       the account's request history cannot be read: the run goes on without
    │                            it, with a warning (submits in doubt stay in doubt, images past
    │                            retention are paid for again, the run's cost is not known)
    └── ApiError                 an HTTP answer the client could not turn into a result
        ├── TransientError       500/502/504, dropped connection, timeout: retry with backoff
        ├── SubmitUncertain      a submit that may have been accepted (no usable answer): never
        │                        POSTed again until the request history says it was not
        ├── ImageUnavailable     403/404/410 from the image host (expired signed URL): fetch the result again
        ├── RateLimited          429: slow down; ``retry_after`` if the server sent one
        │   └── RateLimitStalled  429s and no accepted request for too long: give the job up, retryably
        ├── BadRequest           400: permanent for that job
        ├── RequestFailed        422 / FAILED: permanent for that job, detail in ``detail``
        ├── RequestNotFound      404 on a request id: unknown or expired, resubmit
        ├── InsufficientCredits  406 "insufficient credits": submit nothing more, finish what is in flight
        └── FatalApiError        401/403, 404 or 410 (model retired) on submit, 406 "invalid content
                                 type", an API redirect to another origin: stop the whole run  (exit 3)

API errors carry their context as keyword-only attributes: ``status_code``,
``request_id``, ``detail`` and, for 429, ``retry_after`` (seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ApiError",
    "BadRequest",
    "BatchgenError",
    "FatalApiError",
    "HistoryUnavailable",
    "ImageInvalid",
    "ImageUnavailable",
    "InsufficientCredits",
    "JobTimedOut",
    "LocalWriteError",
    "LockedError",
    "ManifestError",
    "ParamProblem",
    "ParamsInvalid",
    "Problem",
    "RateLimitStalled",
    "RateLimited",
    "RequestFailed",
    "RequestNotFound",
    "SubmitUncertain",
    "TemplateError",
    "TransientError",
    "UsageError",
]


class BatchgenError(Exception):
    """Base class of every error batchgen raises on purpose."""


class UsageError(BatchgenError):
    """The command line or the settings are wrong."""


class LockedError(BatchgenError):
    """Another ``batchgen run`` is writing to the same output directory."""


class LocalWriteError(BatchgenError):
    """A file under the output directory could not be written: the disk is full (ENOSPC),
    a file size limit was hit (EFBIG), a permission or a read-only filesystem.

    Nothing more can be saved, so the run stops (exit 4); it is no job's fault, so no job
    is failed for it. ``path`` is the file, ``reason`` the system's words for what failed.
    """

    def __init__(self, message: str, *, path: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason

    @classmethod
    def from_os_error(cls, what: str, path: object, exc: OSError) -> LocalWriteError:
        """``cannot <what> <path>: <strerror>`` from an OSError met doing it."""
        reason = exc.strerror or str(exc)
        return cls(f"cannot {what} {path}: {reason}", path=str(path), reason=reason)


class ImageInvalid(BatchgenError):
    """A downloaded image does not decode completely, or is not the type it claims.

    Treated like a transient fault: the image is downloaded again. ``file`` is the
    path (relative to OUT) it was meant for, when known.
    """

    def __init__(self, message: str, *, file: str | None = None) -> None:
        super().__init__(message)
        self.file = file


class JobTimedOut(BatchgenError):
    """A request did not finish within the retention window; its result would be gone anyway."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a manifest, located as ``FILE:LINE: where: what`` (``FILE:LINE:COLUMN``
    when the column is known: a character inside a prompt or a wildcard file)."""

    file: str
    line: int | None
    where: str
    what: str
    column: int | None = None

    def __str__(self) -> str:
        location = f"{self.file}:{self.line}" if self.line is not None else self.file
        if self.line is not None and self.column is not None:
            location += f":{self.column}"
        return f"{location}: {self.where}: {self.what}" if self.where else f"{location}: {self.what}"


class ManifestError(BatchgenError):
    """A manifest is invalid; ``problems`` holds every problem found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class TemplateError(BatchgenError, ValueError):
    """A template that cannot be parsed; the message says what is wrong, ``offset`` (0-based,
    in the template's text) where, when it is known."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True, slots=True)
class ParamProblem:
    """One invalid parameter: which one (``field``) and what is wrong (``message``)."""

    field: str
    message: str


class ParamsInvalid(BatchgenError, ValueError):
    """Parameters failed validation; ``problems`` lists every one of them."""

    def __init__(self, problems: list[ParamProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


class HistoryUnavailable(BatchgenError):
    """The request history could not be read (the reason is the message).

    ``permanent``: it will not be readable in this run either (401/403/404: no history for
    this key or at this host), as opposed to a timeout or a server error that may pass.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class ApiError(BatchgenError):
    """An answer from the Segmind API that is not a usable result."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.request_id = request_id
        self.detail = detail


class TransientError(ApiError):
    """A server or network fault worth retrying (500/502/504, dropped connection, timeout)."""


class SubmitUncertain(ApiError):
    """A submit that may have reached the server, with no usable answer: a timeout or a
    connection closed after the request was sent, a 5xx (a gateway may have passed it
    on), a 2xx without a usable request id, or a request id another job already holds.

    It may have been accepted and paid for, so it is never sent again blindly: the job
    waits until the account's request history shows the request (then it is adopted) or
    shows, past its lag window, that there is none (then the job may be submitted again).
    ``answered`` is False when no HTTP answer came back at all (the server went silent).
    """

    def __init__(
        self,
        message: str,
        *,
        answered: bool,
        status_code: int | None = None,
        request_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, request_id=request_id, detail=detail)
        self.answered = answered


class RateLimited(ApiError):
    """429: too many requests; wait ``retry_after`` seconds if the server said so."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status_code: int | None = 429,
        request_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, request_id=request_id, detail=detail)
        self.retry_after = retry_after


class RateLimitStalled(RateLimited):
    """Every request was refused (429) for longer than the rate gate's patience: the job gives up."""


class ImageUnavailable(ApiError):
    """The image host refused the image URL (403/404/410): typically an expired signed URL.

    The request itself may still be within retention: fetch its result again for a fresh
    URL; never resubmit because of this.
    """


class BadRequest(ApiError):
    """400: the server rejected the job's parameters; retrying will not help."""


class RequestFailed(ApiError):
    """The request reached FAILED (HTTP 422), for example a content-moderation block.

    ``cost`` is what it cost (USD) when the answer's metrics say.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        detail: str | None = None,
        cost: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, request_id=request_id, detail=detail)
        self.cost = cost


class RequestNotFound(ApiError):
    """404 for a request id: unknown or past the retention window; resubmit the job."""


class InsufficientCredits(ApiError):
    """406: the account has no credits left."""


class FatalApiError(ApiError):
    """401/403, 404 or 410 on submit, 406 for a content type, or an API answer redirecting
    to another origin (the key is not sent there): nothing in this run can succeed."""
