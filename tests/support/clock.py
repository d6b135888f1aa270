"""Virtual time for in-process tests: an asyncio loop whose clock moves only when every task waits.

A run against the in-process emulator spends nearly all its time waiting: for a 22 s
inference, a 60 s rate-limit window, a 120 s Retry-After. On a :class:`VirtualLoop`
those waits cost nothing: when no callback is ready, no I/O is pending and no worker
thread is busy, the clock jumps straight to the next timer (trio's ``MockClock`` with
``autojump_threshold=0``, aiolimiter's fake loop clock). The emulator built with
``clock=current_loop().time`` lives on the same clock, so a test can use Segmind's real
figures and the runner measures them exactly as it would measure the real service.

CPU work takes no virtual time, so what the run sees does not depend on how busy the
machine is. Work handed to a thread (file writes, image rendering) is the one thing
the machine could still reorder: the loop runs ``run_in_executor`` calls inline, and
:func:`inline_worker_threads` does the same for anyio's ``to_thread.run_sync``, so
each such call takes no virtual time and finishes in the order it was made. Without
it the clock simply stands still while one of anyio's worker threads is busy. Use
this loop only for tests whose every wait is on it: a real socket or process answers
in real time, which this clock does not see.

Use it in a test module with the ``virtual_time`` fixture of ``tests/conftest.py``::

    @pytest.fixture
    def anyio_backend(virtual_time):
        return virtual_time
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import time
from collections.abc import Callable
from typing import Any

import anyio.lowlevel
import anyio.to_thread
import pytest
import sniffio

__all__ = ["VirtualLoop", "VirtualLoopStuck", "current_loop", "inline_worker_threads", "virtual_backend"]

# Where the virtual clock starts: any fixed value (a monotonic clock's zero means nothing).
ORIGIN = 1_000_000.0
# The virtual time after which a run is taken to be stuck: every test here is about
# minutes of virtual time, and a run that waits forever on a periodic timer would
# otherwise spin the clock forward forever.
LIMIT = 7 * 24 * 3600.0
# Real seconds to wait at a time while a worker thread is busy (its answer wakes the loop
# at once; this only bounds a wait the loop might not be woken from).
THREAD_POLL = 0.05


class VirtualLoopStuck(RuntimeError):
    """The virtual clock passed :data:`LIMIT`: the run waits on something that never comes."""


class VirtualLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is virtual and jumps to the next timer when all wait."""

    def __init__(self) -> None:
        super().__init__()
        self._now = ORIGIN
        self._wall_origin = time.time()
        self._thread_limiter: anyio.CapacityLimiter | None = None  # anyio's, for this loop
        selector = self._selector  # type: ignore[attr-defined]
        real_select: Callable[[float | None], Any] = selector.select

        def virtual_select(timeout: float | None = None) -> Any:
            events = real_select(0)
            if events or timeout == 0:
                return events
            if self._threads_busy():
                # A thread's answer is on its way: wait for it in real time, the clock stands still.
                return real_select(THREAD_POLL if timeout is None else min(timeout, THREAD_POLL))
            if timeout is None:
                # No timer at all: only the outside world (a signal, a thread of asyncio's
                # own) can wake the loop, as on a real one.
                return real_select(None)
            self._now += timeout
            if self._now - ORIGIN > LIMIT:
                raise VirtualLoopStuck(f"virtual time passed {LIMIT:g} s: the run is stuck")
            return events

        selector.select = virtual_select

    def time(self) -> float:
        return self._now

    def wall(self) -> float:
        """Epoch seconds in the virtual universe (for a run's ``wall_clock``)."""
        return self._wall_origin + (self._now - ORIGIN)

    def run_in_executor(
        self, executor: concurrent.futures.Executor | None, func: Callable[..., Any], *args: Any
    ) -> asyncio.Future[Any]:
        """Run ``func`` now, on this thread, in no virtual time; its future is already done (aiofiles)."""
        future: asyncio.Future[Any] = self.create_future()
        try:
            future.set_result(contextvars.copy_context().run(func, *args))
        except BaseException as exc:  # the caller awaits it, as it would a thread's
            future.set_exception(exc)
        return future

    def _threads_busy(self) -> bool:
        """Whether one of anyio's worker threads is working for us."""
        # anyio's worker threads hold a token of its default limiter from the call to the
        # caller's resumption. Outside a task anyio cannot tell which library runs: say it.
        if self._thread_limiter is None:
            token = sniffio.current_async_library_cvar.set("asyncio")
            try:
                self._thread_limiter = anyio.to_thread.current_default_thread_limiter()
            finally:
                sniffio.current_async_library_cvar.reset(token)
        limiter = self._thread_limiter
        return limiter.borrowed_tokens > 0


async def _run_inline(
    func: Callable[..., Any],
    *args: Any,
    abandon_on_cancel: bool = False,
    cancellable: bool | None = None,
    limiter: anyio.CapacityLimiter | None = None,
) -> Any:
    """``anyio.to_thread.run_sync`` on a :class:`VirtualLoop`: the call runs inline, between two checkpoints.

    The first checkpoint may be cancelled, as anyio's is; the call itself cannot be (a
    thread's is shielded too), and the task yields once after it, as after a thread.
    """
    await anyio.lowlevel.checkpoint()
    result = contextvars.copy_context().run(func, *args)
    await anyio.lowlevel.cancel_shielded_checkpoint()
    return result


def inline_worker_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``anyio.to_thread.run_sync`` run inline on a :class:`VirtualLoop` (and as before elsewhere)."""
    threaded = anyio.to_thread.run_sync

    async def run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if isinstance(asyncio.get_running_loop(), VirtualLoop):
            return await _run_inline(func, *args, **kwargs)
        return await threaded(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", run_sync)


def virtual_backend() -> tuple[str, dict[str, Any]]:
    """An ``anyio_backend`` value that runs the test on a :class:`VirtualLoop`."""
    return ("asyncio", {"loop_factory": VirtualLoop})


def current_loop() -> VirtualLoop:
    """The running virtual loop (fails loudly in a test that is not on one)."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualLoop), "this test must run on a VirtualLoop (see virtual_backend)"
    return loop
