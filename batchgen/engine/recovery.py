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
from batchgen.outcome.summary import Summary
from batchgen.output.ledger import LedgerWriter
from batchgen.output.replay import LedgerState

__all__ = ["Accepted", "Costs", "Recovery"]

log = logging.getLogger("batchgen")

# Request id -> (job key, wall time it was accepted): every request this run knows it paid for.
Accepted = dict[str, tuple[str, float]]
# Request id -> (USD, how it ended: COMPLETED, FAILED or None).
Costs = dict[str, tuple[float, str | None]]


class Recovery:
    """Reads the request history for one run (``history`` None: no history to read)."""

    def __init__(
        self,
        history: History | None,
        ledger: LedgerWriter,
        summary: Summary,
        *,
        accepted: Accepted,
        wall_clock: Callable[[], float],
    ) -> None:
        self.history = history
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
    ) -> None:
        """Price the batch: a ``cost`` line for each request not yet priced (``answered``: what
        this run's answers said, already in the ledger's lines), orphans of this run's
        submits in doubt (``doubts``; ``in_doubt``: the keys still in doubt), and the total
        in the summary. ``failing``: the history did not answer the run's last read (why);
        it is then tried once, not waited for again."""
        requests = dict(state.requests)
        requests.update(self._accepted)
        costs = dict(state.costs)
        for request_id, priced_by_answer in answered.items():
            costs.setdefault(request_id, priced_by_answer)
        unpriced = {rid: at for rid, (_, at) in requests.items() if rid not in costs}
        rows: dict[str, HistoryRow] = {}
        if (unpriced or doubts) and self.history is not None:
            since = min([*unpriced.values(), *(d.at for d in doubts)])
            tries = 1 if failing else TRIES
            try:
                with anyio.fail_after(30 if failing else 120):
                    rows = {
                        row.request_id: row
                        for model in sorted(models)
                        for row in await self.history.rows(
                            since=since,
                            until=self._wall_clock(),
                            model=model,
                            tries=tries,
                        )
                    }
            except (HistoryUnavailable, TimeoutError) as exc:
                self.unavailable(str(exc) or "timed out", "the cost of the run is not known")
        for request_id in unpriced:
            row = rows.get(request_id)
            if row is None or row.cost is None:
                continue
            costs[request_id] = (row.cost, row.status)
            key = requests[request_id][0]
            await self.ledger.write("cost", key, request_id=request_id, usd=row.cost, status=row.status)
        orphan_usd = dict(state.orphan_costs())
        found_orphans = 0
        for row, key in self._orphans(
            rows.values(), doubts, in_doubt, known=set(requests) | set(state.orphans)
        ):
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
        priced = [costs[rid] for rid in requests if rid in costs]
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
