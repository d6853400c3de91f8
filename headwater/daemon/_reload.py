"""A reload imports the new definitions in a child process first.

The daemon imports them into itself only once a child has: an import that ends the process
(``os._exit``), or never ends, would otherwise take the running daemon with it (dead with exit
status 0, which systemd does not restart, or reloading for ever). The child is ``headwater
validate``, so it checks what the daemon would; the daemon then imports the same file itself.
"""

from __future__ import annotations

import os
import subprocess
import sys

import anyio

from headwater._loading import LoadError

__all__ = ["CHILD_IMPORT_S", "import_in_child"]

CHILD_IMPORT_S = 60.0
"""Seconds the child may take to import the definitions before the reload gives up."""


async def import_in_child(target: str, *, within: float = CHILD_IMPORT_S) -> None:
    """Raise :class:`LoadError`, with the child's reason, unless a child process imports and
    validates ``target`` within ``within`` seconds."""
    command = [sys.executable, "-m", "headwater", "validate", "--definitions", target]
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    done: subprocess.CompletedProcess[bytes] | None = None
    with anyio.move_on_after(within):  # cancelled: the child is killed
        done = await anyio.run_process(command, check=False, env=env)
    if done is None:
        raise LoadError(
            f"{target}: importing it did not finish within {within:.0f} s "
            "(an import or a loop at module level that never ends?)"
        )
    # after what the file printed, which may not end its last line
    said_last = (done.stdout.decode(errors="replace").strip().splitlines() or [""])[-1]
    if done.returncode == 0 and f"ok: {target}: " in said_last:
        return
    said = [ln for ln in done.stderr.decode(errors="replace").splitlines() if ln.strip()]
    if said:
        raise LoadError(said[-1].removeprefix("Error: ")[:2000])
    raise LoadError(
        f"{target}: importing it ended the process (exit status {done.returncode}) before it "
        "could be checked (os._exit() or a signal at module level?)"
    )
