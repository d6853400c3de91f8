"""Prometheus metrics of the daemon (``/metrics`` on its HTTP address).

Counters and histograms are fed by what the engine commits to the log (an
:class:`~headwater.execution.EngineObserver`), so they count exactly what the log records and
survive reloads (one :class:`Metrics` per daemon). Gauges of the state (partitions per state,
late partitions, the log's size, sensor lag) are read when Prometheus scrapes, from the
engine serving at that moment. Labels name assets, never partitions: a daily asset must not
add a time series a day.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Summary,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

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
        labels = ["asset"]
        self.runs_started = Counter(
            "headwater_runs_started", "Runs started, by asset.", labels, registry=self.registry
        )
        self.runs_succeeded = Counter(
            "headwater_runs_succeeded",
            "Runs that materialized a value, by asset.",
            labels,
            registry=self.registry,
        )
        self.runs_failed = Counter(
            "headwater_runs_failed", "Runs that failed, by asset.", labels, registry=self.registry
        )
        # Per asset only a count and a sum (the mean over any window): a histogram per asset
        # would cost a dozen series per asset; the distribution is one histogram for all.
        self.run_seconds = Summary(
            "headwater_run_duration_seconds",
            "How long successful runs took, by asset.",
            labels,
            registry=self.registry,
        )
        self.all_run_seconds = Histogram(
            "headwater_run_duration_all_seconds",
            "How long successful runs took, all assets together.",
            buckets=_RUN_BUCKETS,
            registry=self.registry,
        )
        self.observations = Counter(
            "headwater_observations",
            "Source observations that changed a version, by source.",
            labels,
            registry=self.registry,
        )
        self.plan_seconds = Histogram(
            "headwater_plan_duration_seconds",
            "How long the planner took to seed a plan.",
            buckets=_PLAN_BUCKETS,
            registry=self.registry,
        )
        self.serving = _Serving()
        self.counted: _summary.Summary | None = None
        """The summary the scrape under way shows (see :meth:`render`)."""
        self.registry.register(_StateCollector(self))

    # -- EngineObserver ------------------------------------------------------------------

    def written(self, events: Sequence[Event]) -> None:
        self.summary.written(events)
        for event in events:
            asset = event.asset
            if asset is None:
                continue
            kind = event.kind
            if kind == EventKind.RUN_STARTED:
                self.runs_started.labels(asset).inc()
            elif kind == EventKind.MATERIALIZATION:
                self.runs_succeeded.labels(asset).inc()
                took = event.payload.get("duration_ms")
                if isinstance(took, int | float):
                    self.run_seconds.labels(asset).observe(took / 1000)
                    self.all_run_seconds.observe(took / 1000)
            elif kind == EventKind.RUN_FAILED:
                self.runs_failed.labels(asset).inc()
            elif kind == EventKind.OBSERVATION:
                self.observations.labels(asset).inc()

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
        # Counted off the loop first: the registry's collectors run synchronously.
        self.counted = None if engine is None else await self.summary.of(engine)
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        summary = self.metrics.counted
        if summary is not None:
            per_state = GaugeMetricFamily(
                "headwater_partitions",
                "Partitions by state (fresh, stale, missing, failed), by asset or source; a "
                "state no partition is in has no series.",
                labels=["asset", "state"],
            )
            for key, counts in summary.states.items():
                for state, count in counts.items():
                    per_state.add_metric([key, state], float(count))
            yield per_state
            late = GaugeMetricFamily(
                "headwater_late_partitions",
                "Partitions late by their freshness SLA, by asset.",
                labels=["asset"],
            )
            for key, count in summary.late.items():
                late.add_metric([key], float(count))
            yield late
            held = GaugeMetricFamily(
                "headwater_check_failed_partitions",
                "Partitions whose current data a blocking check failed (their readers wait), "
                "by asset with a blocking check.",
                labels=["asset"],
            )
            for key, count in summary.held.items():
                held.add_metric([key], float(count))
            yield held
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
        for item in self.metrics.serving.sensor_lags():
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
