"""The command line. Parsing and printing only; the work happens in the library.

Writing commands (``materialize``, ``backfill``) run in the daemon when one owns the state
directory (sent over its control socket), else they take ownership and run here. Reading
commands read the event log directly, and add what only a running daemon knows (what is queued
or running, whether it is degraded); when they may not read the state directory, they ask the
daemon for everything.
"""

from __future__ import annotations

import logging

import click

from headwater._cli_common import (
    Seconds,
    common,
    http_option,
    load,
    openlineage_option,
    retention_option,
    settings_for,
)
from headwater._cli_daemon import health, reload, stop
from headwater._cli_plan import plan, replay
from headwater._cli_read import lineage, logs, status, why
from headwater._cli_write import backfill, backup, materialize, prune
from headwater._config import resolve_executor
from headwater._logging import configure_logging

__all__ = ["main"]


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
    type=Seconds(0),
    default=30.0,
    show_default=True,
    envvar="HEADWATER_STOP_GRACE",
    help="Seconds running materializations may take to finish after SIGTERM ($HEADWATER_STOP_GRACE).",
)
@click.option(
    "--rescan-interval",
    type=Seconds(0.1),
    default=300.0,
    show_default=True,
    envvar="HEADWATER_RESCAN_INTERVAL",
    help="Seconds between reconciliation rescans of file sources ($HEADWATER_RESCAN_INTERVAL).",
)
@click.option(
    "--settle",
    type=Seconds(0),
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
@click.option(
    "--http",
    metavar="[HOST:]PORT",
    help="Also serve the read-only API, /metrics and the web page on this TCP address "
    "(a bare port: 127.0.0.1 only) ($HEADWATER_HTTP, [tool.headwater] http; default off).",
)
@click.option(
    "--http-write",
    is_flag=True,
    help="Serve commands that change something (materialize, backfill, reload, stop...) on "
    "the TCP address too; by default they stay on the unix socket.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    envvar="HEADWATER_LOG_LEVEL",
    help="The least level of the log lines written ($HEADWATER_LOG_LEVEL); debug adds files "
    "seen again unchanged and worker starts.",
)
@common
def run(
    grace: float,
    rescan_interval: float,
    settle: float,
    retention: str | None,
    http: str | None,
    http_write: bool,
    log_level: str,
    definitions: str | None,
    state_dir: str | None,
) -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT.

    Reacts to file events, object-store changes and the clock; SIGHUP reloads the definitions.
    Under systemd (Type=notify) it reports READY, STATUS, RELOADING, STOPPING and watchdog pings.
    It owns the state directory: a second daemon there exits 3; other commands talk to it.
    """
    from headwater.daemon import DaemonSettings, run_daemon  # the server stack, for `run` only

    configure_logging(level=logging.getLevelNamesMapping()[log_level.upper()])
    settings = settings_for(definitions, state_dir)
    run_daemon(
        DaemonSettings(
            definitions=settings.definitions,
            state_dir=settings.state_dir,
            grace=grace,
            rescan_interval=rescan_interval,
            settle=settle,
            retention=retention_option(retention),
            executor=resolve_executor(settings.definitions),
            http=http_option(http, write=http_write),
            openlineage=openlineage_option(),
        )
    )


@main.command()
@common
def validate(definitions: str | None, state_dir: str | None) -> None:
    """Load and check the definitions."""
    settings, defs = load(definitions, state_dir)
    checks = sum(len(v) for v in defs.checks.values())
    click.echo(
        f"ok: {settings.definitions}: {len(defs.assets)} assets, {len(defs.sources)} sources, "
        f"{checks} checks"
    )


for _command in (
    materialize, backfill, prune, backup, status, why, logs, lineage, health, reload, stop, plan,
    replay
):  # fmt: skip
    main.add_command(_command)
