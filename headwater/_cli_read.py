"""Reading commands: the event log directly, plus what only the running daemon knows (what is
queued or running, whether it is degraded); the daemon answers everything for a user who may
not read the state directory."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from headwater._cli_print import (
    echo,
    event_line,
    print_status_table,
    print_why,
)
from headwater._client import (
    DaemonClient,
    DaemonUnresponsive,
    find_daemon,
)
from headwater._clock import SystemClock, parse_instant
from headwater._config import (
    resolve_state_dir,
)
from headwater._durations import DurationError, parse_duration
from headwater._errors import HeadwaterError, StateDirError, did_you_mean
from headwater._events import EVENT_KINDS, Event, format_timestamp
from headwater._lineage import FORMATS, render_lineage
from headwater._report import StatusRow, status_rows
from headwater._statedir import read_owner
from headwater.eventlog import EventLogReader
from headwater.planning import Evaluator, NodeKey, explain

__all__ = [
    "lineage",
    "logs",
    "status",
    "why",
]

from headwater._cli_common import (
    EXIT_LATE_OR_FAILED,
    UserError,
    common,
    load,
    settings_for,
)
from headwater._config import Settings
from headwater._loading import LoadError, source_digest
from headwater.definitions import Definitions

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


def _local(
    definitions: str | None, state_dir: str | None, directory: Path
) -> tuple[Settings, Definitions] | None:
    """The definitions to read the log with here, or None to ask the running daemon: the
    state directory may not be read, or the definitions file does not load while a daemon
    serves the ones it loaded before (a reading command, `status --check` in a monitor
    among them, then tells what the daemon does, not a mistake in a file it does not run)."""
    if not _readable(directory):
        return None
    try:
        return load(definitions, state_dir)
    except LoadError as exc:
        if _live(directory) is None:
            raise
        echo(f"{exc}\nshowing what the running daemon serves instead", err=True)
        return None


def _note_edited(defs: Definitions, health: dict[str, Any] | None) -> None:
    """Say so when the file read here is not the one the daemon serves: what it decides
    under the edit is not what the daemon does until `headwater reload`."""
    served = None if health is None else health.get("definitions_digest")
    if served is not None and served != source_digest(defs):
        echo(
            "note: the definitions file changed since the daemon loaded it; this is what "
            "it decides under the file as it is now, once reloaded (`headwater reload`)",
            err=True,
        )


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
    return {
        (str(r["asset"]), r["partition"]): str(r["state"])
        + (f": {r['overdue']}" if r.get("overdue") else "")
        for r in health["runs"]
    }


@click.command()
@click.option(
    "--json", "as_json", is_flag=True, help="A JSON array, one object per asset partition."
)
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 when anything is late or failed, a blocking check failed (its readers wait), "
    "or the daemon is degraded.",
)
@click.option(
    "--all", "show_all", is_flag=True, help="List missing partitions one by one in the table."
)
@common
def status(
    as_json: bool, check: bool, show_all: bool, definitions: str | None, state_dir: str | None
) -> None:
    """Every asset partition's state, last materialization and SLA."""
    directory = resolve_state_dir(state_dir)
    if (local := _local(definitions, state_dir, directory)) is not None:
        settings, defs = local
        reader = EventLogReader(settings.state_dir)
        reader.require()
        rows = list(status_rows(defs, reader.load_state(long_lived=True), SystemClock().now()))
        health = _live(settings.state_dir)
        _note_edited(defs, health)
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
    if check and (degraded or any(r.late or r.state == "failed" or r.held_by_check for r in rows)):
        sys.exit(EXIT_LATE_OR_FAILED)


@click.command()
@click.argument("asset")
@click.option("--partition", "-p", metavar="P", help="The partition, for a partitioned asset.")
@common
def why(asset: str, partition: str | None, definitions: str | None, state_dir: str | None) -> None:
    """Why ASSET is stale, missing, failed or waiting, and what was decided about it."""
    directory = resolve_state_dir(state_dir)
    if (local := _local(definitions, state_dir, directory)) is None:
        with _daemon_for_reading(directory) as client:
            answer = client.get("/why", {"asset": asset, "partition": partition})
        events = [Event.from_json(e) for e in answer["events"]]
        print_why(answer["lines"], events, answer.get("failure"))
        return
    settings, defs = local
    reader = EventLogReader(settings.state_dir)
    reader.require()
    from headwater.execution._engine import recent_durations  # the engine: only here

    durations = recent_durations(settings.state_dir)  # what lazy assets plan ahead by
    ev = Evaluator(defs, reader.load_state(long_lived=True), SystemClock().now(), durations)
    ev.check_node(asset, partition, or_recorded=True)
    health = _live(settings.state_dir)
    lines = explain(
        ev, asset, partition, owned=health is not None or read_owner(settings.state_dir) is not None
    )
    _note_edited(defs, health)
    for run in health["runs"] if health else ():
        if (run["asset"], run["partition"]) == (asset, partition):
            lines.insert(1, f"{run['state']} since {run['since']} in the daemon")
    recent = reader.newest(asset, partition, 5)
    failure = None
    if ev.exists(asset, partition) and ev.status(asset, partition).state == "failed":
        failure = reader.last_failure(asset, partition)
    print_why(lines, list(reversed(recent)), failure)


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        delta = parse_duration(value, what="--since")
    except DurationError as exc:
        if "too long" in str(exc):
            raise UserError(str(exc)) from None
    else:
        try:
            return datetime.now(UTC) - delta
        except OverflowError:
            raise UserError(f"--since {value!r} reaches back before year 1") from None
    try:
        return parse_instant(value)
    except ValueError:
        raise UserError(
            f"--since {value!r} is neither a duration such as 1h nor an ISO-8601 time "
            "(such as 2026-01-05T06:00Z)"
        ) from None


@click.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they are written.")
@click.option("--asset", "-a", metavar="A", help="Only events of this asset.")
@click.option("--kind", "-k", metavar="K", help="Only events of this kind (e.g. materialization).")
@click.option(
    "--since", metavar="AGE", help="Only events newer than this (1h, 30m) or an ISO time."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@common
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
        settings_for(definitions, state_dir).state_dir
        if definitions
        else resolve_state_dir(state_dir)
    )
    start = _since(since)
    if kind is not None and kind not in EVENT_KINDS:
        raise UserError(f"--kind {kind!r} is not an event kind{did_you_mean(kind, EVENT_KINDS)}; "
                        f"kinds: {', '.join(EVENT_KINDS)}")  # fmt: skip
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
                "since": None if start is None else format_timestamp(start),
                "after_id": None if after is None else str(after),
            }
            return [Event.from_json(e) for e in client.get("/events", params)]

        _print_events(ask, follow, as_json)


def _check_asset(
    asset: str, definitions: str | None, state_dir: str | None, reader: EventLogReader
) -> None:
    """An asset (or source) that is in neither the definitions nor the log is a typo."""
    try:
        known = set(load(definitions, state_dir)[1].nodes)
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


@click.command()
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@common
def lineage(fmt: str, definitions: str | None, state_dir: str | None) -> None:
    """The asset graph."""
    _, defs = load(definitions, state_dir)
    click.echo(render_lineage(defs, fmt))
