"""``on_cron``: act at most once per cron tick, after the tick."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from headwater._errors import DefinitionError
from headwater.policies._base import Decision, PolicyContext, no_input_yet

__all__ = ["CronPolicy", "on_cron"]


@dataclass(frozen=True, slots=True)
class CronPolicy:
    """Due once per tick of ``expr`` in ``tz``; ticks are computed, never polled."""

    expr: str
    tz: str = "UTC"
    reacts_to_upstream: bool = False
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise DefinitionError(f"on_cron({self.expr!r}): unknown timezone {self.tz!r}") from exc
        try:
            CronSim(self.expr, datetime(2026, 1, 1, tzinfo=zone))
        except CronSimError as exc:
            raise DefinitionError(f"on_cron({self.expr!r}): not a cron expression: {exc}") from exc
        object.__setattr__(self, "_zone", zone)

    @property
    def name(self) -> str:
        return f"on_cron({self.expr!r}{'' if self.tz == 'UTC' else f', tz={self.tz!r}'})"

    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after ``after``.

        cronsim walks wall-clock time: started in the second pass of a repeated hour (fall
        back), it yields that hour's tick of the first pass, which is already past."""
        for tick in CronSim(self.expr, after.astimezone(self._zone)):
            if tick > after:
                return tick.astimezone(UTC)
        raise AssertionError("unreachable: cronsim stops after 50 years without a match")

    def last_tick(self, at: datetime) -> datetime | None:
        """The latest tick at or before ``at``.

        cronsim's reverse walk, started in the second pass of a repeated hour, passes over
        the tick of that hour's first pass (already past: 01:30 EDT when it is 01:10 EST) to
        the day before; the ticks forward of what it found up to ``at`` are the truth."""
        ticks = CronSim(self.expr, (at + timedelta(minutes=1)).astimezone(self._zone), reverse=True)
        last = next((tick for tick in ticks if tick <= at), None)
        if last is None:
            return None  # pragma: no cover - cronsim stops after 50 years without a match
        while (later := self.next_tick(last)) <= at:
            last = later
        return last.astimezone(UTC)

    def decide(self, ctx: PolicyContext) -> Decision:
        if ctx.due_tick is None:
            return Decision.idle(
                f"{ctx.state}; waiting for the next cron tick", notable=ctx.state != "fresh"
            )
        # Reasons that are recorded name no tick time: the same situation over many ticks is
        # one decision event, so the log does not grow with time.
        if ctx.has_inputs and ctx.state == "fresh":
            return Decision.idle("fresh at the cron tick", notable=False)
        if ctx.state == "failed":
            return Decision.idle("failed; a cron tick does not retry it")
        if ctx.nothing_arrived:
            return no_input_yet(ctx)
        if ctx.blockers:
            return Decision.wait("cron tick due, but waiting: " + "; ".join(ctx.blockers))
        return Decision.run(f"cron tick {ctx.due_tick.isoformat()} ({ctx.state})")


def on_cron(expr: str, tz: str = "UTC") -> CronPolicy:
    """At most once per tick of ``expr`` (in ``tz``), after the tick: always for an asset with
    no inputs, otherwise when it is stale or missing. Changes between ticks wait."""
    return CronPolicy(expr, tz)
