"""What the account's request history gives back: lost submits, images past retention, costs.

The history (:mod:`batchgen.api.history`) is read only here, never in the hot path:

- submits whose answer never came back (the run was killed between the POST and the
  answer) are looked for by their body before anything is submitted (:meth:`Recovery.reconcile`);
  a request found is adopted and polled, not paid for again;
- a request whose result is gone from the API (404) may still have its image at the
  history's ``generation_url`` (:meth:`Recovery.image_from_history`);
- at the end of a run, every request of the batch not yet priced gets a ``cost`` line
  (:meth:`Recovery.record_costs`).

When the history cannot be read the run goes on as it would without it, and says once
what that costs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio

from batchgen.api.history import History, HistoryUnavailable, Intent, match
from batchgen.control.flight import Flight
from batchgen.outcome.summary import Summary
from batchgen.output.ledger import LedgerWriter
from batchgen.output.replay import LedgerState
from batchgen.output.resume import Reconcile

__all__ = ["Accepted", "Recovery"]

log = logging.getLogger("batchgen")

# Request id -> (job key, wall time it was accepted): every request this run knows it paid for.
Accepted = dict[str, tuple[str, float]]


class Recovery:
    """Reads the request history for one run (``history`` None: no history to read)."""

    def __init__(
        self,
        history: History | None,
        ledger: LedgerWriter,
        summary: Summary,
        *,
        accepted: Accepted,
        adopt: Callable[[Flight, str, float], Awaitable[None]],
        wall_clock: Callable[[], float],
    ) -> None:
        self.history = history
        self.ledger = ledger
        self.summary = summary
        self._accepted = accepted
        self._adopt = adopt
        self._wall_clock = wall_clock
        self._warned = False

    def unavailable(self, why: str, consequence: str) -> None:
        """Say once that the history could not be read, and what that costs."""
        if not self._warned:
            self._warned = True
            log.warning("request history unavailable (%s): %s", why, consequence)
            self.summary.warnings.append(f"request history unavailable: {why}")

    async def reconcile(
        self, in_transit: list[tuple[Flight, Reconcile]], state: LedgerState
    ) -> tuple[list[Flight], list[Flight]]:
        """Find the submits a killed run sent without seeing the answer; adopt those found.

        Returns the flights to poll (found: recorded ``submitted`` with ``recovered``) and
        those to submit (not on the server, or the history could not be read).
        """
        intents = [Intent(flight.job.key, action.body, action.intent_at) for flight, action in in_transit]
        found: dict[str, Any] = {}
        if self.history is None:
            why = "no history URL"
        else:
            try:
                since = min(i.at for i in intents)
                models = {flight.job.model for flight, _ in in_transit}
                rows = [
                    row
                    for model in sorted(models)
                    for row in await self.history.rows(since=since, until=self._wall_clock(), model=model)
                ]
                found = match(intents, rows, known=state.request_ids)
                why = ""
            except HistoryUnavailable as exc:
                why = str(exc)
        if why:
            self.unavailable(
                why, f"{len(intents)} submits whose answer was lost are sent again and may be paid twice"
            )
            self.summary.unreconciled += len(intents)
        adopted: list[Flight] = []
        unknown: list[Flight] = []
        for flight, action in in_transit:
            row = found.get(flight.job.key)
            if row is None:
                unknown.append(flight)
                continue
            created = row.created if row.created is not None else action.intent_at
            await self._adopt(flight, row.request_id, created)
            adopted.append(flight)
            self.summary.recovered += 1
        if adopted:
            log.info(
                "found %d submits of an interrupted run in the request history: polling them", len(adopted)
            )
        return adopted, unknown

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

    async def record_costs(self, state: LedgerState, models: Iterable[str]) -> None:
        """Write a ``cost`` line for each request of the batch not yet priced (from the
        history, in pages), and put the batch's cost in the summary."""
        requests = dict(state.requests)
        requests.update(self._accepted)
        costs = dict(state.costs)
        unpriced = {rid: at for rid, (_, at) in requests.items() if rid not in costs}
        if unpriced and self.history is not None:
            try:
                with anyio.fail_after(120):
                    rows = {
                        row.request_id: row
                        for model in sorted(models)
                        for row in await self.history.rows(
                            since=min(unpriced.values()), until=self._wall_clock(), model=model
                        )
                    }
            except (HistoryUnavailable, TimeoutError) as exc:
                self.unavailable(str(exc) or "timed out", "the cost of the run is not known")
                rows = {}
            for request_id in unpriced:
                row = rows.get(request_id)
                if row is None or row.cost is None:
                    continue
                costs[request_id] = (row.cost, row.status)
                key = requests[request_id][0]
                await self.ledger.write("cost", key, request_id=request_id, usd=row.cost, status=row.status)
        priced = [costs[rid] for rid in requests if rid in costs]
        if priced:
            self.summary.cost_usd = round(sum(usd for usd, _ in priced), 6)
            self.summary.cost_failed_usd = round(sum(usd for usd, status in priced if status == "FAILED"), 6)
        self.summary.cost_unknown = len(requests) - len(priced)
