"""The command line. Parsing and printing only; the work happens in the library.

Writing commands (``materialize``, ``backfill``) run in the daemon when one owns the state
directory (sent over its control socket), else they take ownership and run here. Reading
commands read the event log directly, and add what only a running daemon knows (what is queued
or running, whether it is degraded); when they may not read the state directory, they ask the
daemon for everything.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import anyio
import click
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress

from headwater._cli_print import (
    echo,
    event_line,
    print_backfill,
    print_result,
    print_status_table,
    print_why,
    printable,
    result_from_json,
)
from headwater._client import (
    DaemonClient,
    DaemonUnresponsive,
    RequestCutShort,
    connect_to_owner,
    find_daemon,
    starting_daemon,
    wait_for_exit,
)
from headwater._clock import SystemClock, parse_instant
from headwater._config import (
    NoDefinitions,
    Settings,
    resolve_option,
    resolve_settings,
    resolve_state_dir,
)
from headwater._durations import parse_duration, parse_retention
from headwater._errors import HeadwaterError, StateDirError, did_you_mean
from headwater._events import Event, EventKind
from headwater._lineage import FORMATS, render_lineage
from headwater._loading import load_definitions
from headwater._logging import configure_logging
from headwater._report import StatusRow, status_rows
from headwater._statedir import OwnerInfo, Ownership, StateDirBusy, read_owner
from headwater._storage import StorageFailure
from headwater.definitions import Definitions
from headwater.eventlog import EventLogReader
from headwater.execution import Engine, TickResult
from headwater.planning import Evaluator, NodeKey, explain

__all__ = ["main"]

P = ParamSpec("P")
R = TypeVar("R")

EXIT_LATE_OR_FAILED = 1
EXIT_USAGE = 2
EXIT_STATE_DIR = 3
EXIT_INTERRUPTED = 130


class UserError(click.ClickException):
    """A user's mistake: one paragraph on stderr, exit 2, no traceback."""

    exit_code = EXIT_USAGE


class RequestFailed(click.ClickException):
    """A request whose outcome is not a success: exit 1."""

    exit_code = EXIT_LATE_OR_FAILED


class StateDirUnusable(click.ClickException):
    """Another process owns the state directory, or its log is unreadable: exit 3."""

    exit_code = EXIT_STATE_DIR


def _user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except RequestCutShort as exc:
            raise RequestFailed(printable(str(exc))) from None
        except (StateDirError, StorageFailure) as exc:
            raise StateDirUnusable(printable(str(exc))) from None
        except HeadwaterError as exc:
            raise UserError(printable(str(exc))) from None

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
    """Settings from options, environment and pyproject.toml; with no definitions named
    anywhere, those of the daemon that owns the state directory."""
    try:
        return resolve_settings(definitions, state_dir)
    except NoDefinitions:
        directory = resolve_state_dir(state_dir)
        owner = read_owner(directory)
        if owner is None or owner.role != "daemon" or not owner.definitions:
            raise
        return Settings(definitions=owner.definitions, state_dir=directory)


def _load(definitions: str | None, state_dir: str | None) -> tuple[Settings, Definitions]:
    settings = _settings(definitions, state_dir)
    return settings, load_definitions(settings.definitions)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="headwater")
def main() -> None:
    """headwater: keep data assets up to date, re-running only what changed data makes stale."""
    # Only the daemon's own log is a stream of events; a command says what it did in its
    # output, and the log lines of its engine would only get in the way (warnings still show).
    configure_logging(level=logging.WARNING)


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
@click.option(
    "--retention",
    metavar="D",
    help="Keep events this long (30d, 12h) or 'forever' ($HEADWATER_RETENTION, "
    "[tool.headwater] retention; default 30d).",
)
@_common
def run(
    grace: float,
    rescan_interval: float,
    settle: float,
    retention: str | None,
    definitions: str | None,
    state_dir: str | None,
) -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT.

    Reacts to file events, object-store changes and the clock; SIGHUP reloads the definitions.
    Under systemd (Type=notify) it reports READY, STATUS, RELOADING, STOPPING and watchdog pings.
    It owns the state directory: a second daemon there exits 3; other commands talk to it.
    """
    from headwater.daemon import DaemonSettings, run_daemon  # the server stack, for `run` only

    configure_logging()
    settings = _settings(definitions, state_dir)
    run_daemon(
        DaemonSettings(
            definitions=settings.definitions,
            state_dir=settings.state_dir,
            grace=grace,
            rescan_interval=rescan_interval,
            settle=settle,
            retention=_retention(retention),
        )
    )


def _retention(value: str | None) -> timedelta | None:
    return resolve_option(
        "retention",
        value,
        default="30d",
        parse=lambda text, where: parse_retention(text, what=where),
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


# -- writing: in the daemon when one runs, else here as the owner -----------------------------


@dataclass(frozen=True, slots=True)
class _Ask:
    """A request to materialize, the same whether the daemon or this process runs it."""

    path: str
    body: dict[str, Any]
    nodes: Callable[[Engine], list[NodeKey]]
    force: bool


Accepted = Callable[[list[NodeKey]], None]
Step = Callable[[NodeKey, str], None]


def _submit(
    ask: _Ask,
    definitions: str | None,
    state_dir: str | None,
    on_accepted: Accepted,
    on_step: Step,
) -> tuple[TickResult, list[NodeKey]]:
    directory = resolve_state_dir(state_dir)
    with _owned_or_client(directory, definitions, state_dir) as (target, defs):
        if isinstance(target, DaemonClient):
            _note_ignored_definitions(target, definitions)
            return _remote(target, ask, on_accepted, on_step)
        assert defs is not None
        return _direct(defs, directory, ask, on_accepted, on_step)


@contextmanager
def _owned_or_client(
    directory: Path, definitions: str | None, state_dir: str | None
) -> Iterator[tuple[DaemonClient | Ownership, Definitions | None]]:
    """The daemon that owns ``directory``, as a client; or, with none running, ownership of
    it here (after the definitions load: a mistake leaves no state directory behind)."""
    owner = _daemon_owner(directory)
    if owner is None:
        defs = _load(definitions, state_dir)[1]
        fresh = not directory.exists()
        try:
            ownership = Ownership.acquire(directory, "cli")
        except StateDirBusy as busy:
            if busy.owner is None or busy.owner.role != "daemon":
                raise
            owner = busy.owner
        else:
            with ownership:
                try:
                    yield ownership, defs
                except HeadwaterError:
                    if fresh:  # nothing of the request happened: leave no trace of it
                        shutil.rmtree(directory, ignore_errors=True)
                    raise
            return
    with connect_to_owner(directory, owner) as client:
        yield client, None


def _daemon_owner(directory: Path) -> OwnerInfo | None:
    """The daemon recorded as owning ``directory`` if its process lives (without touching
    the directory: this user may not be able to write it)."""
    try:
        owner = read_owner(directory)
    except PermissionError:
        return None
    return owner if owner is not None and owner.role == "daemon" else None


def _note_ignored_definitions(client: DaemonClient, definitions: str | None) -> None:
    serving = client.owner.definitions if client.owner else None
    if definitions and serving and str(Path(definitions).absolute()) != serving.split(":")[0]:
        click.echo(
            f"note: {client.describe()} runs its own definitions ({serving}); "
            f"--definitions {definitions} is not used",
            err=True,
        )


def _direct(
    defs: Definitions, state_dir: Path, ask: _Ask, on_accepted: Accepted, on_step: Step
) -> tuple[TickResult, list[NodeKey]]:
    async def go() -> tuple[TickResult, list[NodeKey]]:
        from headwater.sensors.files import sync_file_sources  # watchdog: only when it runs here

        async with Engine.open(defs, state_dir, SystemClock()) as engine:
            await sync_file_sources(engine)  # first: files may bring new dynamic partitions
            nodes = ask.nodes(engine)
            on_accepted(nodes)
            result = await engine.materialize(
                nodes, force=ask.force, only_requested=True, on_step=on_step
            )
            if engine.degraded is not None:  # no daemon here to ride it out: say so
                raise StorageFailure(Path(engine.degraded.path), engine.degraded.reason)
            return result, nodes

    try:
        return anyio.run(go, backend="asyncio")
    except KeyboardInterrupt:
        # A function may still run in a thread: leave now, with the lock held until the
        # process is gone, so that nothing it does can land in a directory another owns.
        click.echo(
            "interrupted: runs in progress were abandoned; the next owner runs them again", err=True
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)


def _remote(
    client: DaemonClient, ask: _Ask, on_accepted: Accepted, on_step: Step
) -> tuple[TickResult, list[NodeKey]]:
    nodes: list[NodeKey] = []
    try:
        messages = list(_follow(client, ask, on_accepted, on_step, nodes))
    except KeyboardInterrupt:
        echo(f"interrupted: {client.describe()} goes on with the request; `headwater logs` "
             "shows what it did", err=True)  # fmt: skip
        sys.exit(EXIT_INTERRUPTED)
    if messages:
        return result_from_json(messages[-1]), nodes
    raise RequestCutShort(
        f"{client.describe()} stopped before the request finished; "
        "what it did is in the event log: headwater logs"
    )


def _follow(
    client: DaemonClient, ask: _Ask, on_accepted: Accepted, on_step: Step, nodes: list[NodeKey]
) -> Iterator[dict[str, Any]]:
    """The request's progress, shown as it comes; yields its result."""
    for message in client.stream(ask.path, ask.body):
        kind = message.get("type")
        if kind == "accepted":
            nodes[:] = [(str(a), p) for a, p in message["requested"]]
            on_accepted(nodes)
        elif kind == "step":
            on_step((str(message["asset"]), message["partition"]), str(message["outcome"]))
        elif kind == "result":
            yield message
            return


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
    of what changes run in the same plan. With a daemon running, the daemon runs them.
    """
    ask = _Ask(
        "/materialize",
        {"selection": list(selection), "partitions": list(partitions) or None, "force": force},
        lambda engine: engine.resolve(selection, list(partitions) or None),
        force,
    )
    result, nodes = _submit(ask, definitions, state_dir, lambda nodes: None, lambda n, o: None)
    print_result(result, len(nodes))
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
    ask = _Ask(
        "/backfill",
        {"asset": asset, "from": first, "to": last, "force": force},
        lambda engine: [(asset, k) for k in engine.partition_range(asset, first, last)],
        force,
    )
    console = Console(stderr=True)
    with Progress(
        *Progress.get_default_columns(),
        MofNCompleteColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    ) as progress:
        wanted: set[NodeKey] = set()
        bar = progress.add_task(f"backfill {asset}", total=None)

        def accepted(nodes: list[NodeKey]) -> None:
            wanted.update(nodes)
            progress.update(bar, total=len(nodes))

        def step(node: NodeKey, outcome: str) -> None:
            if node in wanted:
                progress.advance(bar)

        result, nodes = _submit(ask, definitions, state_dir, accepted, step)
    print_backfill(asset, first, last, result, nodes)
    if result.failed:
        sys.exit(EXIT_LATE_OR_FAILED)


# -- reading: the event log directly, plus what only the running daemon knows -----------------


@contextmanager
def _daemon_for_reading(directory: Path) -> Iterator[DaemonClient]:
    """The daemon, for a user who may not read the state directory."""
    client = find_daemon(directory)
    if client is None:
        raise StateDirError(
            f"cannot read the state directory {directory} (permission denied), and no daemon "
            "answers on a control socket to ask instead; run as the service's user, or set "
            "HEADWATER_SOCKET to the daemon's socket"
        )
    with client:
        yield client


def _readable(directory: Path) -> bool:
    """False when the state directory exists but this user may not read it."""
    try:
        (directory / "events.db").exists()
    except PermissionError:
        return False
    return True


def _live(directory: Path) -> dict[str, Any] | None:
    """The running daemon's own state (``/health``), if a daemon owns ``directory``; a daemon
    that does not answer within seconds is reported as such (``unresponsive``)."""
    try:
        client = find_daemon(directory, timeout=_OVERLAY_TIMEOUT)
    except DaemonUnresponsive as exc:
        return {"unresponsive": str(exc), "runs": [], "degraded": True}
    if client is None:
        return None
    with client:
        return client.health


_OVERLAY_TIMEOUT = 2.0
"""Seconds a reading command waits for the daemon's live state before going on without it."""


def _runs(health: dict[str, Any] | None) -> dict[NodeKey, str]:
    if health is None:
        return {}
    return {(str(r["asset"]), r["partition"]): str(r["state"]) for r in health["runs"]}


@main.command()
@click.option(
    "--json", "as_json", is_flag=True, help="A JSON array, one object per asset partition."
)
@click.option(
    "--check", is_flag=True, help="Exit 1 when anything is late or failed, or the daemon degraded."
)
@click.option(
    "--all", "show_all", is_flag=True, help="List missing partitions one by one in the table."
)
@_common
def status(
    as_json: bool, check: bool, show_all: bool, definitions: str | None, state_dir: str | None
) -> None:
    """Every asset partition's state, last materialization and SLA."""
    directory = resolve_state_dir(state_dir)
    if _readable(directory):
        settings, defs = _load(definitions, state_dir)
        reader = EventLogReader(settings.state_dir)
        reader.require()
        rows = list(status_rows(defs, reader.load_state(), SystemClock().now()))
        health = _live(settings.state_dir)
        runs = _runs(health)
    else:
        with _daemon_for_reading(directory) as client:
            raw = client.get("/status")
            health = client.get("/health")
        rows = [StatusRow.from_json(r) for r in raw]
        runs = _runs(health)
    if as_json:
        out = [{**r.as_json(), "run": runs.get((r.asset, r.partition))} for r in rows]
        click.echo(json.dumps(out, indent=2))
    else:
        print_status_table(rows, show_all, runs)
    degraded = health is not None and bool(health.get("degraded"))
    if health is not None and "unresponsive" in health:
        echo(str(health["unresponsive"]), err=True)
    elif degraded and not as_json:
        echo(f"the daemon is degraded: {health and health.get('degraded_reason')}", err=True)
    if check and (degraded or any(r.late or r.state == "failed" for r in rows)):
        sys.exit(EXIT_LATE_OR_FAILED)


@main.command()
@click.argument("asset")
@click.option("--partition", "-p", metavar="P", help="The partition, for a partitioned asset.")
@_common
def why(asset: str, partition: str | None, definitions: str | None, state_dir: str | None) -> None:
    """Why ASSET is stale, missing, failed or waiting, and what was decided about it."""
    directory = resolve_state_dir(state_dir)
    if not _readable(directory):
        with _daemon_for_reading(directory) as client:
            answer = client.get("/why", {"asset": asset, "partition": partition})
        events = [Event.from_json(e) for e in answer["events"]]
        print_why(answer["lines"], events, answer.get("traceback"))
        return
    settings, defs = _load(definitions, state_dir)
    reader = EventLogReader(settings.state_dir)
    reader.require()
    ev = Evaluator(defs, reader.load_state(), SystemClock().now())
    ev.check_node(asset, partition)
    lines = explain(ev, asset, partition)
    health = _live(settings.state_dir)
    for run in health["runs"] if health else ():
        if (run["asset"], run["partition"]) == (asset, partition):
            lines.insert(1, f"{run['state']} since {run['since']} in the daemon")
    recent = reader.events(asset=asset, partition=partition, newest_first=True, limit=5)
    print_why(lines, list(reversed(recent)), _last_traceback(reader, asset, partition, ev))


def _last_traceback(
    reader: EventLogReader, asset: str, partition: str | None, ev: Evaluator
) -> str | None:
    """The traceback of the latest failed run, while the partition is failed."""
    if ev.status(asset, partition).state != "failed":
        return None
    failed = reader.events(
        kind="run_failed", asset=asset, partition=partition, newest_first=True, limit=1
    )
    trace = failed[0].payload.get("traceback") if failed else None
    return trace if isinstance(trace, str) else None


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
    start = _since(since)
    if kind is not None and kind not in _KINDS:
        raise UserError(f"--kind {kind!r} is not an event kind{did_you_mean(kind, _KINDS)}; "
                        f"kinds: {', '.join(_KINDS)}")  # fmt: skip
    if _readable(directory):
        reader = EventLogReader(directory)
        if not follow:
            reader.require()
        if asset is not None:
            _check_asset(asset, definitions, state_dir, reader)

        def read(after: int | None) -> list[Event]:
            return reader.events(kind=kind, asset=asset, since=start, after_id=after)

        _print_events(read, follow, as_json)
        return
    with _daemon_for_reading(directory) as client:

        def ask(after: int | None) -> list[Event]:
            params = {
                "kind": kind,
                "asset": asset,
                "after_id": None if after is None else str(after),
            }
            events = [Event.from_json(e) for e in client.get("/events", params)]
            return [e for e in events if start is None or e.timestamp >= start]

        _print_events(ask, follow, as_json)


_KINDS = [str(k) for k in EventKind]


def _check_asset(
    asset: str, definitions: str | None, state_dir: str | None, reader: EventLogReader
) -> None:
    """An asset (or source) that is in neither the definitions nor the log is a typo."""
    try:
        known = set(_load(definitions, state_dir)[1].nodes)
    except HeadwaterError:  # no definitions to ask: the log knows what it holds
        known = set()
    known |= reader.assets()
    if asset not in known:
        raise UserError(f"--asset {asset!r}: no such asset or source{did_you_mean(asset, known)}")


def _print_events(
    read: Callable[[int | None], Sequence[Event]], follow: bool, as_json: bool
) -> None:
    after: int | None = None
    try:
        while True:
            events = read(after)
            for event in events:
                click.echo(
                    json.dumps(event.as_json(), default=str) if as_json else event_line(event)
                )
                after = event.id
            if events:
                continue  # a page: read on before waiting
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


# -- the daemon itself ------------------------------------------------------------------------


def _running(state_dir: str | None, *, wait: bool) -> DaemonClient | None:
    """The daemon owning the state directory; one still starting is waited for (``wait``)
    or reported as starting."""
    directory = resolve_state_dir(state_dir)
    client = find_daemon(directory)
    if client is not None:
        return client
    starting = starting_daemon(directory)
    if starting is not None:
        if wait:
            return connect_to_owner(directory, starting)
        echo(f"starting: the daemon, {starting.describe()}, is loading its definitions")
        return None
    echo(f"not running: no daemon owns {directory.absolute()}")
    return None


@main.command()
@click.option("--json", "as_json", is_flag=True, help="The daemon's state as a JSON object.")
@_common
def health(as_json: bool, definitions: str | None, state_dir: str | None) -> None:
    """The running daemon's own state: PID, uptime, degraded or not, event log, runs.

    Exits 1 when no daemon runs, or when it is degraded.
    """
    client = _running(state_dir, wait=False)
    if client is None:
        sys.exit(EXIT_LATE_OR_FAILED)
    with client:
        info = client.health or client.get("/health")
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        log = info["event_log"]
        state = "DEGRADED: " + str(info["degraded_reason"]) if info["degraded"] else info["state"]
        click.echo(f"daemon PID {info['pid']} ({info['version']}): {state}")
        click.echo(f"  up {info['uptime_s']:.0f} s, since {info['started_at']}")
        click.echo(f"  definitions: {info['definitions']}")
        click.echo(f"  state directory: {info['state_dir']}; socket: {info['socket']}")
        click.echo(
            f"  event log: {log['bytes']} bytes, oldest event {log['oldest_event'] or 'none'}"
        )
        click.echo(f"  executor: {info['executor']}, max_concurrency {info['max_concurrency']}")
        for run in info["runs"]:
            where = run["asset"] + (f"[{run['partition']}]" if run["partition"] else "")
            click.echo(f"  {run['state']}: {where} since {run['since']}")
    if info["degraded"]:
        sys.exit(EXIT_LATE_OR_FAILED)


@main.command()
@_common
def reload(definitions: str | None, state_dir: str | None) -> None:
    """Make the running daemon load its definitions again (as SIGHUP does).

    Exits 2 (keeping the old definitions) when the new ones do not load, 1 when no daemon runs.
    """
    client = _running(state_dir, wait=True)
    if client is None:
        sys.exit(EXIT_LATE_OR_FAILED)
    with client:
        answer = client.post("/reload")
    if answer.get("pending"):
        echo(f"reloading: {client.describe()} takes the new definitions once the functions "
             "running now have finished")  # fmt: skip
    else:
        echo(f"reloaded: {client.describe()}")


@main.command()
@_common
def stop(definitions: str | None, state_dir: str | None) -> None:
    """Stop the running daemon as SIGTERM does, and wait until it has exited.

    Running functions may finish within its grace period; exits 1 when no daemon runs.
    """
    client = _running(state_dir, wait=True)
    if client is None:
        sys.exit(EXIT_LATE_OR_FAILED)
    with client:
        answer = client.post("/stop")
    pid = int(answer["pid"])
    if not wait_for_exit(pid, float(answer.get("grace_s", 30)) + 15):
        click.echo(f"the daemon (PID {pid}) is still stopping", err=True)
        sys.exit(EXIT_LATE_OR_FAILED)
    click.echo(f"stopped: daemon PID {pid}")


@main.command()
@click.option(
    "--older-than",
    metavar="D",
    help="Prune events older than this (default: the retention, [tool.headwater] retention).",
)
@click.option("--values", is_flag=True, help="Delete stored values that no asset partition holds.")
@click.option(
    "--vacuum",
    is_flag=True,
    help="Convert an older log to incremental auto-vacuum (a full VACUUM: needs free space "
    "about the log's size).",
)
@_common
def prune(
    older_than: str | None,
    values: bool,
    vacuum: bool,
    definitions: str | None,
    state_dir: str | None,
) -> None:
    """Apply retention now: through the running daemon, or here when none runs.

    Keeps the newest observation, materialization and run events of each asset partition and
    open SLA violations, so `status` and `why` explain everything afterwards.
    """
    window = (
        parse_retention(older_than, what="--older-than")
        if older_than is not None
        else _retention(None)
    )
    directory = resolve_state_dir(state_dir)
    body = {
        "older_than_s": None if window is None else window.total_seconds(),
        "values": values,
        "vacuum": vacuum,
    }
    with _owned_or_client(directory, definitions, state_dir) as (target, defs):
        if isinstance(target, DaemonClient):
            done = target.post("/prune", body)
        else:
            assert defs is not None
            EventLogReader(directory).require()
            owned_defs = defs

            async def go() -> dict[str, Any]:
                async with Engine.open(owned_defs, directory, SystemClock()) as engine:
                    cutoff = None if window is None else engine.clock.now() - window
                    return await engine.maintain(cutoff, values=values, vacuum=vacuum)

            done = anyio.run(go, backend="asyncio")
    _print_pruned(done, window)


def _print_pruned(done: dict[str, Any], window: timedelta | None) -> None:
    if "events" in done:
        echo(
            f"pruned {done['events']} events older than {done['before']}; "
            f"the log gave back {done['bytes_freed']} bytes"
        )
    elif window is None:
        click.echo("retention is forever: no event pruned (give --older-than)")
    removed = done.get("values")
    if isinstance(removed, list):
        click.echo(f"removed {len(removed)} stored values that no asset partition holds")
        for path in removed:
            echo(f"  {path}")
    elif removed is not None:
        echo(str(removed))
    if "vacuum_bytes_freed" in done:
        click.echo(f"vacuumed: the log gave back {done['vacuum_bytes_freed']} bytes")
