"""The command line. Parsing and printing only; the work happens in the library."""

from __future__ import annotations

import fnmatch
import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import ParamSpec, TypeVar

import anyio
import click
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress
from rich.table import Table

from headwater._clock import SystemClock, parse_instant
from headwater._config import Settings, resolve_settings, resolve_state_dir
from headwater._durations import parse_duration
from headwater._errors import HeadwaterError, SelectionError
from headwater._events import Event, format_timestamp
from headwater._lineage import FORMATS, render_lineage
from headwater._loading import load_definitions
from headwater._logging import configure_logging
from headwater._report import StatusRow, status_rows
from headwater.daemon import DaemonSettings, run_daemon
from headwater.definitions import Definitions
from headwater.eventlog import EventLogReader
from headwater.execution import Engine, TickResult
from headwater.planning import Evaluator, explain, node_label
from headwater.sensors import sync_file_sources

__all__ = ["main"]

P = ParamSpec("P")
R = TypeVar("R")

EXIT_LATE_OR_FAILED = 1
EXIT_USAGE = 2


class UserError(click.ClickException):
    """A user's mistake: one paragraph on stderr, exit 2, no traceback."""

    exit_code = EXIT_USAGE


def _user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except HeadwaterError as exc:
            raise UserError(str(exc)) from None

    return wrapper


def _common(fn: Callable[P, R]) -> Callable[P, R]:
    fn = click.option(
        "--state-dir",
        metavar="DIR",
        help="State directory (default: $HEADWATER_STATE_DIR, [tool.headwater], $STATE_DIRECTORY, .headwater/).",
    )(fn)
    fn = click.option(
        "--definitions",
        "-d",
        metavar="TARGET",
        help="A Python file or module:attribute (default: $HEADWATER_DEFINITIONS, [tool.headwater]).",
    )(fn)
    return _user_errors(fn)


def _settings(definitions: str | None, state_dir: str | None) -> Settings:
    return resolve_settings(definitions, state_dir)


def _load(definitions: str | None, state_dir: str | None) -> tuple[Settings, Definitions]:
    settings = _settings(definitions, state_dir)
    return settings, load_definitions(settings.definitions)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="headwater")
def main() -> None:
    """headwater: keep data assets up to date, re-running only what changed data makes stale."""
    configure_logging()


@main.command()
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    envvar="HEADWATER_STOP_GRACE",
    help="Seconds running materializations may take to finish after SIGTERM ($HEADWATER_STOP_GRACE).",
)
@click.option(
    "--rescan-interval",
    type=click.FloatRange(min=0.1),
    default=300.0,
    show_default=True,
    envvar="HEADWATER_RESCAN_INTERVAL",
    help="Seconds between reconciliation rescans of file sources ($HEADWATER_RESCAN_INTERVAL).",
)
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    envvar="HEADWATER_SETTLE",
    help="Seconds a file seen only as created must stand still before it counts ($HEADWATER_SETTLE).",
)
@_common
def run(
    grace: float,
    rescan_interval: float,
    settle: float,
    definitions: str | None,
    state_dir: str | None,
) -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT.

    Reacts to file events, object-store changes and the clock; SIGHUP reloads the definitions.
    Under systemd (Type=notify) it reports READY, STATUS, RELOADING, STOPPING and watchdog pings.
    """
    settings = _settings(definitions, state_dir)
    run_daemon(
        DaemonSettings(
            definitions=settings.definitions,
            state_dir=settings.state_dir,
            grace=grace,
            rescan_interval=rescan_interval,
            settle=settle,
        )
    )


@main.command()
@_common
def validate(definitions: str | None, state_dir: str | None) -> None:
    """Load and check the definitions."""
    settings, defs = _load(definitions, state_dir)
    checks = sum(len(v) for v in defs.checks.values())
    click.echo(
        f"ok: {settings.definitions}: {len(defs.assets)} assets, {len(defs.sources)} sources, "
        f"{checks} checks"
    )


def _select(defs: Definitions, selection: Sequence[str]) -> list[str]:
    keys: list[str] = []
    for item in selection:
        if any(c in item for c in "*?["):
            matched = [k for k in defs.assets if fnmatch.fnmatchcase(k, item)]
            if not matched:
                raise SelectionError(f"selection {item!r} matches no asset")
            keys += matched
        else:
            keys.append(item)
    return list(dict.fromkeys(keys))


def _print_result(result: TickResult, requested: int) -> None:
    for node in result.materialized:
        click.echo(f"materialized {node_label(*node)}")
    for node, error in result.failed.items():
        click.echo(f"failed {node_label(*node)}: {error}")
    shown = list(result.skipped.items())
    for node, reason in shown[:10]:
        click.echo(f"skipped {node_label(*node)}: {reason}")
    if len(shown) > 10:
        click.echo(f"... and {len(shown) - 10} more skipped")
    click.echo(
        f"{len(result.materialized)} materialized, {len(result.failed)} failed, "
        f"{len(result.skipped)} skipped, of {requested} requested"
    )


@main.command()
@click.argument("selection", nargs=-1, required=True)
@click.option(
    "--partition",
    "-p",
    "partitions",
    multiple=True,
    metavar="P",
    help="Only this partition (repeatable).",
)
@click.option("--force", is_flag=True, help="Run even what is fresh.")
@_common
def materialize(
    selection: tuple[str, ...],
    partitions: tuple[str, ...],
    force: bool,
    definitions: str | None,
    state_dir: str | None,
) -> None:
    """Materialize assets now: only what is stale, missing or failed unless --force.

    SELECTION is asset keys or glob patterns (quote them: 'sales/*'). Eager assets downstream
    of what changes run in the same plan.
    """
    settings, defs = _load(definitions, state_dir)
    keys = _select(defs, selection)

    async def go() -> tuple[TickResult, int]:
        async with Engine.open(defs, settings.state_dir, SystemClock()) as engine:
            nodes = engine.resolve(keys, list(partitions) or None)
            await sync_file_sources(engine)
            return await engine.materialize(nodes, force=force, only_requested=True), len(nodes)

    result, requested = anyio.run(go, backend="asyncio")
    _print_result(result, requested)
    if result.failed:
        sys.exit(EXIT_LATE_OR_FAILED)


@main.command()
@click.argument("asset")
@click.option("--from", "first", required=True, metavar="P", help="First partition (included).")
@click.option("--to", "last", required=True, metavar="P", help="Last partition (included).")
@click.option("--force", is_flag=True, help="Run even the partitions that are fresh.")
@_common
def backfill(
    asset: str,
    first: str,
    last: str,
    force: bool,
    definitions: str | None,
    state_dir: str | None,
) -> None:
    """Materialize ASSET's partitions from --from to --to, in dependency order.

    Only what is missing, stale or failed runs unless --force. A failed partition is reported
    and does not stop the others. Shows a progress bar on a terminal.
    """
    settings, defs = _load(definitions, state_dir)
    console = Console(stderr=True)

    async def go() -> tuple[TickResult, list[tuple[str, str | None]]]:
        async with Engine.open(defs, settings.state_dir, SystemClock()) as engine:
            nodes: list[tuple[str, str | None]] = [
                (asset, k) for k in engine.partition_range(asset, first, last)
            ]
            await sync_file_sources(engine)
            wanted = set(nodes)
            with Progress(
                *Progress.get_default_columns(),
                MofNCompleteColumn(),
                console=console,
                disable=not console.is_terminal,
                transient=True,
            ) as progress:
                bar = progress.add_task(f"backfill {asset}", total=len(nodes))

                def advance(node: tuple[str, str | None], outcome: str) -> None:
                    if node in wanted:
                        progress.advance(bar)

                result = await engine.materialize(
                    nodes, force=force, only_requested=True, on_step=advance
                )
            return result, nodes

    result, nodes = anyio.run(go, backend="asyncio")
    done = [n for n in result.materialized if n[0] == asset]
    failed = {n: e for n, e in result.failed.items() if n[0] == asset}
    skipped = {n: r for n, r in result.skipped.items() if n[0] == asset}
    fresh = len(nodes) - len(done) - len(failed) - len(skipped)
    for node, error in failed.items():
        click.echo(f"failed {node_label(*node)}: {error}")
    for node, reason in list(skipped.items())[:10]:
        click.echo(f"skipped {node_label(*node)}: {reason}")
    downstream = len(result.materialized) - len(done)
    click.echo(
        f"backfill {asset} {first}..{last}: {len(done)} materialized, {len(failed)} failed, "
        f"{len(skipped)} waiting, {fresh} already fresh"
        + (f"; {downstream} downstream partitions materialized" if downstream else "")
    )
    if result.failed:
        sys.exit(EXIT_LATE_OR_FAILED)


def _rows(settings: Settings, defs: Definitions) -> list[StatusRow]:
    state = EventLogReader(settings.state_dir).load_state()
    return list(status_rows(defs, state, SystemClock().now()))


@main.command()
@click.option(
    "--json", "as_json", is_flag=True, help="A JSON array, one object per asset partition."
)
@click.option("--check", is_flag=True, help="Exit 1 when anything is late or failed.")
@click.option(
    "--all", "show_all", is_flag=True, help="List missing partitions one by one in the table."
)
@_common
def status(
    as_json: bool, check: bool, show_all: bool, definitions: str | None, state_dir: str | None
) -> None:
    """Every asset partition's state, last materialization and SLA."""
    settings, defs = _load(definitions, state_dir)
    rows = _rows(settings, defs)
    if as_json:
        click.echo(json.dumps([r.as_json() for r in rows], indent=2))
    else:
        _print_status_table(rows, show_all)
    if check and any(r.late or r.state == "failed" for r in rows):
        sys.exit(EXIT_LATE_OR_FAILED)


def _print_status_table(rows: list[StatusRow], show_all: bool) -> None:
    table = Table(box=None, pad_edge=False)
    for column in ("asset", "partition", "state", "late", "data version", "last change", "why"):
        table.add_column(column, overflow="fold")
    missing: dict[str, int] = {}
    for row in rows:
        if row.partition is not None and row.state == "missing" and not show_all:
            missing[row.asset] = missing.get(row.asset, 0) + 1
            continue
        table.add_row(
            row.asset,
            row.partition or "",
            row.state,
            "LATE" if row.late else "",
            (row.data_version or "")[:12],
            ""
            if row.last_materialized_at is None
            else format_timestamp(row.last_materialized_at)[:19],
            row.reason if row.state != "fresh" or row.late else "",
        )
    for asset, count in missing.items():
        table.add_row(asset, f"({count} partitions)", "missing", "", "", "", "--all lists them")
    console = Console()
    if not console.is_terminal:
        console = Console(width=240)  # piped output: no wrapping at 80 columns
    console.print(table)


@main.command()
@click.argument("asset")
@click.option("--partition", "-p", metavar="P", help="The partition, for a partitioned asset.")
@_common
def why(asset: str, partition: str | None, definitions: str | None, state_dir: str | None) -> None:
    """Why ASSET is stale, missing, failed or waiting, and what was decided about it."""
    settings, defs = _load(definitions, state_dir)
    reader = EventLogReader(settings.state_dir)
    ev = Evaluator(defs, reader.load_state(), SystemClock().now())
    ev.check_node(asset, partition)
    lines = explain(ev, asset, partition)
    click.echo(lines[0])
    for line in lines[1:]:
        click.echo(f"  - {line}")
    recent = reader.events(asset=asset, partition=partition, newest_first=True, limit=5)
    if recent:
        click.echo("recent events:")
        for event in reversed(recent):
            click.echo("  " + _event_line(event))


def _event_line(event: Event) -> str:
    payload = dict(event.payload)
    payload.pop("traceback", None)
    payload.pop("inputs", None)
    parts = [format_timestamp(event.timestamp), f"{event.kind:<17}"]
    if event.asset is not None:
        parts.append(node_label(event.asset, event.partition))
    if event.run_id:
        parts.append(f"run={event.run_id[:12]}")
    if event.data_version:
        parts.append(f"version={event.data_version[:12]}")
    if payload:
        parts.append(json.dumps(payload, separators=(",", ":"), default=str))
    return "  ".join(parts)


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.now(UTC) - parse_duration(value)
    except ValueError:
        pass
    try:
        return parse_instant(value)
    except ValueError:
        raise UserError(
            f"--since {value!r} is neither a duration such as 1h nor an ISO-8601 time"
        ) from None


@main.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they are written.")
@click.option("--asset", "-a", metavar="A", help="Only events of this asset.")
@click.option("--kind", "-k", metavar="K", help="Only events of this kind (e.g. materialization).")
@click.option(
    "--since", metavar="AGE", help="Only events newer than this (1h, 30m) or an ISO time."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_common
def logs(
    follow: bool,
    asset: str | None,
    kind: str | None,
    since: str | None,
    as_json: bool,
    definitions: str | None,
    state_dir: str | None,
) -> None:
    """Read the event log (works while the daemon runs)."""
    directory = (
        _settings(definitions, state_dir).state_dir if definitions else resolve_state_dir(state_dir)
    )
    reader = EventLogReader(directory)
    if not reader.path.exists() and not follow:
        raise UserError(f"no event log at {reader.path}; check --state-dir")
    after: int | None = None
    start = _since(since)
    try:
        while True:
            events = reader.events(kind=kind, asset=asset, since=start, after_id=after)
            for event in events:
                click.echo(
                    json.dumps(event.as_json(), default=str) if as_json else _event_line(event)
                )
                after = event.id
            if not follow:
                return
            sys.stdout.flush()
            time.sleep(0.2)  # SQLite has no change notification; a short poll is cheap
    except KeyboardInterrupt:
        return


@main.command()
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@_common
def lineage(fmt: str, definitions: str | None, state_dir: str | None) -> None:
    """The asset graph."""
    _, defs = _load(definitions, state_dir)
    click.echo(render_lineage(defs, fmt))
