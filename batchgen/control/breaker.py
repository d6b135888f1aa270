"""Submits against a server that stopped answering: pause, probe, give up (a circuit breaker).

A submit that gets no answer at all (it timed out, or the connection closed after it was
sent) is uncertain and costs a full request timeout. Without this, a silent server would
be tried one job at a time, each waiting out its timeout, for hours. Instead:

- **closed**: submits go as the rate gate allows;
- after :data:`TRIP_AFTER` submits in a row got no answer, **paused**: no new submit goes
  out; after a pause (:data:`FIRST_PAUSE` s, doubling up to :data:`MAX_PAUSE` s) one submit
  goes as a *probe*; an answer of any kind (accepted, refused, a 5xx) closes the breaker;
  no answer pauses it again;
- once no submit has been answered for :data:`GIVE_UP_AFTER` s while paused, **dead**:
  the run submits nothing more (jobs in flight and submits in doubt are still followed).

So against a server that has gone silent a run stops submitting within about
``GIVE_UP_AFTER`` plus one request timeout. Every method takes the time explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FIRST_PAUSE", "GIVE_UP_AFTER", "MAX_PAUSE", "TRIP_AFTER", "Go", "SubmitBreaker", "Wait"]

TRIP_AFTER = 3  # submits in a row without an answer before submitting pauses
FIRST_PAUSE = 15.0  # seconds before the first probe
MAX_PAUSE = 60.0  # the longest pause between probes
GIVE_UP_AFTER = 300.0  # seconds without an answered submit, while paused, before giving up


@dataclass(frozen=True, slots=True)
class Go:
    """Submit now (``probe``: the one submit a paused breaker lets through)."""

    probe: bool = False


@dataclass(frozen=True, slots=True)
class Wait:
    """Do not submit for ``seconds`` (then ask again)."""

    seconds: float


class SubmitBreaker:
    """When submits may go out, from how the server has answered them."""

    def __init__(
        self,
        *,
        trip_after: int = TRIP_AFTER,
        first_pause: float = FIRST_PAUSE,
        max_pause: float = MAX_PAUSE,
        give_up_after: float = GIVE_UP_AFTER,
    ) -> None:
        self.trip_after = trip_after
        self.first_pause = first_pause
        self.max_pause = max_pause
        self.give_up_after = give_up_after
        self.silent_in_a_row = 0  # submits in a row that got no answer
        self.last_answer: float | None = None  # when a submit was last answered
        self.paused_since: float | None = None
        self._pause = first_pause
        self._probe_at: float | None = None  # paused: when the next probe may go
        self._probing = False
        self.dead = False

    @property
    def paused(self) -> bool:
        """Whether submits are held back (a probe may be out)."""
        return self.paused_since is not None

    def claim(self, now: float) -> Go | Wait | None:
        """May a submit go now? None once the breaker gave up: submit nothing more."""
        if self.dead:
            return None
        if self._probe_at is None:
            return Go()
        quiet_since = self.last_answer if self.last_answer is not None else self.paused_since
        assert quiet_since is not None
        if now - quiet_since >= self.give_up_after:
            self.dead = True
            return None
        if self._probing:  # the probe's outcome decides; ask again meanwhile
            return Wait(self.first_pause)
        if now < self._probe_at:
            return Wait(self._probe_at - now)
        self._probing = True
        return Go(probe=True)

    def answered(self, now: float) -> None:
        """A submit got an HTTP answer, whatever it said: the server is there."""
        self.last_answer = now
        self.silent_in_a_row = 0
        self.paused_since = None
        self._probe_at = None
        self._probing = False
        self._pause = self.first_pause

    def no_answer(self, now: float) -> None:
        """A submit got no answer at all (timed out, or the connection closed after sending)."""
        self.silent_in_a_row += 1
        if self._probing or (self._probe_at is None and self.silent_in_a_row >= self.trip_after):
            if self.paused_since is None:
                self.paused_since = now
            self._probe_at = now + self._pause
            self._pause = min(self.max_pause, self._pause * 2)
            self._probing = False

    def released(self) -> None:
        """A probe claimed with :meth:`claim` was not sent after all (the run stopped)."""
        self._probing = False
