"""Time partitions: hourly, daily, weekly and monthly windows in a timezone.

A window is a span of real time ``[start, end)`` (UTC instants) named by its local start. Days,
weeks and months are calendar windows: a day is a calendar day even when DST makes it 23 or 25
hours long. Hours are real hours: on a fall-back day the repeated local hour is two partitions,
the second written with its UTC offset (``2026-10-25T02:00+01:00``), so a day of hours has
23, 24 or 25 of them. Time partitions exist up to the last *complete* window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from headwater._errors import DefinitionError, PartitionKeyError
from headwater.definitions._partitions import PartitionContext, PartitionsDefinition

__all__ = [
    "DailyPartitions",
    "HourlyPartitions",
    "MonthlyPartitions",
    "TimePartitions",
    "WeeklyPartitions",
]

T = TypeVar("T")
_TICK = timedelta(microseconds=1)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_CACHE_LIMIT = 1 << 16
FIRST_YEAR, LAST_YEAR = 1000, 9000
"""Starts and ends lie in these years, far enough from datetime's limits that windows,
offsets and deadlines computed from them never overflow."""
_EXACT_HOURS = 48
"""Hourly offsets up to this many windows are counted window by window."""


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise DefinitionError(f"unknown timezone {tz!r} in a partitions definition") from exc


def _parse_start(value: str | date | datetime, fmt: str, what: str) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        for candidate in (fmt, "%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m"):
            try:
                return datetime.strptime(value, candidate)
            except ValueError:
                continue
    raise DefinitionError(f"{what}: {value!r} is not a date such as '2026-01-01'")


class TimePartitions(PartitionsDefinition):
    """Consecutive windows from ``start`` (inclusive) to ``end`` (exclusive), in ``tz``.

    Subclasses say how long a window is (``_floor``: the start of the window holding an instant;
    ``_after``: the end of the window starting at an instant) and how it is named.
    """

    unit = "window"
    rank = 0
    """Orders the kinds by window length: a finer partitioning has a lower rank."""
    _format = "%Y-%m-%d"
    _forward = False
    """Whether a ``start`` inside a window begins at the next window rather than this one."""

    def __init__(
        self,
        start: str | date | datetime,
        end: str | date | datetime | None = None,
        tz: str = "UTC",
    ) -> None:
        name = type(self).__name__
        self.tz = tz
        self._zone = _zone(tz)
        start, end = self._local_if_aware(start), self._local_if_aware(end)
        naive_start = self._in_calendar(_parse_start(start, self._format, f"{name} start"), "start")
        first = self._floor(self._resolve(naive_start))
        if self._forward and first < self._resolve(naive_start):
            first = self._after(first)
        self._first = first
        self.start = self._local(first)
        self.end = (
            None
            if end is None
            else self._in_calendar(_parse_start(end, self._format, f"{name} end"), "end")
        )
        self._end = None if self.end is None else self._resolve(self.end)
        if self._end is not None and self._end < self._after(first):
            raise DefinitionError(f"{name}: end {end!r} leaves no complete window after {start!r}")
        self._keys_cache: tuple[datetime | None, list[str]] = (None, [])
        self._starts: dict[str, datetime] = {}
        self._ends: dict[datetime, datetime] = {}
        """Window start -> end (see :meth:`following`)."""

    def _local_if_aware(self, value: T) -> T:
        """An aware datetime is an instant: its wall-clock time in ``tz``."""
        if isinstance(value, datetime) and value.tzinfo is not None:
            return self._local(value)  # type: ignore[return-value]
        return value

    def _in_calendar(self, naive: datetime, what: str) -> datetime:
        if not FIRST_YEAR <= naive.year <= LAST_YEAR:
            raise DefinitionError(
                f"{type(self).__name__} {what} {naive.date()} is outside the years "
                f"{FIRST_YEAR}-{LAST_YEAR}"
            )
        return naive

    # -- the calendar a subclass defines ---------------------------------------------------

    def _floor(self, instant: datetime) -> datetime:
        raise NotImplementedError

    def _after(self, start: datetime) -> datetime:
        raise NotImplementedError

    def _label(self, start: datetime) -> str:
        return self._local(start).strftime(self._format)

    def _parse_label(self, key: str) -> datetime | None:
        """The start instant of the window ``key`` names, if it is written canonically."""
        try:
            naive = datetime.strptime(key, self._format)
        except ValueError:
            return None
        instant = self._resolve(naive)
        return instant if self._floor(instant) == instant else None

    # -- shared ---------------------------------------------------------------------------

    def _resolve(self, naive: datetime) -> datetime:
        """The instant of a local wall-clock time (a time skipped by DST: the moment of the
        jump; a repeated one: its first occurrence)."""
        return naive.replace(tzinfo=self._zone).astimezone(UTC)

    def _local(self, instant: datetime) -> datetime:
        return instant.astimezone(self._zone).replace(tzinfo=None)

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and isinstance(other, TimePartitions)
            and (self._first, self._end, self.tz) == (other._first, other._end, other.tz)
        )

    def __hash__(self) -> int:
        return hash((type(self), self._first, self._end, self.tz))

    def __repr__(self) -> str:
        end = "" if self.end is None else f", end={self.end.strftime(self._format)!r}"
        return f"{type(self).__name__}(start={self._label(self._first)!r}{end}, tz={self.tz!r})"

    def describe(self) -> str:
        return repr(self)

    def window_start(self, key: str) -> datetime:
        """The UTC start of the window named ``key``, which may lie outside the range;
        raises :class:`PartitionKeyError` for a string that names no window."""
        start = self._starts.get(key)
        if start is not None:
            return start
        start = self._parse_label(key)
        if start is None or self._label(start) != key:
            raise PartitionKeyError(
                f"partition {key!r} is not a key of {self.describe()}: {self._hint(key)}"
            )
        if len(self._starts) >= _CACHE_LIMIT:
            self._starts.clear()
        self._starts[key] = start
        return start

    def _hint(self, key: str) -> str:
        try:
            naive = self._loose(key)
        except ValueError:
            return f"keys look like {self._label(self._first)!r}"
        if self._local(self._resolve(naive)) != naive:
            return f"{naive.strftime(self._format)} does not exist in {self.tz}: the clocks skip it"
        suggestion = self._label(self._floor(self._resolve(naive)))
        if naive.strftime(self._format) != key[: len(naive.strftime(self._format))]:
            return f"keys are written in full (did you mean {suggestion!r}?)"
        article = "an" if self.unit == "hour" else "a"
        return f"it is not the start of {article} {self.unit} in {self.tz} (did you mean {suggestion!r}?)"

    def _loose(self, key: str) -> datetime:
        return datetime.strptime(key, self._format)

    def in_range(self, start: datetime) -> bool:
        """Whether the window starting at ``start`` is one of this definition's."""
        return start >= self._first and (self._end is None or self.following(start) <= self._end)

    def range_problem(self, start: datetime) -> str | None:
        if start < self._first:
            return f"is before the first partition of {self.describe()}"
        if self._end is not None and self.following(start) > self._end:
            return f"is after the last partition of {self.describe()}"
        return None

    def check_key(self, key: str) -> None:
        start = self.window_start(key)
        if (problem := self.range_problem(start)) is not None:
            raise PartitionKeyError(f"partition {key!r} is not a key: it {problem}")

    def label(self, start: datetime) -> str:
        return self._label(start)

    def containing(self, instant: datetime) -> datetime:
        """The start of the window that holds ``instant``."""
        return self._floor(instant)

    def following(self, start: datetime) -> datetime:
        """The end of the window starting at ``start`` (memoized: readers of all partitions
        ask it of each key they read, 1.5 µs a key to compute)."""
        end = self._ends.get(start)
        if end is None:
            if len(self._ends) >= _CACHE_LIMIT:
                self._ends.clear()
            end = self._ends[start] = self._after(start)
        return end

    def preceding(self, start: datetime) -> datetime:
        return self._floor(start - _TICK)

    def shift(self, start: datetime, windows: int) -> datetime:
        for _ in range(abs(windows)):
            start = self._after(start) if windows > 0 else self.preceding(start)
        return start

    def starts_within(self, begin: datetime, end: datetime) -> list[datetime]:
        """The starts of the windows that begin in ``[begin, end)``."""
        out: list[datetime] = []
        current = self._floor(begin)
        if current < begin:
            current = self._after(current)
        while current < end:
            out.append(current)
            current = self._after(current)
        return out

    def _newest_start(self, now: datetime) -> datetime | None:
        """The start of the last window that has ended by ``now`` (and by ``end``)."""
        limit = now if self._end is None else min(now, self._end)
        candidate = self.preceding(self._floor(limit))
        return candidate if candidate >= self._first else None

    def keys(self, ctx: PartitionContext) -> Sequence[str]:
        newest = self._newest_start(ctx.now)
        if newest is None:
            return []
        if self._keys_cache[0] != newest:
            out: list[str] = []
            current = self._first
            while current <= newest:
                out.append(self._label(current))
                current = self._after(current)
            self._keys_cache = (newest, out)
        return self._keys_cache[1]

    def has_key(self, key: str, ctx: PartitionContext) -> bool:
        try:
            start = self.window_start(key)
        except PartitionKeyError:
            return False
        end = self.following(start)
        return start >= self._first and end <= ctx.now and (self._end is None or end <= self._end)

    def newest_keys(self, ctx: PartitionContext) -> Sequence[str] | None:
        newest = self._newest_start(ctx.now)
        return [] if newest is None else [self._label(newest)]

    def ended_between(self, begin: datetime, end: datetime, ctx: PartitionContext) -> list[str]:
        out: list[str] = []
        for start in self.starts_within(self.preceding(self._floor(begin)), end):
            stop = self.following(start)
            if (
                begin <= stop < end
                and start >= self._first
                and stop <= ctx.now
                and (self._end is None or stop <= self._end)
            ):
                out.append(self._label(start))
        return out

    def next_window_end(self, now: datetime) -> datetime | None:
        boundary = self._after(self._floor(now))
        if self._end is not None and boundary > self._end:
            return None
        return max(boundary, self._after(self._first))

    def window(self, key: str) -> tuple[datetime, datetime]:
        """The UTC start and end of the window named ``key``."""
        start = self.window_start(key)
        return start, self.following(start)

    def window_end(self, key: str) -> datetime | None:
        return self.window(key)[1]


class _CalendarPartitions(TimePartitions):
    """Windows of whole local calendar units (days, weeks, months)."""

    def _floor_local(self, naive: datetime) -> datetime:
        raise NotImplementedError

    def _next_local(self, naive: datetime) -> datetime:
        raise NotImplementedError

    def _floor(self, instant: datetime) -> datetime:
        return self._resolve(self._floor_local(self._local(instant)))

    def _after(self, start: datetime) -> datetime:
        return self._resolve(self._next_local(self._floor_local(self._local(start))))

    def _label(self, start: datetime) -> str:
        return self._floor_local(self._local(start)).strftime(self._format)

    def _add(self, naive: datetime, windows: int) -> datetime:
        raise NotImplementedError

    def shift(self, start: datetime, windows: int) -> datetime:
        return self._resolve(self._add(self._floor_local(self._local(start)), windows))

    def _parse_label(self, key: str) -> datetime | None:
        try:
            naive = datetime.strptime(key, self._format)
        except ValueError:
            return None
        if self._floor_local(naive) != naive:
            return None
        return self._resolve(naive)


class DailyPartitions(_CalendarPartitions):
    """One partition per calendar day in ``tz``, keyed ``"2026-01-01"``; ``end`` is exclusive."""

    unit, rank = "day", 2

    def _floor_local(self, naive: datetime) -> datetime:
        return naive.replace(hour=0, minute=0, second=0, microsecond=0)

    def _next_local(self, naive: datetime) -> datetime:
        return naive + timedelta(days=1)

    def _add(self, naive: datetime, windows: int) -> datetime:
        return naive + timedelta(days=windows)


class WeeklyPartitions(_CalendarPartitions):
    """One partition per week in ``tz``, keyed by the week's first day (``"2026-01-05"``).

    Weeks begin on ``week_start``; a ``start`` inside a week begins at the next whole week.
    """

    unit, rank = "week", 3
    _forward = True

    def __init__(
        self,
        start: str | date | datetime,
        end: str | date | datetime | None = None,
        tz: str = "UTC",
        week_start: str = "monday",
    ) -> None:
        if not isinstance(week_start, str) or week_start.lower() not in _WEEKDAYS:
            raise DefinitionError(
                f"WeeklyPartitions: week_start={week_start!r} is not a day of the week "
                f"({', '.join(_WEEKDAYS)})"
            )
        self.week_start = week_start.lower()
        self._weekday = _WEEKDAYS.index(self.week_start)
        super().__init__(start, end, tz)

    def __eq__(self, other: object) -> bool:
        return (
            super().__eq__(other)
            and isinstance(other, WeeklyPartitions)
            and other._weekday == self._weekday
        )

    def __hash__(self) -> int:
        return hash((super().__hash__(), self._weekday))

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, week_start={self.week_start!r})"

    def _floor_local(self, naive: datetime) -> datetime:
        day = naive.replace(hour=0, minute=0, second=0, microsecond=0)
        return day - timedelta(days=(day.weekday() - self._weekday) % 7)

    def _next_local(self, naive: datetime) -> datetime:
        return naive + timedelta(days=7)

    def _add(self, naive: datetime, windows: int) -> datetime:
        return naive + timedelta(days=7 * windows)


class MonthlyPartitions(_CalendarPartitions):
    """One partition per calendar month in ``tz``, keyed ``"2026-01"``; a ``start`` inside a
    month begins at the next whole month."""

    unit, rank = "month", 4
    _format = "%Y-%m"
    _forward = True

    def _floor_local(self, naive: datetime) -> datetime:
        return naive.replace(day=1, hour=0, minute=0, second=0, microsecond=0)

    def _next_local(self, naive: datetime) -> datetime:
        return self._add(naive, 1)

    def _add(self, naive: datetime, windows: int) -> datetime:
        months = naive.year * 12 + naive.month - 1 + windows
        return naive.replace(year=months // 12, month=months % 12 + 1)


class HourlyPartitions(TimePartitions):
    """One partition per local wall-clock hour, keyed by its local start ``"2026-01-01T05:00"``;
    the second pass of a repeated hour (DST fall-back) carries its offset
    (``"2026-10-25T02:00+01:00"``); where clocks move by half an hour, the hour they move in is
    a half-hour window keyed by where it starts (``"2026-10-04T02:30"``)."""

    unit, rank = "hour", 1
    _format = "%Y-%m-%dT%H:%M"

    def _offset(self, instant: datetime) -> timedelta | None:
        return instant.astimezone(self._zone).utcoffset()

    def _transition(self, low: datetime, high: datetime) -> datetime:
        """The first instant after ``low`` with ``high``'s UTC offset (they differ): where the
        clocks changed inside a wall-clock hour."""
        before = self._offset(low)
        while high - low > _TICK:
            middle = low + (high - low) / 2
            if self._offset(middle) == before:
                low = middle
            else:
                high = middle
        return high

    def _floor(self, instant: datetime) -> datetime:
        local = instant.astimezone(self._zone)
        past = timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)
        start = instant - past
        if self._offset(start) != local.utcoffset():  # the hour began at a clock change
            start = self._transition(start, instant)
        return start.astimezone(UTC)

    def _after(self, start: datetime) -> datetime:
        local = start.astimezone(self._zone)
        end = start + timedelta(minutes=60 - local.minute)
        if self._offset(end - _TICK) != local.utcoffset():  # the clocks change inside it
            end = self._transition(start, end - _TICK)
        return end

    def shift(self, start: datetime, windows: int) -> datetime:
        if abs(windows) <= _EXACT_HOURS:
            return super().shift(start, windows)
        # far offsets count real hours: exact but for zones whose clocks move by half an hour
        return self._floor(start + timedelta(hours=windows))

    def _label(self, start: datetime) -> str:
        local = start.astimezone(self._zone)
        text = local.strftime(self._format)
        if local.fold and local.replace(fold=0).utcoffset() != local.utcoffset():
            text += local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:]
        return text

    def _parse_label(self, key: str) -> datetime | None:
        base, offset = key[:16], key[16:]
        try:
            naive = datetime.strptime(base, self._format)
        except ValueError:
            return None
        if offset:  # the second of a repeated hour; a wrong offset fails the label check
            instant = naive.replace(tzinfo=self._zone, fold=1).astimezone(UTC)
        else:
            instant = self._resolve(naive)
        return instant if self._floor(instant) == instant else None

    def _loose(self, key: str) -> datetime:
        return datetime.strptime(key[:16], self._format)
