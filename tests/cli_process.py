"""The command line as users run it: ``python -m headwater ...`` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(extra or {})
    return env


def hw(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headwater", *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def hw_start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a command without waiting for it."""
    return subprocess.Popen(
        [sys.executable, "-m", "headwater", *args],
        cwd=cwd,
        env=cli_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def hw_project(
    project: Path, *args: str, state: str = "state", definitions: str = "defs.py"
) -> subprocess.CompletedProcess[str]:
    """A command on a test project: its definitions and state directory given explicitly."""
    return hw(*args, "--state-dir", state, "-d", definitions, cwd=project)
