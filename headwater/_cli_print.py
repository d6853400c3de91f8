"""What the command line prints: result summaries, the status table, event lines, ``why``.

Everything printed that headwater did not write itself (keys, file names, error messages,
payloads) goes through :func:`printable` first: control characters and terminal escape
sequences are shown escaped (``\x1b``), so a hostile file name cannot forge a log line or
reach the terminal; table cells are rich ``Text``, so ``[bold]`` in data is shown literally.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from headwater._events import Event, format_timestamp
from headwater._report import StatusRow
from headwater._text import printable
from headwater.execution import TickResult
from headwater.planning import NodeKey, node_label

__all__ = [
    "echo",
    "event_line",
    "print_backfill",
    "print_result",
    "print_status_table",
    "print_why",
    "printable",
    "result_from_json",
]


def echo(text: str, *, err: bool = False) -> None:
    """One line of output, escaped."""
    click.echo(printable(text), err=err)


def _label(node: NodeKey) -> str:
    return printable(node_label(*node))


def result_from_json(message: Mapping[str, Any]) -> TickResult:
    """The ``result`` line of a streamed request, as the TickResult a direct run returns."""
    result = TickResult()
    result.materialized = [(str(a), p) for a, p in message["materialized"]]
    result.failed = {(str(a), p): str(e) for a, p, e in message["failed"]}
    result.skipped = {(str(a), p): str(r) for a, p, r in message["skipped"]}
    return result


def print_result(result: TickResult, requested: int) -> None:
    for node in result.materialized:
        echo(f"materialized {node_label(*node)}")
    for node, error in result.failed.items():
        echo(f"failed {node_label(*node)}: {error}")
    shown = list(result.skipped.items())
    for node, reason in shown[:10]:
        echo(f"skipped {node_label(*node)}: {reason}")
    if len(shown) > 10:
        click.echo(f"... and {len(shown) - 10} more skipped")
    click.echo(
        f"{len(result.materialized)} materialized, {len(result.failed)} failed, "
        f"{len(result.skipped)} skipped, of {requested} requested"
    )


def print_backfill(
    asset: str, first: str, last: str, result: TickResult, nodes: Sequence[NodeKey]
) -> None:
    done = [n for n in result.materialized if n[0] == asset]
    failed = {n: e for n, e in result.failed.items() if n[0] == asset}
    skipped = {n: r for n, r in result.skipped.items() if n[0] == asset}
    refused = [n for n in result.refused if n[0] == asset]
    fresh = len(nodes) - len(done) - len(failed) - len(skipped)
    for node, error in failed.items():
        echo(f"failed {node_label(*node)}: {error}")
    for node, reason in list(skipped.items())[:10]:
        echo(f"skipped {node_label(*node)}: {reason}")
    downstream = len(result.materialized) - len(done)
    echo(
        f"backfill {asset} {first}..{last}: {len(done)} materialized, {len(failed)} failed, "
        + (f"{len(refused)} not started, " if refused else "")
        + f"{len(skipped) - len(refused)} waiting, {fresh} already fresh"
        + (f"; {downstream} downstream partitions materialized" if downstream else "")
    )


def print_status_table(
    rows: list[StatusRow], show_all: bool, runs: Mapping[NodeKey, str] | None = None
) -> None:
    runs = runs or {}
    table = Table(box=None, pad_edge=False)
    for column in ("asset", "partition", "state", "late", "data version", "last change", "why"):
        table.add_column(column, overflow="fold")
    missing: dict[str, int] = {}
    for row in rows:
        node = (row.asset, row.partition)
        folded = row.partition is not None and row.state == "missing" and not row.late
        if folded and not show_all and node not in runs:
            missing[row.asset] = missing.get(row.asset, 0) + 1
            continue
        state = row.state.upper() if row.state == "failed" else row.state
        cells = (
            row.asset,
            row.partition or "",
            state + (f" ({runs[node]})" if node in runs else ""),
            "LATE" if row.late else "",
            (row.data_version or "")[:12],
            ""
            if row.last_materialized_at is None
            else format_timestamp(row.last_materialized_at)[:19],
            row.reason if row.state != "fresh" or row.late or row.failed_checks else "",
        )
        table.add_row(*(Text(printable(c)) for c in cells))
    for asset, count in missing.items():
        cells = (asset, f"({count} partitions)", "missing", "", "", "", "--all lists them")
        table.add_row(*(Text(printable(c)) for c in cells))
    console = Console()
    if not console.is_terminal:
        console = Console(width=240)  # piped output: no wrapping at 80 columns
    console.print(table)
    _print_summary(rows)


def _print_summary(rows: list[StatusRow]) -> None:
    """One line each for what is late, what failed and what a failed blocking check holds
    back: what `status --check` fails on."""
    held = [r for r in rows if r.held_by_check]
    for what, found, said in (
        ("late", [r for r in rows if r.late], _reason),
        ("failed", [r for r in rows if r.state == "failed"], _reason),
        ("failed a blocking check", held, _blocking_failures),
    ):
        if not found:
            continue
        first = found[0]
        more = f" and {len(found) - 1} more" if len(found) > 1 else ""
        echo(
            f"{len(found)} {what}: {node_label(first.asset, first.partition)} ({said(first)}){more}"
        )


def _reason(row: StatusRow) -> str:
    return row.reason


def _blocking_failures(row: StatusRow) -> str:
    return "; ".join(c.describe() for c in row.failed_checks if c.blocking)


def print_why(
    lines: Sequence[str], recent: Sequence[Event], failure: Mapping[str, Any] | None = None
) -> None:
    """``failure``: the latest failed run's payload, while the partition is failed."""
    echo(lines[0])
    for line in lines[1:]:
        echo(f"  - {line}")
    for key, title in (("traceback", "traceback (last frames)"), ("stderr", "stderr (last lines)")):
        text = (failure or {}).get(key)
        if isinstance(text, str) and text.strip():
            click.echo(f"{title}:")
            lines = [ln for ln in text.rstrip().splitlines() if not _plumbing(ln)]
            for line in lines[-_TRACE_LINES:]:
                echo(f"  {line}")
    if recent:
        click.echo("recent events:")
        for event in recent:
            click.echo("  " + event_line(event))


_TRACE_LINES = 12
_OWN_FRAMES = ("headwater/execution/executors/", "<frozen runpy>")


def _plumbing(line: str) -> bool:
    """A line of a crash report that says nothing about the user's code: the worker's own
    frames in faulthandler's stack, its list of extension modules."""
    return line.startswith("Extension modules:") or (
        line.lstrip().startswith("File ") and any(f in line for f in _OWN_FRAMES)
    )


def event_line(event: Event) -> str:
    payload = dict(event.payload)
    for bulky in ("traceback", "stderr", "inputs"):
        payload.pop(bulky, None)
    parts = [format_timestamp(event.timestamp), f"{event.kind:<17}"]
    if event.asset is not None:
        parts.append(node_label(event.asset, event.partition))
    if event.run_id:
        parts.append(f"run={event.run_id[:12]}")
    if event.data_version:
        parts.append(f"version={event.data_version[:12]}")
    if payload:
        parts.append(json.dumps(payload, separators=(",", ":"), default=str))
    return printable("  ".join(parts))
