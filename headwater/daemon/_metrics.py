"""Prometheus metrics of the daemon (``/metrics`` on its HTTP address).

Counters and histograms are fed by what the engine commits to the log (an
:class:`~headwater.execution.EngineObserver`), so they count exactly what the log records and
survive reloads (one :class:`Metrics` per daemon). Gauges of the state (partitions per state,
late partitions, the log's size, sensor lag) are read when Prometheus scrapes, from the
engine serving at that moment. Labels name assets, never partitions: a daily asset must not
add a time series a day.

The series per asset are kept as rendered lines, each rendered again only when its value
changes: ``prometheus_client`` formats every sample at every scrape, which took 0.5 s on the
event loop at 10,000 assets (and 5 s at 100,000) while no file landing was taken. The rest
(the process, the two histograms, the log's size, sensor lag) is a registry of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import anyio
from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from headwater._events import Event, EventKind
from headwater.daemon import _summary
from headwater.daemon._summary import StateSummary
from headwater.eventlog import DB_NAME

if TYPE_CHECKING:
    from headwater.execution import Engine

__all__ = ["Metrics", "SensorLag"]

# A _created series per counter doubles a scrape for no alert. (The switch is process-wide:
# the daemon is the only prometheus_client user in its process that exports.)
disable_created_metrics()  # type: ignore[no-untyped-call]

_RUN_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)
_PLAN_BUCKETS = (1e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.025, 0.1, 0.5, 2.5)
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class SensorLag:
    """How far behind a sensor is: seconds since it last saw the world as it is."""

    sensor: str
    source: str
    seconds: float


@dataclass
class _Serving:
    engine: Engine | None = None
    sensor_lags: Callable[[], Iterable[SensorLag]] = field(default=lambda: ())


class Metrics:
    """Every metric of one daemon, in its own registry (nothing global)."""

    def __init__(self, state_dir: Path, summary: StateSummary | None = None) -> None:
        self.state_dir = state_dir
        self.summary = summary or StateSummary()
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.runs_started = _PerAsset(
            "headwater_runs_started_total", "Runs started, by asset.", "counter"
        )
        self.runs_succeeded = _PerAsset(
            "headwater_runs_succeeded_total", "Runs that materialized a value, by asset.", "counter"
        )
        self.runs_failed = _PerAsset(
            "headwater_runs_failed_total", "Runs that failed, by asset.", "counter"
        )
        # Per asset only a count and a sum (the mean over any window): a histogram per asset
        # would cost a dozen series per asset; the distribution is one histogram for all.
        self.run_seconds = _PerAsset(
            "headwater_run_duration_seconds",
            "How long successful runs took, by asset.",
            "summary",
            ("_count", "_sum"),
        )
        self.all_run_seconds = Histogram(
            "headwater_run_duration_all_seconds",
            "How long successful runs took, all assets together.",
            buckets=_RUN_BUCKETS,
            registry=self.registry,
        )
        self.observations = _PerAsset(
            "headwater_observations_total",
            "Source observations that changed a version, by source.",
            "counter",
        )
        self.plan_seconds = Histogram(
            "headwater_plan_duration_seconds",
            "How long the planner took to seed a plan.",
            buckets=_PLAN_BUCKETS,
            registry=self.registry,
        )
        self.serving = _Serving()
        self._states = _StateLines()
        self._rendering = anyio.Lock()
        self._lags: list[SensorLag] = []
        """The sensors' lags as the scrape under way took them (on the loop)."""
        self.registry.register(_GaugeCollector(self))

    # -- EngineObserver ------------------------------------------------------------------

    def written(self, events: Sequence[Event]) -> None:
        self.summary.written(events)
        for event in events:
            asset = event.asset
            if asset is None:
                continue
            kind = event.kind
            if kind == EventKind.RUN_STARTED:
                self.runs_started.add(asset, 1)
            elif kind == EventKind.MATERIALIZATION:
                self.runs_succeeded.add(asset, 1)
                took = event.payload.get("duration_ms")
                if isinstance(took, int | float):
                    self.run_seconds.add(asset, 1, took / 1000)
                    self.all_run_seconds.observe(took / 1000)
            elif kind == EventKind.RUN_FAILED:
                self.runs_failed.add(asset, 1)
            elif kind == EventKind.OBSERVATION:
                self.observations.add(asset, 1)

    def planned(self, seconds: float) -> None:
        self.plan_seconds.observe(seconds)

    # -- serving -------------------------------------------------------------------------

    def serve(self, engine: Engine | None, sensor_lags: Callable[[], Iterable[SensorLag]]) -> None:
        """The engine (and its sensors) that scrapes read from now on."""
        if engine is not None and self not in engine.observers:
            engine.observers.append(self)
        self.serving = _Serving(engine, sensor_lags)

    async def render(self) -> bytes:
        engine = self.serving.engine
        # Counted off the loop (see StateSummary.of). The page is joined off the loop too:
        # at 100k assets it is tens of megabytes, and on the loop a scrape held back every
        # file landing meanwhile. What each family holds is taken here, where it changes.
        summary = None if engine is None else await self.summary.of(engine)
        families = (
            self.runs_started,
            self.runs_succeeded,
            self.runs_failed,
            self.run_seconds,
            self.observations,
        )
        taken = [family.taken() for family in families]
        async with self._rendering:  # one at a time: the state lines' caches are its own
            self._lags = list(self.serving.sensor_lags())  # the sensors' state: the loop's
            texts, page = await anyio.to_thread.run_sync(
                _page, self.registry, [parts for _, parts in taken], self._states, summary
            )
        for family, (changes, _), text in zip(families, taken, texts, strict=True):
            family.rendered(changes, text)
        return page


def _page(
    registry: CollectorRegistry,
    families: list[str | list[str]],
    states: _StateLines,
    summary: _summary.Summary | None,
) -> tuple[list[str], bytes]:
    """In a worker thread: each family's text, and the whole page (the registry's part
    reads /proc and the log's size: files)."""
    head = generate_latest(registry).decode()
    texts = [f if isinstance(f, str) else "".join(f) for f in families]
    tail = states.text(summary) if summary is not None else ""
    return texts, "".join([head, *texts, tail]).encode()


class _PerAsset:
    """A family with a series per asset, each kept as its rendered sample lines."""

    def __init__(self, name: str, doc: str, kind: str, suffixes: tuple[str, ...] = ("",)) -> None:
        self.header = _header(name, doc, kind)
        self.samples = tuple(name + suffix for suffix in suffixes)
        self.values: dict[str, list[float]] = {}
        self.lines: dict[str, str] = {}
        self._text: str | None = None
        """The family as last rendered, until a value changes (a scrape with no run since
        copies nothing: 100,000 assets make pages of tens of megabytes)."""
        self._changes = 0

    def add(self, asset: str, *amounts: float) -> None:
        """Add ``amounts`` to the asset's samples, in the order of the suffixes."""
        values = self.values.get(asset)
        if values is None:
            values = self.values[asset] = [0.0] * len(self.samples)
        for i, amount in enumerate(amounts):
            values[i] += amount
        label = f'{{asset="{_label(asset)}"}} '
        self.lines[asset] = "".join(
            f"{sample}{label}{_number(value)}\n"
            for sample, value in zip(self.samples, values, strict=True)
        )
        self._text = None
        self._changes += 1

    def taken(self) -> tuple[int, str | list[str]]:
        """The family now: its text as last rendered, or the parts to join (the lines as
        they are, copied: adds go on while they are joined)."""
        if self._text is not None:
            return self._changes, self._text
        return self._changes, [self.header, *self.lines.values()]

    def rendered(self, changes: int, text: str) -> None:
        """``text`` was joined from :meth:`taken` when it had seen ``changes``: kept unless
        a value changed since."""
        if changes == self._changes:
            self._text = text


class _StateLines:
    """The gauges of a :class:`~headwater.daemon._summary.Summary`, per asset, rendered again
    only for the assets it counted again (a new dict of states, a new count)."""

    def __init__(self) -> None:
        self._states: dict[str, tuple[dict[str, int], str]] = {}
        self._late: dict[str, tuple[int, str]] = {}
        self._held: dict[str, tuple[int, str]] = {}
        self._last: tuple[_summary.Summary, str] | None = None

    def text(self, summary: _summary.Summary) -> str:
        if self._last is not None and self._last[0] is summary:
            return self._last[1]
        states = _rendered(self._states, summary.states, _state_lines)
        late = _rendered(self._late, summary.late, _gauge_line("headwater_late_partitions"))
        held = _rendered(self._held, summary.held, _gauge_line("headwater_check_failed_partitions"))
        text = "".join(
            [
                _header(
                    "headwater_partitions",
                    "Partitions by state (fresh, stale, missing, failed), by asset or source; "
                    "a state no partition is in has no series.",
                    "gauge",
                ),
                *states,
                _header(
                    "headwater_late_partitions",
                    "Partitions late by their freshness SLA, by asset.",
                    "gauge",
                ),
                *late,
                _header(
                    "headwater_check_failed_partitions",
                    "Partitions whose current data a blocking check failed (their readers "
                    "wait), by asset with a blocking check.",
                    "gauge",
                ),
                *held,
            ]
        )
        self._last = (summary, text)
        return text


def _rendered(
    cache: dict[str, tuple[_V, str]], now: Mapping[str, _V], render: Callable[[str, _V], str]
) -> list[str]:
    """The lines of ``now``, per key, reusing those of a value unchanged since (the same
    object, or an equal number); keys gone are dropped from ``cache``."""
    lines = []
    for key, value in now.items():
        cached = cache.get(key)
        if cached is None or not (cached[0] is value or cached[0] == value):
            cached = cache[key] = (value, render(key, value))
        lines.append(cached[1])
    if len(cache) > len(now):
        for key in [k for k in cache if k not in now]:
            del cache[key]
    return lines


def _state_lines(key: str, counts: dict[str, int]) -> str:
    label = _label(key)
    return "".join(
        f'headwater_partitions{{asset="{label}",state="{state}"}} {_number(count)}\n'
        for state, count in counts.items()
    )


def _gauge_line(name: str) -> Callable[[str, int], str]:
    def render(key: str, count: int) -> str:
        return f'{name}{{asset="{_label(key)}"}} {_number(count)}\n'

    return render


def _header(name: str, doc: str, kind: str) -> str:
    doc = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


def _number(value: float) -> str:
    """A sample's value as prometheus_client writes it (1.0, 0.0125, 1e-05, +Inf)."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _label(value: str) -> str:
    """A label value as the text format escapes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _GaugeCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        size = GaugeMetricFamily(
            "headwater_event_log_bytes", "Size of the event log's files (with its WAL)."
        )
        size.add_metric([], float(_log_bytes(self.metrics.state_dir)))
        yield size
        lag = GaugeMetricFamily(
            "headwater_sensor_lag_seconds",
            "Seconds a sensor is behind: since a file event it has not yet recorded, or since "
            "an object source's last successful listing.",
            labels=["sensor", "source"],
        )
        for item in self.metrics._lags:
            lag.add_metric([item.sensor, item.source], item.seconds)
        yield lag


def _log_bytes(state_dir: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += (state_dir / f"{DB_NAME}{suffix}").stat().st_size
        except OSError:
            continue
    return total
