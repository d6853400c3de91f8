"""Errors users see. Each carries a message that names the thing at fault."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "DefinitionError",
    "HeadwaterError",
    "PartitionKeyError",
    "SelectionError",
    "StateDirError",
    "did_you_mean",
]


class HeadwaterError(Exception):
    """Base class of the errors headwater raises for a user's mistake."""


class DefinitionError(HeadwaterError):
    """The definitions are inconsistent: unknown dependency, cycle, duplicate key, ..."""


class PartitionKeyError(HeadwaterError, KeyError):
    """A partition key that the asset's partitions definition does not contain."""

    def __str__(self) -> str:  # KeyError would repr() the message.
        return str(self.args[0]) if self.args else ""


class SelectionError(HeadwaterError):
    """A selection (asset key) that names nothing in the definitions."""


class StateDirError(HeadwaterError):
    """The state directory cannot be used: another live process owns it, or its event log is
    unreadable. The message names the owner's PID or the file, and how to recover."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a known name is close to ``name``, else nothing (nothing
    either for a name far longer than any could be: matching it would cost its length squared)."""
    if len(name) > 256:
        return ""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
