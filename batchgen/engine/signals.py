"""Stopping a run on a signal: SIGINT (Ctrl-C), SIGTERM or SIGHUP (a terminal closed).

The first stops submitting and gives the jobs in flight ``--grace`` seconds; a second, or
the grace over, stops at once (the ledger says what was in flight). While the end of a run
is written, a signal cuts that step short instead of killing the process.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

import anyio

from batchgen.engine.scheduler import Scheduler
from batchgen.outcome.figures import format_duration
from batchgen.outcome.summary import Summary

__all__ = ["STOP_SIGNALS", "on_signal", "watch_signals"]

log = logging.getLogger("batchgen")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []))


async def watch_signals(scheduler: Scheduler, summary: Summary, *, grace: float) -> None:
    """First Ctrl-C / SIGTERM / SIGHUP: stop submitting, give jobs in flight ``grace`` seconds
    (:meth:`Scheduler.wind_down`: no longer than they take). Second, or the grace over: stop
    now (the ledger says what was in flight)."""

    async def grace_over(flying: int) -> None:
        left = await scheduler.wind_down(grace)
        if left:
            log.warning(
                "%s of grace over with %d jobs in flight: stopping now; rerun the same command to finish",
                format_duration(grace),
                left,
            )
        else:
            done = "every job in flight finished: " if flying else ""
            log.warning("%sstopping now; rerun the same command to finish the batch", done)

    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with anyio.create_task_group() as tg:
            async for signum in signals:
                summary.interrupted = True
                if scheduler.submitting:
                    name, flying = signal.Signals(signum).name, scheduler.in_flight
                    if flying:
                        log.warning(
                            "%s: submitting nothing more; waiting up to %s for %d jobs in flight "
                            "(Ctrl-C again to quit now)",
                            name,
                            format_duration(grace),
                            flying,
                        )
                    else:
                        log.warning("%s: submitting nothing more; no job in flight to wait for", name)
                    scheduler.stop_submitting()
                    tg.start_soon(grace_over, flying)
                else:
                    log.warning("stopping now; rerun the same command to finish the batch")
                    scheduler.cancel()
                    tg.cancel_scope.cancel()


async def on_signal(callback: Callable[[], None], what: str) -> None:
    """Call ``callback`` at each SIGINT / SIGTERM / SIGHUP until cancelled: while the end of a
    run is written, a signal cuts that short instead of killing the process before summary.json."""
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for signum in signals:
            log.warning("%s: %s", signal.Signals(signum).name, what)
            callback()
