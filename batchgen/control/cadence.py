"""When to poll a job: by what the run has learned, and by what a poll costs.

Before anything is learned (no job of the run has finished yet):

- one job, the *probe*, polls on a short geometric schedule (first after
  :data:`PROBE_FIRST` s, then each look when the time since the submit has grown by
  half), so the first completion is seen within half its latency, whether jobs take
  20 ms or 2 minutes;
- the other jobs do not: they look on a slow doubling schedule (1 s, 2 s, 4 s, ...; from
  30 s when polls are scarce) as a fallback and are woken the moment the probe's
  completion teaches the model.

Once the model knows the job's class (:mod:`batchgen.control.latency`), two regimes:

- **polls are free** (nothing shows they count): the first poll
  goes when the job has a 5 % chance of being done, then one every 10 % of its
  expected latency (of the time elapsed, once it runs late), so a finished job is
  noticed within about 10 % of its latency (5 % median); about five polls per image.
- **polls count** (told, or learned from a 429 on a poll), or may count and the whole
  batch fits in one minute of the told rate if they are (:attr:`RateState.polls_scarce`):
  the first poll goes when the job is done with 85 % probability, the next at 97 %,
  99.5 %, then backing off, which is about 1.2 polls per image.

A poll that found the job ``QUEUED`` moves the next one to no sooner than it could
possibly finish (queued until then, plus a short service time). Every gap is at least
:data:`MIN_INTERVAL` and at most :data:`MAX_INTERVAL` seconds.
"""

from __future__ import annotations

from batchgen.control.flight import Flight
from batchgen.control.gate import RateState
from batchgen.control.latency import LatencyModel

__all__ = ["MAX_INTERVAL", "MIN_INTERVAL", "PROBE_FIRST", "Cadence"]

MIN_INTERVAL = 0.01
MAX_INTERVAL = 30.0
PROBE_FIRST = 0.05  # seconds after the submit: the probe's first look when polls are free
PROBE_FIRST_COUNTED = 0.5  # ... and when each poll costs a slot of the rate limit
FALLBACK_FIRST = 1.0  # the first look of a job waiting for the probe to teach the model
# ... when polls are scarce: every job waiting would otherwise spend a poll a second, then
# one each doubling, before the first completion (five each for 22 s jobs)
FALLBACK_FIRST_SCARCE = 30.0
DETECT = 0.1  # free polls: notice a finished job within this fraction of its latency
FIRST_FREE_QUANTILE = 0.05  # free polls: the first look when 5 % of such jobs are done
COUNTED_QUANTILES = (0.85, 0.97, 0.995)


class Cadence:
    """Poll times for flights, from the latency model and the rate gate's state."""

    def __init__(self, model: LatencyModel, rate: RateState) -> None:
        self.model = model
        self.rate = rate
        self._probe: Flight | None = None

    def release(self, flight: Flight) -> None:
        """``flight`` stopped polling; if it was the probe, the next job to ask takes over."""
        if self._probe is flight:
            self._probe = None

    def is_probe(self, flight: Flight) -> bool:
        """Whether ``flight`` is the job probing for the run's first completion."""
        return self._probe is flight

    def next_poll(self, flight: Flight, now: float) -> float:
        """The time (run clock) of ``flight``'s next status poll."""
        assert flight.accepted_at is not None, "a flight is polled only once submitted"
        base = flight.accepted_at
        last = flight.last_poll_at if flight.last_poll_at is not None else base
        counted = self.rate.polls_scarce
        service = self.model.service_time(flight.service_class)
        if service is None:
            when = self._unlearned(flight, base, last, counted)
        elif counted:
            when = self._counted(flight, base, last, service)
        else:
            when = self._free(flight, base, last, service)
        return min(max(when, last + MIN_INTERVAL, now), max(now, last + MAX_INTERVAL))

    def _unlearned(self, flight: Flight, base: float, last: float, counted: bool) -> float:
        if self._probe is None:
            self._probe = flight
        if self._probe is flight:
            first = PROBE_FIRST_COUNTED if counted else PROBE_FIRST
            if flight.polls == 0:
                return base + first
            growth = 1.0 if counted else 0.5  # the next look after 2x / 1.5x the time elapsed
            return last + max(first, (last - base) * growth)
        fallback = FALLBACK_FIRST_SCARCE if counted else FALLBACK_FIRST
        if flight.polls == 0:
            return base + fallback
        return last + max(fallback, last - base)

    def _free(self, flight: Flight, base: float, last: float, service: float) -> float:
        model = self.model
        expected = model.queue_wait() + service
        earliest = base + model.queue_wait() + service * model.ratio(FIRST_FREE_QUANTILE)
        if flight.polls == 0:
            when = earliest
        else:
            when = last + DETECT * max(expected, last - base)
        return self._not_before_start(flight, when, service * model.ratio(FIRST_FREE_QUANTILE))

    def _counted(self, flight: Flight, base: float, last: float, service: float) -> float:
        model = self.model
        k = flight.polls
        if k < len(COUNTED_QUANTILES):
            when = base + model.queue_wait() + service * model.ratio(COUNTED_QUANTILES[k])
        else:
            expected = model.queue_wait() + service
            when = last + 0.25 * max(expected, last - base)
        return self._not_before_start(flight, when, service * model.ratio(0.85))

    @staticmethod
    def _not_before_start(flight: Flight, when: float, service: float) -> float:
        """No sooner than a job seen QUEUED could finish: queued until then, plus ``service``."""
        if flight.last_state == "QUEUED" and flight.queued_until is not None:
            return max(when, flight.queued_until + service)
        if flight.last_state == "PROCESSING" and flight.processing_by is not None:
            started = flight.queued_until if flight.queued_until is not None else flight.accepted_at
            if started is not None:
                return max(when, started + service)
        return when
