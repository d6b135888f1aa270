"""What the account's request history gives back: images past retention, and what a run cost.

The history (:mod:`batchgen.api.history`) is read here and by
:mod:`batchgen.engine.reconcile` (submits in doubt), never in the hot path:

- a request whose result is gone from the API (404) may still have its image at the
  history's ``generation_url`` (:meth:`Recovery.image_from_history`);
- at the end of a run (:meth:`Recovery.record_costs`), every request of the batch not
  priced yet (the answers' metrics price most) gets a ``cost`` line from the history;
  and when the run had submits in doubt, every request the history holds with the body
  of one of them that no job holds is an *orphan*: paid, never used. Orphans are priced,
  recorded (``cost`` with ``orphan: true``) and named in the summary, so its figure is
  what the account was charged.

When the history cannot be read the run goes on as it would without it, and says once
what that costs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Sequence

import anyio

from batchgen.api.history import (
    CLOCK_SKEW,
    TRIES,
    History,
    HistoryRow,
    HistoryUnavailable,
    Intent,
    body_matches,
    match,
)
from batchgen.control.flight import Flight
from batchgen.engine.reconcile import DEFAULT_HISTORY_LAG
from batchgen.outcome.summary import Summary
from batchgen.output.ledger import HISTORY_EVENT, LedgerWriter, format_ts
from batchgen.output.replay import HistoryRead, LedgerState

__all__ = ["Accepted", "Costs", "Recovery"]

log = logging.getLogger("batchgen")

HISTORY_PATIENCE = 600.0  # seconds the end of a run may spend reading the history for its cost

# Request id -> (job key, wall time it was accepted): every request this run knows it paid for.
Accepted = dict[str, tuple[str, float]]
# Request id -> (USD, how it ended: COMPLETED, FAILED or None).
Costs = dict[str, tuple[float, str | None]]


class Recovery:
    """Reads the request history for one run (``history`` None: no history to read).

    ``lag``: how long the history may take to show a request (``--history-lag``).
    """

    def __init__(
        self,
        history: History | None,
        ledger: LedgerWriter,
        summary: Summary,
        *,
        accepted: Accepted,
        wall_clock: Callable[[], float],
        lag: float = DEFAULT_HISTORY_LAG,
    ) -> None:
        self.history = history
        self.lag = lag
        self.ledger = ledger
        self.summary = summary
        self._accepted = accepted
        self._wall_clock = wall_clock
        self._warned = False

    def unavailable(self, why: str, consequence: str) -> None:
        """Say once that the history could not be read, and what that costs."""
        if not self._warned:
            self._warned = True
            log.warning("request history unavailable (%s): %s", why, consequence)
            self.summary.warnings.append(f"request history unavailable: {why}")

    async def image_from_history(self, flight: Flight) -> bool:
        """The result is gone (404): if the request history still has the image, download
        it from there instead of paying again. True when the job goes on that way."""
        request_id = flight.request_id
        if self.history is None or request_id is None or flight.history_checked:
            return False
        flight.history_checked = True
        try:
            row = await self.history.get(request_id)
        except HistoryUnavailable as exc:
            self.unavailable(str(exc), "requests past retention are submitted (and paid for) again")
            return False
        if row is None or row.status != "COMPLETED" or row.generation_url is None:
            return False
        log.info(
            "job %s: result of %s gone; its image is in the request history", flight.job.short_key, request_id
        )
        flight.from_history(row.generation_url)
        self.summary.from_history += 1
        return True

    async def record_costs(
        self,
        state: LedgerState,
        models: Iterable[str],
        *,
        answered: Costs,
        doubts: Sequence[Intent],
        in_doubt: Collection[str],
        failing: str | None = None,
        read_history: bool = True,
    ) -> None:
        """Price the batch: a ``cost`` line for each request not yet priced (``answered``: what
        this run's answers said, already in the ledger's lines), orphans of this run's
        submits in doubt (``doubts``; ``in_doubt``: the keys still in doubt), and the total
        in the summary. ``failing``: the history did not answer the run's last read (why);
        it is then tried once, not waited for again. Without ``read_history`` (an interrupted
        run, whose end is bounded by its grace; a run that cannot write) the history is not
        read and nothing is written: the summary gets what is known, the rest counted
        unpriced.

        The history is read only when something needs it, newest first and only back to
        the oldest request looked for (:meth:`~batchgen.api.history.History.scan`):
        a batch priced by its answers, with nothing in doubt, reads nothing. Requests an
        earlier read should have shown and did not price (``history_read`` lines) are not
        looked for again; each read that went all the way back is recorded as one.
        """
        requests = dict(state.requests)
        requests.update(self._accepted)
        costs = state.costs
        models = sorted(models)
        look = {
            request_id: at
            for request_id, (_, at) in requests.items()
            if request_id not in costs
            and request_id not in answered
            and not _settled(at, state.history_reads, models, lag=self.lag)
        }
        found: dict[str, tuple[float, str | None]] = {}
        rows: list[HistoryRow] = []
        if read_history and (look or doubts) and self.history is not None:
            since = min([*look.values(), *(d.at for d in doubts)])
            began = self._wall_clock()
            expected = sum(1 for _, at in requests.values() if at >= since)
            bodies = [d.body for d in doubts]
            tries = 1 if failing else TRIES
            try:
                with anyio.fail_after(30 if failing else HISTORY_PATIENCE):
                    for model in models:
                        # Orphans need every row back to the first doubt; costs only until all are read.
                        wanted = () if doubts else set(look) - found.keys()
                        seen: set[str] = set()
                        read = 0
                        async for row in self.history.scan(
                            since=since,
                            until=began,
                            model=model,
                            wanted=wanted,
                            expected=expected,
                            tries=tries,
                        ):
                            read += 1
                            if row.request_id in look:
                                seen.add(row.request_id)
                                if row.cost is not None:
                                    found[row.request_id] = (row.cost, row.status)
                            elif row.body is not None and any(body_matches(b, row.body) for b in bodies):
                                rows.append(row)
                        if wanted and wanted <= seen:
                            break  # stopped at the last one: every request looked for was read
                        # Read back to `since`: what it did not price is not in the history.
                        await self.ledger.write(
                            HISTORY_EVENT,
                            "",
                            model=model,
                            since=format_ts(since - CLOCK_SKEW),
                            until=format_ts(began),
                            rows=read,
                            durable=False,
                        )
            except (HistoryUnavailable, TimeoutError) as exc:
                self.unavailable(str(exc) or "timed out", "the cost of the run is not known")
        for request_id, (usd, status) in found.items():
            await self.ledger.write(
                "cost", requests[request_id][0], request_id=request_id, usd=usd, status=status
            )
        orphan_usd = dict(state.orphan_costs())
        found_orphans = 0
        known = set(requests) | set(state.orphans)
        for row, key in self._orphans(rows, doubts, in_doubt, known=known):
            usd = row.cost if row.cost is not None else 0.0
            orphan_usd[row.request_id] = usd
            found_orphans += 1
            await self.ledger.write(
                "cost", key, request_id=row.request_id, usd=usd, status=row.status, orphan=True
            )
            log.warning(
                "request %s (%s) has the body of job %s's submit in doubt, yet no job holds it: paid, unused",
                row.request_id,
                row.status or "state unknown",
                key[:12],
            )
        priced = [p for rid in requests if (p := costs.get(rid) or answered.get(rid) or found.get(rid))]
        if priced or orphan_usd:
            self.summary.cost_usd = round(sum(usd for usd, _ in priced) + sum(orphan_usd.values()), 6)
            self.summary.cost_failed_usd = round(sum(usd for usd, status in priced if status == "FAILED"), 6)
        self.summary.orphans = len(orphan_usd)
        self.summary.orphan_usd = round(sum(orphan_usd.values()), 6)
        # A submit in doubt that was not settled (left not known, or sent again unchecked)
        # may have been paid: unpriced too, unless found here as an orphan.
        unsettled = self.summary.uncertain + self.summary.unreconciled - found_orphans
        self.summary.cost_unknown = len(requests) - len(priced) + max(0, unsettled)

    @staticmethod
    def _orphans(
        rows: Iterable[HistoryRow], doubts: Sequence[Intent], in_doubt: Collection[str], *, known: set[str]
    ) -> list[tuple[HistoryRow, str]]:
        """Rows with the body of a submit in doubt of this run that no job holds: the jobs still
        in doubt take theirs first (found late: a rerun adopts them); the rest are orphans."""
        if not doubts:
            return []
        unknown = [r for r in rows if r.request_id not in known and r.body is not None]
        late = match([d for d in doubts if d.key in in_doubt], unknown, known=set())
        taken = {row.request_id for row in late.values()}
        earliest = min(d.at for d in doubts) - CLOCK_SKEW
        found: list[tuple[HistoryRow, str]] = []
        for row in unknown:
            if row.request_id in taken or (row.created is not None and row.created < earliest):
                continue
            assert row.body is not None
            owner = next((d.key for d in doubts if body_matches(d.body, row.body)), None)
            if owner is not None:
                found.append((row, owner))
        return found


def _settled(at: float, reads: Sequence[HistoryRead], models: Sequence[str], *, lag: float) -> bool:
    """Whether a request accepted at ``at`` (the ledger's clock) was looked for already: a
    read of each model went back past it and was made long enough after it (the lag, and
    the clock skew both ways) that the history must have shown it."""
    if not reads or not models:
        return False
    return all(
        any(r.model == model and r.since + CLOCK_SKEW <= at <= r.until - lag - CLOCK_SKEW for r in reads)
        for model in models
    )
