"""The web page on the daemon's HTTP address: the asset graph, live.

``/`` is one self-contained HTML file (its script and styles inline: nothing from a CDN, so it
works offline). It draws what ``/api/graph`` answers: every asset and source with its policy,
group, SLA, partitions per state and lateness, in layers laid out here (a node's layer is the
longest path to it from a source; within a layer, by group then key). ``/api/partitions`` lists
an asset's partitions for the side panel, which shows ``/why`` for the one picked.
``/api/stream`` (server-sent events) says when something was written, so the page refetches
the graph: changes show within a second, without polling.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from headwater._durations import format_duration
from headwater._events import Event
from headwater.daemon._responses import JSON
from headwater.daemon._summary import StateSummary, Summary
from headwater.definitions import AssetDef, EdgeMapping, SourceDef
from headwater.planning import failed_blocking

if TYPE_CHECKING:
    from headwater.daemon._api import Controlled
    from headwater.execution import Engine

__all__ = ["Page"]

PARTITIONS_SHOWN = 500
"""The side panel lists an asset's newest partitions, at most this many."""
HEARTBEAT_S = 15.0
"""A comment line this often keeps proxies from closing an idle event stream."""
_STREAM_BUFFER = 16
MAX_STREAMS = 64
"""Pages following the daemon at once; more are refused (each holds a connection)."""


class Page:
    """The page's routes, and an engine observer that tells open pages of changes."""

    def __init__(self, daemon: Controlled, summary: StateSummary) -> None:
        self.daemon = daemon
        self.summary = summary
        self._listeners: set[MemoryObjectSendStream[str]] = set()

    # -- EngineObserver --------------------------------------------------------------------

    def written(self, events: Sequence[Event]) -> None:
        assets = sorted({e.asset for e in events if e.asset})
        if not assets or not self._listeners:
            return
        message = json.dumps({"assets": assets})
        for listener in list(self._listeners):
            try:
                listener.send_nowait(message)
            except anyio.WouldBlock:
                pass  # a slow page misses a message, not the next: it refetches everything
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._listeners.discard(listener)

    def planned(self, seconds: float) -> None:
        return None

    def close(self) -> None:
        """End every open event stream (a stopping daemon: they finish, not get cancelled)."""
        for listener in list(self._listeners):
            listener.close()
        self._listeners.clear()

    # -- routes ----------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/", self._index),
            Route("/api/graph", self._graph),
            Route("/api/partitions", self._partitions),
            Route("/api/stream", self._stream),
        ]

    async def _index(self, request: Request) -> Response:
        html = resources.files("headwater.daemon").joinpath("web/index.html").read_text()
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def _graph(self, request: Request) -> Response:
        engine = await self.daemon.current_engine()
        return JSON(graph_json(engine, await self.summary.of(engine)))

    async def _partitions(self, request: Request) -> Response:
        engine = await self.daemon.current_engine()
        asset = request.query_params.get("asset", "")
        if asset not in engine.defs.nodes:
            return JSON({"error": f"unknown asset {asset!r}"}, status_code=404)
        ev = engine.evaluator()
        keys = ev.partitions(asset)
        newest = list(reversed(keys))[:PARTITIONS_SHOWN]
        rows = []
        for partition in newest:
            record = engine.state.record((asset, partition))
            rows.append(
                {
                    "partition": partition,
                    "state": ev.status(asset, partition).state,
                    "late": bool(record and record.late),
                    "check_failed": failed_blocking(engine.defs, asset, record),
                }
            )
        return JSON({"asset": asset, "total": len(keys), "partitions": rows})

    async def _stream(self, request: Request) -> Response:
        if len(self._listeners) >= MAX_STREAMS:
            return JSON(
                {"error": f"at most {MAX_STREAMS} pages may follow the daemon at once"},
                status_code=503,
            )
        send, receive = anyio.create_memory_object_stream[str](_STREAM_BUFFER)
        self._listeners.add(send)

        async def lines() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                with receive:
                    while True:
                        with anyio.move_on_after(HEARTBEAT_S) as idle:
                            try:
                                message = await receive.receive()
                            except (anyio.EndOfStream, anyio.ClosedResourceError):
                                return
                        if idle.cancelled_caught:
                            yield ": still here\n\n"
                            continue
                        yield f"event: change\ndata: {message}\n\n"
            finally:
                self._listeners.discard(send)
                send.close()

        return StreamingResponse(
            lines(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


def graph_json(engine: Engine, counts: Summary) -> dict[str, Any]:
    """Nodes with their state and place, and edges with their partition mapping."""
    defs = engine.defs
    graph = defs.graph
    layer: dict[str, int] = {}
    for key in sorted(graph.order, key=graph.order.__getitem__):
        layer[key] = 1 + max((layer[p] for p in graph.parents[key]), default=-1)
    nodes = []
    for key, node in defs.nodes.items():
        sla = node.freshness
        asset = node if isinstance(node, AssetDef) else None
        nodes.append(
            {
                "key": key,
                "kind": "asset" if asset else _source_kind(node),
                "policy": asset.policy.name if asset else None,
                "group": asset.group if asset else None,
                "partitioned": node.partitions is not None,
                "partitions": node.partitions.describe() if node.partitions else None,
                "states": counts.states.get(key, {}),
                "late": counts.late.get(key, 0),
                "check_failed": counts.held.get(key, 0),
                "sla": _sla_text(sla.max_lag, sla.max_age) if sla else None,
                "layer": layer[key],
            }
        )
    nodes.sort(key=lambda n: (n["layer"], n["group"] or "", n["key"]))
    edges = []
    for child, parents in graph.parents.items():
        for parent in parents:
            kind = graph.mapping(parent, child)
            label = graph.edge_map(parent, child).label if kind is EdgeMapping.MAPPED else None
            edges.append({"from": parent, "to": child, "mapping": label})
    return {"nodes": nodes, "edges": edges, "now": engine.clock.now().isoformat()}


def _source_kind(node: object) -> str:
    return node.kind_label if isinstance(node, SourceDef) else "source"


def _sla_text(max_lag: timedelta | None, max_age: timedelta | None) -> str:
    parts = []
    if max_lag is not None:
        parts.append(f"max_lag {format_duration(max_lag)}")
    if max_age is not None:
        parts.append(f"max_age {format_duration(max_age)}")
    return ", ".join(parts)
