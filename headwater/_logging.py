"""The one structlog configuration: JSON lines off a terminal, readable lines on one.

Every line carries ``timestamp`` (ISO-8601 UTC), ``level``, ``event`` and ``logger``; run fields
(``asset``, ``partition``, ``run_id``, ...) are bound per run. Records from the standard
``logging`` module (watchdog, botocore, ...) go through the same renderer, so off a terminal
*every* line is JSON. Exceptions are rendered without frame locals (they may hold data).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

__all__ = ["configure_logging", "info_dropped"]


_DROPPED = getattr(structlog.make_filtering_bound_logger(logging.CRITICAL), "info", None)
"""What a filtering logger's method is at a level below its minimum (a no-op)."""


def info_dropped() -> bool:
    """Whether the configured loggers drop ``info`` lines. A module's lazy logger builds a
    logger (and its output) for every call, dropped or not: ~4 us, twice per trivial run on
    the event loop. Unknown wrappers count as keeping them."""
    return getattr(structlog.get_config()["wrapper_class"], "info", None) is _DROPPED


class _NamedPrintLogger(structlog.PrintLogger):
    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        return _NamedPrintLogger(self._file, str(args[0]) if args else "headwater")


def configure_logging(stream: TextIO | None = None, *, level: int = logging.INFO) -> None:
    out = stream or sys.stderr
    tty = out.isatty()
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    final: structlog.types.Processor
    if tty:
        final = structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
        )
        exceptions: list[structlog.types.Processor] = []
    else:
        final = structlog.processors.JSONRenderer()
        exceptions = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        ]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.add_logger_name,
            *exceptions,
            final,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_NamedPrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, *exceptions],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, final],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # libraries speak up only when something is wrong
    logging.captureWarnings(True)
