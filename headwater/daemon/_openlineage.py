"""OpenLineage run events, sent with the official client (the ``openlineage`` extra).

Configured by ``[tool.headwater.openlineage]``: ``namespace`` (of the jobs and of asset
datasets; default ``headwater``) and ``transport`` (a table, exactly as the OpenLineage client
configures its transport: ``{type = "http", url = "...", timeout = 5}``, ``console``, ``file``,
``kafka``...). Every run sends START (``run_started``), then COMPLETE (``materialization``) or
FAIL (``run_failed``), naming the input partitions it read and the output it wrote as datasets
with their data versions (the ``version`` facet). File sources are ``file`` datasets named by
their path, object sources ``s3://bucket`` datasets named by their key, assets and plain
sources datasets of the namespace named by their key.

Sending never slows or fails a run: events go into a bounded queue that one thread empties;
when the endpoint is slow or down the queue fills and further events are dropped, counted,
and reported in a warning at most once a minute.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from headwater import __version__
from headwater._config import ConfigError
from headwater._events import Event, EventKind
from headwater.definitions import Definitions, FileSource, ObjectSource

__all__ = ["LineageSettings", "OpenLineageEmitter", "lineage_settings"]

_log = structlog.get_logger("headwater.openlineage")

QUEUE_SIZE = 10_000
"""Events waiting to be sent; beyond this they are dropped (the daemon never waits)."""
WARN_EVERY_S = 60.0
PRODUCER = f"https://pypi.org/project/headwater/{__version__}"


@dataclass(frozen=True, slots=True)
class LineageSettings:
    namespace: str
    transport: Mapping[str, Any] = field(default_factory=dict)


def lineage_settings(table: Mapping[str, Any] | None, where: str) -> LineageSettings | None:
    """``[tool.headwater.openlineage]`` checked (None when absent)."""
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: [tool.headwater.openlineage] must be a table")
    unknown = sorted(set(table) - {"namespace", "transport"})
    if unknown:
        raise ConfigError(
            f"{where}: [tool.headwater.openlineage] has unknown keys {unknown}; it takes "
            "namespace and transport"
        )
    namespace = table.get("namespace", "headwater")
    transport = table.get("transport", {})
    if not isinstance(namespace, str) or not namespace:
        raise ConfigError(f"{where}: [tool.headwater.openlineage] namespace must be text")
    if not isinstance(transport, Mapping) or "type" not in transport:
        raise ConfigError(
            f"{where}: [tool.headwater.openlineage] transport must be a table with a type, "
            'such as {type = "http", url = "http://localhost:5000"}'
        )
    settings = LineageSettings(namespace, dict(transport))
    _client(settings, where)  # a transport the client refuses is a mistake now, not later
    return settings


def _client(settings: LineageSettings, where: str) -> Any:
    try:
        from openlineage.client import OpenLineageClient
    except ImportError:
        raise ConfigError(
            f"{where}: [tool.headwater.openlineage] needs the OpenLineage client: "
            "pip install 'headwater[openlineage]'"
        ) from None
    try:
        return OpenLineageClient(config={"transport": dict(settings.transport)})
    except Exception as exc:
        raise ConfigError(
            f"{where}: [tool.headwater.openlineage] transport: {type(exc).__name__}: {exc}"
        ) from None


class OpenLineageEmitter:
    """An engine observer that turns run events into OpenLineage events, sent by a thread."""

    def __init__(self, settings: LineageSettings) -> None:
        self.settings = settings
        self.client = _client(settings, "[tool.headwater.openlineage]")
        self.defs: Definitions | None = None
        self._queue: queue.Queue[Any] = queue.Queue(QUEUE_SIZE)
        self._dropped = 0
        self._failed = 0
        self._told = 0.0
        self._abandoned = False
        self._lock = threading.Lock()
        # the client's HTTP transport retries with a warning per retry: ours, once a minute,
        # is the one that counts
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
        self._thread = threading.Thread(target=self._send_forever, name="openlineage", daemon=True)
        self._thread.start()

    # -- EngineObserver ----------------------------------------------------------------------

    def written(self, events: Sequence[Event]) -> None:
        defs = self.defs
        if defs is None:
            return
        for event in events:
            if event.kind not in _RUN_KINDS or event.asset is None or event.run_id is None:
                continue
            try:
                self._queue.put_nowait(self._build(defs, event))
            except queue.Full:
                self._note("dropped")

    def planned(self, seconds: float) -> None:
        return None

    # -- sending -----------------------------------------------------------------------------

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued for up to ``timeout`` seconds, then stop (never waiting on an
        endpoint that hangs: the sender is a daemon thread, left to its fate)."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout)
        self._abandoned = True  # what is still queued is dropped once the current send ends

    def _send_forever(self) -> None:
        while not self._abandoned:
            item = self._queue.get()
            if item is None or self._abandoned:
                return
            try:
                self.client.emit(item)
            except Exception as exc:  # the endpoint is down or refuses: runs go on
                self._note("failed", f"{type(exc).__name__}: {exc}")

    def _note(self, what: str, error: str | None = None) -> None:
        with self._lock:
            if what == "dropped":
                self._dropped += 1
            else:
                self._failed += 1
            now = time.monotonic()
            if now - self._told < WARN_EVERY_S:
                return
            self._told = now
            dropped, failed = self._dropped, self._failed
            self._dropped = self._failed = 0
        _log.warning(
            "openlineage_undelivered",
            dropped=dropped,
            failed=failed,
            error=error,
            reason="the lineage endpoint is slow or down; runs are not affected",
        )

    # -- events ------------------------------------------------------------------------------

    def _build(self, defs: Definitions, event: Event) -> Any:
        from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent
        from openlineage.client.facet_v2 import dataset_version_dataset, error_message_run

        payload = event.payload
        assert event.asset is not None and event.run_id is not None
        inputs = []
        for raw in payload.get("inputs") or ():
            key, partition, version = (str(raw[0]), raw[1], str(raw[2]))
            namespace, name = self.dataset(defs, key, partition)
            facets: dict[str, Any] = {
                "version": dataset_version_dataset.DatasetVersionDatasetFacet(version)
            }
            inputs.append(InputDataset(namespace, name, facets=facets))
        outputs = []
        if event.kind == EventKind.MATERIALIZATION and event.data_version is not None:
            namespace, name = self.dataset(defs, event.asset, event.partition)
            facets = {
                "version": dataset_version_dataset.DatasetVersionDatasetFacet(event.data_version)
            }
            outputs.append(OutputDataset(namespace, name, facets=facets))
        run_facets: dict[str, Any] = {
            "headwater": _partition_facet()(asset=event.asset, partition=event.partition)
        }
        if event.kind == EventKind.RUN_FAILED:
            run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=str(payload.get("error", "failed")),
                programmingLanguage="python",
                stackTrace=payload.get("traceback"),
            )
        return RunEvent(
            eventType=_states()[event.kind],
            eventTime=event.timestamp.isoformat(),
            producer=PRODUCER,
            run=Run(runId=str(uuid.UUID(hex=event.run_id)), facets=run_facets),
            job=Job(namespace=self.settings.namespace, name=event.asset),
            inputs=inputs,
            outputs=outputs,
        )

    def dataset(self, defs: Definitions, key: str, partition: str | None) -> tuple[str, str]:
        """The OpenLineage ``(namespace, name)`` of an asset's or source's partition."""
        node = defs.nodes.get(key)
        if isinstance(node, FileSource):
            return "file", str(node.resolve(defs.base_dir, partition))
        if isinstance(node, ObjectSource):
            return f"s3://{node.bucket}", node.render(partition)
        return self.settings.namespace, key


def _partition_facet() -> Any:
    """A run facet naming the asset partition the run materializes (one job per asset, so a
    catalog shows one job with a run per partition)."""
    global _PARTITION_FACET
    if _PARTITION_FACET is None:
        import attr
        from openlineage.client.facet_v2 import RunFacet

        @attr.define
        class HeadwaterRunFacet(RunFacet):
            asset: str
            partition: str | None = None

            @staticmethod
            def _get_schema() -> str:
                return "https://github.com/headwater/headwater/blob/main/docs/run-facet.json"

        _PARTITION_FACET = HeadwaterRunFacet
    return _PARTITION_FACET


_PARTITION_FACET: Any = None


@functools.cache
def _states() -> dict[str, Any]:
    from openlineage.client.event_v2 import RunState

    return {
        EventKind.RUN_STARTED: RunState.START,
        EventKind.MATERIALIZATION: RunState.COMPLETE,
        EventKind.RUN_FAILED: RunState.FAIL,
    }


_RUN_KINDS = (EventKind.RUN_STARTED, EventKind.MATERIALIZATION, EventKind.RUN_FAILED)
