"""The process's open-file limit: raised where the system allows, and the jobs in flight kept under it.

Every job in flight holds a connection, and while its image is saved a file; the run
also holds its ledger, its lock and a few more (:mod:`batchgen.control.admission` counts
them). Under a low ``ulimit -n`` (64 on some containers and CI runners; 256 is macOS's
default) a run that admitted jobs by rate alone failed with "Too many open files" (exit 4)
and so did every rerun.

:func:`in_flight_ceiling` first raises the soft limit towards the hard one, as far as the
run can use (Go's runtime raises it to the hard limit at every start; this is the same
idea, no further than needed), then returns the most jobs in flight the limit leaves room
for. A ``--concurrency`` above it is lowered, with a warning saying why and what to do.
"""

from __future__ import annotations

import logging
import os

from batchgen.control.admission import AUTO_CAP, FILES_PER_JOB, RESERVED_FILES, file_ceiling

try:
    import resource
except ImportError:  # Windows: no RLIMIT_NOFILE to speak of
    resource = None  # type: ignore[assignment]

__all__ = ["in_flight_ceiling", "open_file_count", "raise_open_file_limit"]

log = logging.getLogger("batchgen")

# Tried in turn when the hard limit is "unlimited": Linux refuses a soft limit above
# fs.nr_open (1,048,576 by default), macOS one above OPEN_MAX (10,240).
_UNLIMITED_TRIES = (1 << 20, 65536, 10240)


def open_file_count() -> int | None:
    """How many files this process has open now, or None where the system does not say."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder)) - 1  # the listing's own descriptor
        except OSError:
            continue
    return None


def raise_open_file_limit(want: int) -> int | None:
    """Raise the soft open-file limit to ``want`` (at most the hard limit; never lowered);
    the soft limit now, or None where there is no such limit."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or (hard != resource.RLIM_INFINITY and soft >= hard) or soft >= want:
        return None if soft == resource.RLIM_INFINITY else soft
    tries = [want] if hard == resource.RLIM_INFINITY else [min(want, hard)]
    if hard == resource.RLIM_INFINITY:
        tries += [t for t in _UNLIMITED_TRIES if soft < t < want]
    for target in tries:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        log.debug("open-file limit raised from %d to %d (hard limit %s)", soft, target, hard)
        return target
    return soft


def in_flight_ceiling(concurrency: int | None) -> int | None:
    """The most jobs in flight this process's open-file limit allows, after raising it as far
    as ``concurrency`` (None: auto, up to AUTO_CAP) can use; None where no limit applies.

    Logs a warning when the limit lowers a ``--concurrency`` the user gave, and says so at
    info level when it keeps ``auto`` below its cap."""
    open_now = open_file_count()
    if open_now is None:
        open_now = 16  # a guess, on a system that hides it
    wanted = concurrency if concurrency is not None else AUTO_CAP
    limit = raise_open_file_limit(open_now + RESERVED_FILES + FILES_PER_JOB * wanted)
    if limit is None:
        return None
    ceiling = file_ceiling(limit, open_now)
    if ceiling >= wanted:
        return ceiling
    advice = "raise it (ulimit -n) to run more at once"
    room = f"{ceiling} job" if ceiling == 1 else f"{ceiling} jobs"
    if concurrency is not None:
        log.warning(
            "the open-file limit (%d, %d open already) leaves room for %s in flight, not %d:"
            " --concurrency lowered to %d; %s",
            limit,
            open_now,
            room,
            concurrency,
            ceiling,
            advice,
        )
    else:
        log.info("the open-file limit (%d) leaves room for %s in flight; %s", limit, room, advice)
    return ceiling
