"""A run's ``run_started``: journaled before its function starts, committed with its end.

See :mod:`headwater.eventlog._starts` for why the journal is enough for a crash. A run that is
still going after ``ALONE_AFTER_S`` has its start committed on its own, so that the log (and a
backup, and ``headwater log``) shows it while it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from headwater._events import Event
from headwater._storage import StorageFailure
from headwater.eventlog import SmallValue
from headwater.planning import NodeKey, NodeRecord

if TYPE_CHECKING:
    from headwater.execution._decided import Basis
    from headwater.execution._engine import Engine

__all__ = ["ALONE_AFTER_S", "RunStart"]

ALONE_AFTER_S = 0.05
"""Below this, a run's start waits for its end's transaction: one commit per trivial run, not
two (a commit is ~80 µs of a ~0.6 ms run)."""


class RunStart:
    def __init__(self, engine: Engine, event: Event) -> None:
        """Journal ``event`` (raises StorageFailure: the run must not start then, and the
        engine rides out the outage as for a commit that fails)."""
        assert event.run_id is not None
        try:
            engine.starts.write(event)  # on the loop: ~1 µs into the page cache
        except StorageFailure as failure:
            engine.storage_failed(failure)
            raise
        self.engine = engine
        self.event = event
        self.run_id = event.run_id
        self.recorded = False
        self._alone: asyncio.Task[Sequence[Event]] | None = None
        self._timer = asyncio.get_running_loop().call_later(ALONE_AFTER_S, self._commit_alone)

    def _commit_alone(self) -> None:
        self._alone = asyncio.ensure_future(self._append([]))

    async def _append(
        self,
        events: Sequence[Event],
        values: Mapping[NodeKey, SmallValue | None] | None = None,
        decided_on: Mapping[NodeKey, NodeRecord | None] | None = None,
        basis: Basis | None = None,
        gather: bool = False,
    ) -> Sequence[Event]:
        written = await self.engine.append(
            [self.event, *events], values=values, decided_on=decided_on, basis=basis,
            gather=gather,
        )  # fmt: skip
        self.recorded = True
        self.engine.starts.settle([self.run_id])
        return written

    async def append_with(
        self,
        events: Sequence[Event],
        values: Mapping[NodeKey, SmallValue | None] | None = None,
        decided_on: Mapping[NodeKey, NodeRecord | None] | None = None,
        basis: Basis | None = None,
    ) -> Sequence[Event]:
        """Append the run's ``events``, with its start if the log does not hold it yet;
        return those written (see :meth:`Engine.append` for ``decided_on``).

        With other runs under way, one may have ended in this same turn of the event loop
        (the threads hand results back together): the ends are gathered into one commit."""
        self._timer.cancel()
        gather = len(self.engine.cycle.in_flight) > 1
        if self._alone is not None:
            # shielded: a cancelled run must not cancel its start's commit under way. Its
            # StorageFailure is this append's too while the engine is degraded; once the
            # outage is over (the run went on), the start is written with the end instead.
            try:
                await asyncio.shield(self._alone)
            except StorageFailure:
                if self.engine.degraded is not None:
                    raise
        if self.recorded:
            return await self.engine.append(
                events, values=values, decided_on=decided_on, basis=basis, gather=gather
            )
        return await self._append(events, values, decided_on, basis, gather)

    def close(self) -> None:
        """The run is over. A start the log could not take stays with the engine, which
        records it once the disk takes writes again (the run is then abandoned, as cut off)."""
        self._timer.cancel()
        alone = self._alone
        if alone is not None and not alone.done():
            alone.add_done_callback(lambda _: self._strand())
        else:
            self._strand()

    def _strand(self) -> None:
        if self._alone is not None and not self._alone.cancelled():
            self._alone.exception()  # retrieved: it was this run's StorageFailure, reported
        if not self.recorded:
            self.engine.stranded[self.run_id] = self.event
