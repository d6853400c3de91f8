"""Writing commands: materialize, backfill and prune run in the daemon when one owns the state
directory (sent over its control socket), else here as the owner."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import click
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress

from headwater._cli_print import (
    echo,
    print_backfill,
    print_result,
    result_from_json,
)
from headwater._client import (
    DaemonClient,
    RequestCutShort,
)
from headwater._clock import SystemClock
from headwater._config import (
    resolve_executor,
    resolve_state_dir,
)
from headwater._durations import parse_retention
from headwater._storage import StorageFailure
from headwater.definitions import Definitions
from headwater.eventlog import EventLogReader
from headwater.execution import Engine, TickResult
from headwater.execution._backup import copy_snapshot, remove_snapshots
from headwater.planning import NodeKey

__all__ = [
    "backfill",
    "backup",
    "materialize",
    "prune",
]

from headwater._cli_common import (
    EXIT_INTERRUPTED,
    EXIT_LATE_OR_FAILED,
    UserError,
    common,
    owned_or_client,
    retention_option,
)
from headwater._errors import StateDirError

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
    with owned_or_client(directory, definitions, state_dir) as (target, defs):
        if isinstance(target, DaemonClient):
            _note_ignored_definitions(target, definitions)
            return _remote(target, ask, on_accepted, on_step)
        assert defs is not None
        return _direct(defs, directory, ask, on_accepted, on_step)


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
    # The configuration is read before the state directory is touched: a mistake there is
    # one message and exit 2.
    executor = resolve_executor(defs.origin or "").for_definitions(defs)

    async def go() -> tuple[TickResult, list[NodeKey]]:
        from headwater.sensors.files import sync_file_sources  # watchdog: only when it runs here

        async with Engine.open(defs, state_dir, SystemClock(), executor=executor) as engine:
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


@click.command()
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
@common
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
    if result.failed or result.refused:
        sys.exit(EXIT_LATE_OR_FAILED)


@click.command()
@click.argument("asset")
@click.option("--from", "first", required=True, metavar="P", help="First partition (included).")
@click.option("--to", "last", required=True, metavar="P", help="Last partition (included).")
@click.option("--force", is_flag=True, help="Run even the partitions that are fresh.")
@common
def backfill(
    asset: str,
    first: str,
    last: str,
    force: bool,
    definitions: str | None,
    state_dir: str | None,
) -> None:
    """Materialize ASSET's partitions from --from to --to, in dependency order.

    Upstream asset partitions they read that are not fresh run first. Only what is missing, stale or failed runs unless --force. A failed partition is reported
    and does not stop the others. Shows a progress bar on a terminal.
    """
    ask = _Ask(
        "/backfill",
        {"asset": asset, "from": first, "to": last, "force": force},
        lambda engine: engine.backfill(asset, first, last),
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
    if result.failed or result.refused:
        sys.exit(EXIT_LATE_OR_FAILED)


@click.command()
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
@common
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
        else retention_option(None)
    )
    directory = resolve_state_dir(state_dir)
    body = {
        "older_than_s": window.total_seconds() if older_than and window else None,
        "retention": older_than is None,  # the running daemon prunes with its own
        "values": values,
        "vacuum": vacuum,
    }
    with owned_or_client(directory, definitions, state_dir) as (target, defs):
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
    _print_pruned(done)


def _print_pruned(done: dict[str, Any]) -> None:
    if "events" in done:
        echo(
            f"pruned {done['events']} events older than {done['before']}; "
            f"the log gave back {done['bytes_freed']} bytes"
        )
    else:
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


@click.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@common
def backup(dest: Path, definitions: str | None, state_dir: str | None) -> None:
    """Copy the state directory to DEST (a new or empty folder), consistently, while the
    daemon runs: the log by SQLite's online backup, then its values. DEST is usable as a
    state directory (a daemon started from it runs again what was running at the snapshot).
    """
    directory = resolve_state_dir(state_dir)
    dest = dest.absolute()
    if dest == directory.absolute() or dest.is_relative_to(directory.absolute()):
        raise UserError(f"the backup destination {dest} is inside the state directory")
    with owned_or_client(directory, definitions, state_dir) as (target, defs):
        if isinstance(target, DaemonClient):
            staging = Path(target.post("/backup")["staging"])
            try:
                copied = _copy_out(staging, dest)
            finally:
                target.post("/backup/done", {"staging": str(staging)})
        else:
            assert defs is not None
            EventLogReader(directory).require()
            owned_defs = defs

            async def go() -> Path:
                async with Engine.open(owned_defs, directory, SystemClock()) as engine:
                    return await engine.snapshot(directory)

            staging = anyio.run(go, backend="asyncio")
            try:
                copied = _copy_out(staging, dest)
            finally:
                remove_snapshots(directory, staging)
    echo(
        f"backed up {directory} to {dest} ({copied} bytes); start a daemon with --state-dir {dest} to use it"
    )


def _copy_out(staging: Path, dest: Path) -> int:
    try:
        return copy_snapshot(staging, dest)
    except PermissionError as exc:
        raise StateDirError(
            f"cannot read the daemon's snapshot {staging} ({exc.strerror}): run the backup as "
            "the service's user (sudo -u …), who may read its state directory"
        ) from None
