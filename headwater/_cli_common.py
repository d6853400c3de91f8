"""What every command shares: exit codes, user-error handling, settings, and whether
this process owns the state directory or is the client of the daemon that does."""

from __future__ import annotations

import functools
import math
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

from headwater._cli_print import (
    printable,
)
from headwater._client import (
    DaemonClient,
    RequestCutShort,
    connect_to_owner,
)
from headwater._config import (
    NoDefinitions,
    Settings,
    config_table,
    resolve_option,
    resolve_settings,
    resolve_state_dir,
)
from headwater._durations import parse_retention
from headwater._errors import HeadwaterError, StateDirError
from headwater._loading import load_definitions
from headwater._statedir import OwnerInfo, Ownership, StateDirBusy, read_owner
from headwater._storage import StorageFailure
from headwater.definitions import Definitions

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_LATE_OR_FAILED",
    "EXIT_STATE_DIR",
    "EXIT_USAGE",
    "RequestFailed",
    "Seconds",
    "StateDirUnusable",
    "UserError",
    "common",
    "daemon_owner",
    "load",
    "owned_or_client",
    "retention_option",
    "settings_for",
    "user_errors",
]

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


if TYPE_CHECKING:
    from headwater.daemon._http import HttpAddress
    from headwater.daemon._openlineage import LineageSettings

    _FloatParam = click.ParamType[float]
else:  # click < 8.2 has no generic ParamType at run time
    _FloatParam = click.ParamType


class Seconds(_FloatParam):
    """A number of seconds: finite, at least ``minimum``, at most a year (``nan``, ``inf`` and
    overflowing values are usage errors naming the option, not a spinning daemon)."""

    name = "seconds"

    def __init__(self, minimum: float) -> None:
        self.minimum = minimum

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(number) or not self.minimum <= number <= _YEAR:
            self.fail(
                f"{value!r} must be a number of seconds from {self.minimum:g} to {_YEAR:g}",
                param,
                ctx,
            )
        return number


_YEAR = 365 * 86400.0


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
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


def _not_empty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An empty value is a mistake (an unset shell variable), not "the default": it would
    write ./.headwater or read the daemon's definitions without a word."""
    if value is not None and not value.strip():
        raise click.BadParameter("is empty; leave the option out for the default")
    return value


def common(fn: Callable[P, R]) -> Callable[P, R]:
    fn = click.option(
        "--state-dir",
        metavar="DIR",
        callback=_not_empty,
        help="State directory (default: $HEADWATER_STATE_DIR, [tool.headwater], $STATE_DIRECTORY, .headwater/).",
    )(fn)
    fn = click.option(
        "--definitions",
        "-d",
        metavar="TARGET",
        callback=_not_empty,
        help="A Python file or module:attribute (default: $HEADWATER_DEFINITIONS, [tool.headwater]).",
    )(fn)
    return user_errors(fn)


def settings_for(definitions: str | None, state_dir: str | None) -> Settings:
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


def load(definitions: str | None, state_dir: str | None) -> tuple[Settings, Definitions]:
    settings = settings_for(definitions, state_dir)
    return settings, load_definitions(settings.definitions)


def http_option(value: str | None, *, write: bool) -> HttpAddress | None:
    from headwater.daemon._http import parse_http_address  # only `run` pays for the server

    address = resolve_option("http", value, default="", parse=parse_http_address)
    if address is None:
        if write:
            raise UserError("--http-write needs an address to serve on: give --http too")
        return None
    return replace(address, write=write)


def openlineage_option() -> LineageSettings | None:
    from headwater.daemon._openlineage import lineage_settings

    found = config_table("openlineage")
    return None if found is None else lineage_settings(found[1], found[0])


def retention_option(value: str | None) -> timedelta | None:
    return resolve_option(
        "retention",
        value,
        default="30d",
        parse=lambda text, where: parse_retention(text, what=where),
    )


@contextmanager
def owned_or_client(
    directory: Path, definitions: str | None, state_dir: str | None
) -> Iterator[tuple[DaemonClient | Ownership, Definitions | None]]:
    """The daemon that owns ``directory``, as a client; or, with none running, ownership of
    it here (after the definitions load: a mistake leaves no state directory behind)."""
    owner = daemon_owner(directory)
    if owner is None:
        defs = load(definitions, state_dir)[1]
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


def daemon_owner(directory: Path) -> OwnerInfo | None:
    """The daemon recorded as owning ``directory`` if its process lives (without touching
    the directory: this user may not be able to write it)."""
    try:
        owner = read_owner(directory)
    except PermissionError:
        return None
    return owner if owner is not None and owner.role == "daemon" else None
