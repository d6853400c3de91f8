"""Running asset functions off the event loop and storing their values."""

from headwater.execution._context import Context
from headwater.execution._cycle import RELOADING
from headwater.execution._engine import Engine, Observed, TickResult
from headwater.execution._object_store import ObjectStore
from headwater.execution._observers import EngineObserver
from headwater.execution._runner import Job, Outcome, Runner
from headwater.execution._store import FilesystemStore, IOManager, NoValueError

__all__ = [
    "RELOADING",
    "Context",
    "Engine",
    "EngineObserver",
    "FilesystemStore",
    "IOManager",
    "Job",
    "NoValueError",
    "ObjectStore",
    "Observed",
    "Outcome",
    "Runner",
    "TickResult",
]
