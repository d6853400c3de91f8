"""``on_cron``: act at most once per cron tick, after the tick."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from headwater._errors import DefinitionError
from headwater.policies._base import Decision, PolicyContext, no_input_yet

__all__ = ["CronPolicy", "on_cron"]

_ZERO = timedelta(0)
_SECOND = timedelta(seconds=1)
# No zone changes its offset twice within four days (of every change tzdata lists, the
# closest two are Africa/Freetown's of 1939, 95.7 hours apart): offsets probed two days
# apart that agree have no change between them.
_PROBE = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class CronPolicy:
    """Due once per tick of ``expr`` in ``tz``; ticks are computed, never polled.

    The ticks are one set of instants, from which ``next_tick`` and ``last_tick`` both
    read, so that they agree in every zone. The wall clock of ``tz`` reads one time at
    each instant, but a time may be read twice (the clock set back) or never (set
    forward); the expression is matched against the wall clock as follows.

    * An expression with a fixed time of day (5 fields, neither minute nor hour starting
      with ``*``: ``30 1 * * *``, ``0,30 2 * * 1-5``) ticks once per matching wall time:
      at its first reading if it is read twice, and where the clock jumps forward over it
      if it is never read (``30 2 * * *`` ticks at 03:00 when 02:00 becomes 03:00, once
      however many matching times the jump skips).
    * Any other expression (``*/5 * * * *``, ``*/5 2 * * *``, ``0 */2 * * *``, any with
      seconds) ticks at every instant at which the wall clock reads a matching time:
      twice for a time read twice, never for a time skipped. A job every N minutes goes
      on every N minutes across the change.

    That is cronsim's rule (from Debian cron), which cronsim applies by walking wall-clock
    time; its forward and reverse walks disagreed around some changes (half-hour ones as
    Lord Howe's, permanent ones as Pyongyang's of 2015-08-15). Here the wall clock is read
    only through UTC instants: cronsim matches naive wall times, and the zone's offset
    changes are found in UTC and walked over one at a time.
    """

    expr: str
    tz: str = "UTC"
    reacts_to_upstream: bool = False
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _fixed_time: bool = field(init=False, repr=False, compare=False)
    _fixed_offset: bool = field(init=False, repr=False, compare=False)

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
        fields = self.expr.split()  # the class docstring's test (cronsim's own)
        fixed = len(fields) == 5 and not fields[0].startswith("*") and not fields[1].startswith("*")
        object.__setattr__(self, "_fixed_time", fixed)
        # UTC (the default) and Etc/GMT+N never change offset: no probes for changes, which
        # cost most for ticks far apart (a yearly one: 0.2 ms a call, against 30 µs)
        object.__setattr__(self, "_fixed_offset", self.tz == "UTC" or self.tz.startswith("Etc/"))

    @property
    def name(self) -> str:
        return f"on_cron({self.expr!r}{'' if self.tz == 'UTC' else f', tz={self.tz!r}'})"

    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after ``after`` (see the class docstring for which
        instants are ticks). Walks forward over the zone's offset changes, in UTC."""
        at, inclusive = after.astimezone(UTC), False
        while True:
            offset = self._offset(at)
            wall = self._wall_match(_naive(at + offset), inclusive, forward=True)
            if wall is None:
                raise AssertionError("unreachable: cronsim stops after 50 years without a match")
            tick = (wall - offset).replace(tzinfo=UTC)
            change = self._change(at, tick, offset)
            if change is None:  # ``wall`` is read at ``tick``, in the offset of ``at``
                if self._is_first(wall, tick):
                    return tick
                at, inclusive = tick, False  # its first reading is past
                continue
            # no match is read before the offset changes; a gap (the clock jumps forward)
            # that skips one, the first being ``wall``, ticks when it ends
            if self._fixed_time and wall < _naive(change + self._offset(change)):
                return change
            at, inclusive = change, True

    def last_tick(self, at: datetime) -> datetime | None:
        """The latest tick at or before ``at``: the same ticks as ``next_tick``'s, walked
        backward over the zone's offset changes, in UTC."""
        at, inclusive = at.astimezone(UTC), True
        while True:
            offset = self._offset(at)
            wall = self._wall_match(_naive(at + offset), inclusive, forward=False)
            if wall is None:
                return None  # pragma: no cover - cronsim stops after 50 years without a match
            tick = (wall - offset).replace(tzinfo=UTC)
            start = self._change(at, tick, offset)
            if start is None:
                if self._is_first(wall, tick):
                    return tick
                at, inclusive = tick, False
                continue
            # ``start`` is the first instant in the offset of ``at``: no match is read from
            # there to ``at``; a gap that ends at ``start`` and skips a match ticks there
            before = self._offset(start - _SECOND)
            if self._fixed_time and before < offset and wall - before >= _naive(start):
                return start
            at, inclusive = start - _SECOND, True

    def _offset(self, instant: datetime) -> timedelta:
        offset = instant.astimezone(self._zone).utcoffset()
        assert offset is not None
        return offset

    def _wall_match(self, wall: datetime, inclusive: bool, *, forward: bool) -> datetime | None:
        """The first wall time (naive) matching the expression after ``wall``, or the last
        before it (at or, if ``inclusive``, also at it); None if cronsim gives up."""
        whole = wall.replace(microsecond=0)
        if forward:  # cronsim yields the first match after its start
            start = whole if wall.microsecond or not inclusive else whole - _SECOND
        else:  # reversed: the first match before its start
            start = whole + _SECOND if inclusive else whole
            if wall.microsecond and not inclusive:
                start += _SECOND
        return next(CronSim(self.expr, start, reverse=not forward), None)

    def _change(self, at: datetime, tick: datetime, offset: timedelta) -> datetime | None:
        """None if the zone keeps ``offset`` from ``at`` to ``tick``. Otherwise, for a later
        ``tick``, the first instant after ``at`` in another offset; for an earlier one, the
        first instant of the run of ``offset`` that holds ``at``."""
        if self._fixed_offset:
            return None
        step = _PROBE if tick > at else -_PROBE
        near = at
        while near != tick:
            far = min(near + step, tick) if step > _ZERO else max(near + step, tick)
            if self._offset(far) != offset:
                # bisect whole seconds; ``near`` is in ``offset``, ``far`` is not
                lo, hi = _whole(near, up=False), _whole(far, up=step > _ZERO)
                while abs(hi - lo) > _SECOND:
                    mid = lo + _whole_seconds((hi - lo) / 2)
                    if self._offset(mid) == offset:
                        lo = mid
                    else:
                        hi = mid
                return hi if step > _ZERO else lo
            near = far
        return None

    def _is_first(self, wall: datetime, tick: datetime) -> bool:
        """Whether ``tick``, at which the wall clock reads ``wall``, is a tick: always, but
        for a fixed time of day only the first of two readings of a repeated wall time."""
        if not self._fixed_time:
            return True
        return wall.replace(tzinfo=self._zone, fold=0).astimezone(UTC) == tick

    def decide(self, ctx: PolicyContext) -> Decision:
        # A failed asset with inputs waits for one of them (or its code) to change, as any
        # policy's; one with none has only its ticks, and a tick runs it again: an hourly
        # poller that failed through a short outage must not stay failed for good.
        held = ctx.state == "failed" and ctx.has_inputs
        if ctx.due_tick is None:
            return Decision.idle(
                _HELD_FAILED if held else f"{ctx.state}; waiting for the next cron tick",
                notable=ctx.state != "fresh",
            )
        # Reasons that are recorded name no tick time: the same situation over many ticks is
        # one decision event, so the log does not grow with time.
        if ctx.has_inputs and ctx.state == "fresh":
            return Decision.idle("fresh at the cron tick", notable=False)
        if held:
            return Decision.idle(_HELD_FAILED)
        if ctx.nothing_arrived:
            return no_input_yet(ctx)
        if ctx.blockers:
            return Decision.wait("cron tick due, but waiting: " + "; ".join(ctx.blockers))
        return Decision.run(f"cron tick {ctx.due_tick.isoformat()} ({ctx.state})")


_HELD_FAILED = (
    "failed; a cron tick does not retry it: it runs again once an input or its code "
    "changes, or when asked"
)


def on_cron(expr: str, tz: str = "UTC") -> CronPolicy:
    """At most once per tick of ``expr`` (in ``tz``), after the tick: always for an asset with
    no inputs, otherwise when it is stale or missing. Changes between ticks wait."""
    return CronPolicy(expr, tz)


def _naive(instant: datetime) -> datetime:
    return instant.replace(tzinfo=None)


def _whole(instant: datetime, *, up: bool) -> datetime:
    """``instant`` rounded to a whole second, down or up."""
    whole = instant.replace(microsecond=0)
    return whole + _SECOND if up and instant.microsecond else whole


def _whole_seconds(span: timedelta) -> timedelta:
    return timedelta(seconds=int(span.total_seconds()))  # toward zero
