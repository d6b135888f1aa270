"""A faster universe for tests: an asyncio event loop whose clock runs ``speed`` x real time.

Everything that waits on the loop (``anyio.sleep``, timeouts, the emulator's clock when
it is ``loop.time``) sees time pass ``speed`` times faster, so a test can use Segmind's
real figures (a 60 s rate-limit window, a 22 s inference, a 120 s Retry-After cap)
without telling the runner anything: the runner lives in that universe and measures
it, exactly as it would measure the real one. Work done in threads and CPU time are
real time, so they look ``speed`` times slower inside: keep ``speed`` moderate.

Use it in a test module with::

    @pytest.fixture
    def anyio_backend():
        return warp_backend(30)
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any


class WarpLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` runs ``speed`` times faster than the monotonic clock."""

    def __init__(self, speed: float) -> None:
        super().__init__()
        self.speed = speed
        self._origin = time.monotonic()
        self._wall_origin = time.time()
        selector = self._selector  # type: ignore[attr-defined]
        select = selector.select

        def warped_select(timeout: float | None = None) -> Any:
            # The loop asks to wait ``timeout`` of its own seconds: that is less real time.
            return select(None if timeout is None else max(0.0, timeout) / speed)

        selector.select = warped_select

    def time(self) -> float:
        return self._origin + (time.monotonic() - self._origin) * self.speed

    def wall(self) -> float:
        """Epoch seconds in the warped universe (for a run's ``wall_clock``)."""
        return self._wall_origin + (self.time() - self._origin)


def warp_backend(speed: float) -> tuple[str, dict[str, Any]]:
    """An ``anyio_backend`` value that runs the test on a :class:`WarpLoop`."""
    return ("asyncio", {"loop_factory": functools.partial(WarpLoop, speed)})


def current_loop() -> WarpLoop:
    """The running warp loop (fails loudly in a test that is not warped)."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, WarpLoop), "this test must run on a WarpLoop (see warp_backend)"
    return loop
