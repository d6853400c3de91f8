"""Errors users see. Each carries a message that names the thing at fault."""

from __future__ import annotations

__all__ = ["DefinitionError", "HeadwaterError", "PartitionKeyError", "SelectionError"]


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
