"""Commands about the daemon itself: health, reload, stop."""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import click

from headwater._cli_print import (
    echo,
)
from headwater._client import (
    DaemonClient,
    connect_to_owner,
    deaf_daemon,
    find_daemon,
    starting_daemon,
    wait_for_exit,
)
from headwater._config import (
    resolve_state_dir,
)

__all__ = [
    "health",
    "reload",
    "stop",
]

from headwater._cli_common import (
    EXIT_LATE_OR_FAILED,
    common,
)

# -- the daemon itself ------------------------------------------------------------------------


def _running(state_dir: str | None, *, wait: bool, deaf_ok: bool = False) -> DaemonClient | None:
    """The daemon owning the state directory; one still starting is waited for (``wait``)
    or reported as starting; one whose socket does not answer is reported (unless the
    caller deals with it: ``deaf_ok``)."""
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
    if (deaf := deaf_daemon(directory)) is not None:
        if deaf_ok:
            return None
        echo(
            f"not answering: the daemon, {deaf.describe()}, owns {directory.absolute()}, but "
            f"nothing answers on its control socket {deaf.socket} (deleted or replaced?); "
            f"restart it (systemctl restart headwater), or `headwater stop` stops it by signal",
            err=True,
        )
        return None
    echo(f"not running: no daemon owns {directory.absolute()}")
    return None


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The daemon's state as a JSON object.")
@common
def health(as_json: bool, definitions: str | None, state_dir: str | None) -> None:
    """The running daemon's own state: PID, uptime, degraded or not, event log, runs.

    Exits 1 when no daemon runs, when it is degraded, or when an object store it watches
    cannot be listed.
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
        _print_executor(info["executor"] or {}, info["max_concurrency"])
        for run in info["runs"]:
            where = run["asset"] + (f"[{run['partition']}]" if run["partition"] else "")
            overdue = f" ({run['overdue']})" if run.get("overdue") else ""
            echo(f"  {run['state']}: {where} since {run['since']}{overdue}")
        for blind in info.get("unreadable_sources", ()):
            echo(f"  CANNOT LIST object source {blind['source']} for {blind['for_s']:.0f} s: "
                 f"{blind['error']}")  # fmt: skip
    if info["degraded"] or info.get("unreadable_sources"):
        sys.exit(EXIT_LATE_OR_FAILED)


def _print_executor(executor: dict[str, Any], slots: int | None) -> None:
    click.echo(f"  executor: {executor.get('executor')}, max_concurrency {slots}")
    if scheduler := executor.get("scheduler"):  # dask
        workers = executor.get("dask_workers", ())
        echo(f"    scheduler {scheduler} ({executor.get('status')}): {len(workers)} workers, "
             f"{executor.get('lost', 0)} lost")  # fmt: skip
        for address in workers:
            echo(f"    worker {address}")
    if executor.get("fork_server"):
        echo(f"    fork server PID {executor['fork_server']}")
    for worker in executor.get("workers", ()):
        doing = ""
        if worker["state"] == "running":
            where = worker["asset"] + (f"[{worker['partition']}]" if worker["partition"] else "")
            doing = f" {where} for {worker['running_s']} s"
        echo(f"    worker PID {worker['pid']}: {worker['state']}{doing}, {worker['runs']} runs")
    for left in executor.get("threads_left_behind", ()):
        where = left["asset"] + (f"[{left['partition']}]" if left["partition"] else "")
        echo(f"    thread left behind after its timeout: {where}, running {left['running_s']} s")


@click.command()
@common
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


@click.command()
@common
def stop(definitions: str | None, state_dir: str | None) -> None:
    """Stop the running daemon as SIGTERM does, and wait until it has exited.

    Running functions may finish within its grace period; exits 1 when no daemon runs.
    """
    client = _running(state_dir, wait=True, deaf_ok=True)
    if client is None:
        deaf = deaf_daemon(resolve_state_dir(state_dir))
        if deaf is None:
            sys.exit(EXIT_LATE_OR_FAILED)
        try:  # as systemd stops it: the socket is not the only way
            os.kill(deaf.pid, signal.SIGTERM)
        except OSError as exc:
            echo(f"cannot signal PID {deaf.pid}: {exc.strerror}", err=True)
            sys.exit(EXIT_LATE_OR_FAILED)
        answer: dict[str, Any] = {"pid": deaf.pid}
        echo(f"stopping: its control socket does not answer; sent SIGTERM to PID {deaf.pid}")
    else:
        with client:
            answer = client.post("/stop")
    pid = int(answer["pid"])
    if not wait_for_exit(pid, float(answer.get("grace_s", 30)) + 15):
        click.echo(f"the daemon (PID {pid}) is still stopping", err=True)
        sys.exit(EXIT_LATE_OR_FAILED)
    click.echo(f"stopped: daemon PID {pid}")
