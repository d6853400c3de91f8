"""Where the definitions and the state directory come from.

Each setting resolves: command-line option, then environment variable, then ``[tool.headwater]``
in ``pyproject.toml`` (in the working directory or the nearest parent); the state directory
then falls back to ``$STATE_DIRECTORY`` (set by systemd's ``StateDirectory=``), then
``.headwater/``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headwater._errors import HeadwaterError

__all__ = ["ConfigError", "Settings", "resolve_settings", "resolve_state_dir"]

ENV_DEFINITIONS = "HEADWATER_DEFINITIONS"
ENV_STATE_DIR = "HEADWATER_STATE_DIR"


class ConfigError(HeadwaterError):
    """The configuration is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Settings:
    definitions: str
    state_dir: Path
    origin: str
    """Where ``definitions`` came from, for error messages."""


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
    table: Mapping[str, Any] = found[1] if found else {}
    table_dir = found[0].parent if found else here
    origin = "--definitions"
    target = definitions
    if target is None and env.get(ENV_DEFINITIONS):
        target, origin = env[ENV_DEFINITIONS], ENV_DEFINITIONS
    if target is None and "definitions" in table:
        value = table["definitions"]
        if not isinstance(value, str):
            raise ConfigError(
                f"{found[0] if found else 'pyproject.toml'}: [tool.headwater] definitions must be a string"
            )
        origin = f"{found[0] if found else 'pyproject.toml'} [tool.headwater] definitions"
        target = value if ":" in value and not value.endswith(".py") else str(table_dir / value)
    if target is None:
        raise ConfigError(
            "no definitions given: pass --definitions FILE.py (or module:attribute), set "
            f'{ENV_DEFINITIONS}, or add `definitions = "..."` under [tool.headwater] in pyproject.toml'
        )
    return Settings(
        definitions=target,
        state_dir=resolve_state_dir(state_dir, environ=env, cwd=here),
        origin=origin,
    )


def resolve_state_dir(
    state_dir: str | None, *, environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Path:
    """Option, ``HEADWATER_STATE_DIR``, ``[tool.headwater] state_dir``, ``$STATE_DIRECTORY``,
    then ``.headwater/``."""
    env = os.environ if environ is None else environ
    here = cwd or Path.cwd()
    directory: str | Path | None = state_dir or env.get(ENV_STATE_DIR)
    found = _pyproject(here) if directory is None else None
    if directory is None and found is not None and "state_dir" in found[1]:
        directory = found[0].parent / str(found[1]["state_dir"])
    if directory is None:
        directory = env.get("STATE_DIRECTORY", "").split(":")[0] or ".headwater"
    return Path(directory)
