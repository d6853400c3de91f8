"""Where the definitions and the state directory come from.

Each setting resolves: command-line option, then environment variable, then ``[tool.headwater]``
in ``pyproject.toml`` (in the working directory or the nearest parent); the state directory
then falls back to ``$STATE_DIRECTORY`` (set by systemd's ``StateDirectory=``), then
``.headwater/``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from headwater._durations import parse_duration
from headwater._errors import HeadwaterError
from headwater._loading import absolute_target
from headwater._sizes import Size, parse_size
from headwater.definitions import EXECUTORS, valid_executor
from headwater.execution.executors import ExecutorSettings

__all__ = [
    "ConfigError",
    "NoDefinitions",
    "Settings",
    "resolve_executor",
    "resolve_option",
    "resolve_settings",
    "resolve_state_dir",
]

T = TypeVar("T")

ENV_DEFINITIONS = "HEADWATER_DEFINITIONS"
ENV_STATE_DIR = "HEADWATER_STATE_DIR"


class ConfigError(HeadwaterError):
    """The configuration is missing or malformed."""


class NoDefinitions(ConfigError):
    """No option, environment variable or pyproject.toml names the definitions."""


@dataclass(frozen=True, slots=True)
class Settings:
    definitions: str
    state_dir: Path


def _pyproject(start: Path) -> tuple[Path, Mapping[str, Any]] | None:
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                with open(candidate, "rb") as f:
                    data = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{candidate}: not valid TOML: {exc}") from exc
            section = data.get("tool", {}).get("headwater")
            if section is None:
                return None
            if not isinstance(section, dict):
                raise ConfigError(f"{candidate}: [tool.headwater] must be a table")
            return candidate, section
    return None


def config_table(name: str, cwd: Path | None = None) -> tuple[str, Any] | None:
    """``[tool.headwater.<name>]`` of the nearest ``pyproject.toml``, with where it is."""
    found = _pyproject(cwd or Path.cwd())
    if found is None or name not in found[1]:
        return None
    return f"{found[0]}", found[1][name]


def resolve_option(
    name: str,
    value: str | None,
    *,
    default: str,
    parse: Callable[[str, str], T],
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> T:
    """A setting from its option, then ``HEADWATER_<NAME>``, then ``name = ...`` under
    ``[tool.headwater]``, then ``default``; ``parse(text, where)`` checks it, naming where it
    came from in its error."""
    env = os.environ if environ is None else environ
    variable = f"HEADWATER_{name.upper()}"
    if value is not None:
        return _parse(parse, value, f"--{name.replace('_', '-')}")
    if variable in env:
        return _parse(parse, env[variable], variable)
    found = _pyproject(cwd or Path.cwd())
    if found is not None and name in found[1]:
        path, table = found
        return _parse(parse, str(table[name]), f"{path}: [tool.headwater] {name}")
    return _parse(parse, default, f"the default {name}")


def _parse(parse: Callable[[str, str], T], text: str, where: str) -> T:
    try:
        return parse(text, where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def resolve_settings(
    definitions: str | None,
    state_dir: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    env = os.environ if environ is None else environ
    here = cwd or Path.cwd()
    found = _pyproject(here)
    target = definitions or env.get(ENV_DEFINITIONS) or None
    if target is None and found is not None and "definitions" in found[1]:
        path, table = found
        value = table["definitions"]
        if not isinstance(value, str):
            raise ConfigError(f"{path}: [tool.headwater] definitions must be a string")
        target = value if ":" in value and not value.endswith(".py") else str(path.parent / value)
    if target is None:
        raise NoDefinitions(
            "no definitions given: pass --definitions FILE.py (or module:attribute), set "
            f'{ENV_DEFINITIONS}, or add `definitions = "..."` under [tool.headwater] in pyproject.toml'
        )
    return Settings(definitions=target, state_dir=_state_dir(state_dir, env, found))


def resolve_state_dir(
    state_dir: str | None, *, environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Path:
    """Option, ``HEADWATER_STATE_DIR``, ``[tool.headwater] state_dir``, ``$STATE_DIRECTORY``,
    then ``.headwater/``."""
    env = os.environ if environ is None else environ
    if state_dir or env.get(ENV_STATE_DIR):
        return _state_dir(state_dir, env, None)
    return _state_dir(state_dir, env, _pyproject(cwd or Path.cwd()))


def _state_dir(
    state_dir: str | None,
    env: Mapping[str, str],
    found: tuple[Path, Mapping[str, Any]] | None,
) -> Path:
    directory: str | Path | None = state_dir or env.get(ENV_STATE_DIR)
    if directory is None and found is not None and "state_dir" in found[1]:
        directory = found[0].parent / str(found[1]["state_dir"])
    if directory is None:
        directory = env.get("STATE_DIRECTORY", "").split(":")[0] or ".headwater"
    return Path(directory)


def _executor(text: str, where: str) -> str:
    if not valid_executor(text):
        raise ValueError(f"{where}: executor {text!r}: use one of {', '.join(EXECUTORS)}")
    return text


def _optional_duration(text: str, where: str) -> timedelta | None:
    if text.strip().lower() in ("", "none"):
        return None
    return parse_duration(text, what=f"{where}: timeout", positive=True)


def _optional_size(text: str, where: str) -> Size | None:
    if text.strip().lower() in ("", "none"):
        return None
    return parse_size(text, what=f"{where}: worker_memory")


def resolve_executor(
    definitions: str, *, environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> ExecutorSettings:
    """Where functions run, from ``HEADWATER_EXECUTOR`` or ``[tool.headwater] executor``
    (else ``processes``; ``Definitions(executor=)`` wins, see ``for_definitions``), with the
    default ``timeout`` and ``worker_memory`` from the same places."""

    def option(name: str, default: str, parse: Callable[[str, str], T]) -> T:
        return resolve_option(name, None, default=default, parse=parse, environ=environ, cwd=cwd)

    return ExecutorSettings(
        kind=option("executor", "processes", _executor),
        definitions=absolute_target(definitions),
        timeout=option("timeout", "none", _optional_duration),
        worker_memory=option("worker_memory", "none", _optional_size),
    )
