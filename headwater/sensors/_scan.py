"""One pass over a FileSource's files: the version of every partition found on disk.

The daemon's file watcher (see the daemon issue) reacts to events; this scan is what start-up,
``materialize`` and reconciliation use to notice what changed while nobody was watching.
"""

from __future__ import annotations

from pathlib import Path

import anyio

from headwater.definitions import FileSource
from headwater.execution import Engine
from headwater.execution._loaders import glob_paths
from headwater.versions import file_version, files_version

__all__ = ["scan_file_source", "sync_file_sources"]


def scan_file_source(source: FileSource, base_dir: Path) -> dict[str | None, str]:
    """``{partition: content version}`` for the files on disk now (None for unpartitioned)."""
    if source.partitions is None:
        if source.is_glob:
            paths = glob_paths(source, base_dir)
            if not paths:
                return {}
            return {
                None: files_version(
                    (
                        str(p.relative_to(base_dir)) if p.is_relative_to(base_dir) else str(p),
                        file_version(p),
                    )
                    for p in paths
                )
            }
        path = source.resolve(base_dir, None)
        return {None: file_version(path)} if path.is_file() else {}
    found: dict[str | None, str] = {}
    absolute = Path(source.template).is_absolute()
    for path in glob_paths(source, base_dir):
        name = str(path) if absolute else path.relative_to(base_dir).as_posix()
        if (partition := source.partition_of(name)) is not None:
            found[partition] = file_version(path)
    return found


async def sync_file_sources(engine: Engine) -> int:
    """Observe every FileSource as it is on disk, deletions included; return how many changed."""
    changed = 0
    base_dir = engine.defs.base_dir
    for key, node in engine.defs.sources.items():
        if not isinstance(node, FileSource):
            continue
        found = await anyio.to_thread.run_sync(scan_file_source, node, base_dir)
        changed += await engine.reconcile(key, found)
    return changed
