"""Event sources: one module per kind, each with ``scan()`` and ``run(task_status=...)``."""

from headwater.sensors._scan import scan_file_source, sync_file_sources

__all__ = ["scan_file_source", "sync_file_sources"]
