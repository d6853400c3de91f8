"""Event sources: one module per kind of source."""

from headwater.sensors._scan import scan_file_source, sync_file_sources

__all__ = ["scan_file_source", "sync_file_sources"]
