"""What a decision on a partition's record rests on.

A decision taken on a partition's record (that it is late, that its value is lost) is
written after an await; a write of that partition may land first. ``Engine.append`` then drops
the decision if what it rests on changed (the write that changed it decided again).
"""

from __future__ import annotations

from collections.abc import Callable

from headwater.planning import NodeRecord

__all__ = ["Basis", "held_value"]

Basis = Callable[[NodeRecord | None], object]
"""What a decision rests on, compared before and after (None: the record itself)."""


def held_value(record: NodeRecord | None) -> object:
    """What a "value lost" decision rests on: which value the partition holds (not its
    lateness or its last decision, which a write may change meanwhile)."""
    return None if record is None else (record.version, record.run_id, record.materialized_at)
