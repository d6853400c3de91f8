"""Rows for ``headwater status``: every asset partition's state, version and last run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from headwater._events import format_timestamp, parse_timestamp
from headwater.definitions import Definitions, SourceDef
from headwater.planning import (
    REMOVED,
    Evaluator,
    FailedCheck,
    State,
    failed_checks,
    freshness_status,
)

__all__ = ["StatusRow", "status_rows"]


@dataclass(frozen=True, slots=True)
class StatusRow:
    asset: str
    kind: str
    partition: str | None
    state: str
    late: bool
    data_version: str | None
    last_materialized_at: datetime | None
    reason: str
    failed_checks: tuple[FailedCheck, ...] = ()
    """Checks declared now that failed on the current data, blocking or not."""

    @property
    def held_by_check(self) -> bool:
        """A blocking check failed on the current data: every reader waits, whatever the
        partition's own state says (``status --check`` fails on it)."""
        return any(c.blocking for c in self.failed_checks)

    def as_json(self) -> dict[str, Any]:
        return {
            "asset": self.asset,
            "kind": self.kind,
            "partition": self.partition,
            "state": self.state,
            "late": self.late,
            "data_version": self.data_version,
            "last_materialized_at": None
            if self.last_materialized_at is None
            else format_timestamp(self.last_materialized_at),
            "reason": self.reason,
            "failed_checks": [
                {"check": c.name, "blocking": c.blocking, "error": c.error}
                for c in self.failed_checks
            ],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StatusRow:
        at = raw.get("last_materialized_at")
        return cls(
            asset=str(raw["asset"]),
            kind=str(raw.get("kind", "asset")),
            partition=raw.get("partition"),
            state=str(raw["state"]),
            late=bool(raw.get("late")),
            data_version=raw.get("data_version"),
            last_materialized_at=None if at is None else parse_timestamp(str(at)),
            reason=str(raw.get("reason", "")),
            failed_checks=tuple(
                FailedCheck(str(c["check"]), bool(c["blocking"]), c.get("error"))
                for c in raw.get("failed_checks", ())
            ),
        )


def status_rows(defs: Definitions, state: State, now: datetime) -> Iterator[StatusRow]:
    """In topological order; partitions that exist now plus any the log knows of."""
    ev = Evaluator(defs, state, now)
    for key in sorted(defs.graph.order, key=defs.graph.order.__getitem__):
        node = defs.nodes[key]
        partitions: list[str | None] = ev.partitions(key)
        existing = len(partitions)  # then the ones only the log knows of (a key removed)
        if node.partitions is not None:
            known = set(partitions)
            partitions += [p for p in state.present_partitions(key) if p not in known]
        kind = node.kind_label if isinstance(node, SourceDef) else "asset"
        for index, partition in enumerate(partitions):
            record = state.record((key, partition))
            if index >= existing:
                yield _removed(ev, key, kind, partition, record)
                continue
            status = ev.status(key, partition)
            fs = freshness_status(ev, key, partition)
            late = fs is not None and fs.late
            checks = tuple(failed_checks(defs, key, record))
            reasons = (
                status.reasons
                + tuple(f"waiting: {b}" for b in status.blockers)
                + tuple(c.describe() for c in checks)
            )
            if fs is not None and fs.late:
                reasons += tuple(f"late: {r}" for r in fs.reasons)
            yield StatusRow(
                asset=key,
                kind=kind,
                partition=partition,
                state=status.state,
                late=late,
                data_version=record.version if record else None,
                last_materialized_at=(record.materialized_at or record.changed_at)
                if record
                else None,
                reason="; ".join(reasons),
                failed_checks=checks,
            )


def _removed(ev: Evaluator, key: str, kind: str, partition: str | None, record: Any) -> StatusRow:
    """A partition only the log knows of: never late, and no check holds back a reader of
    it (it has none); its last version is kept in view."""
    return StatusRow(
        asset=key,
        kind=kind,
        partition=partition,
        state=REMOVED,
        late=False,
        data_version=record.version if record else None,
        last_materialized_at=(record.materialized_at or record.changed_at) if record else None,
        reason=ev.removed_reason(key),
    )
