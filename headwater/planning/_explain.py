"""``why``: an asset partition's state and the reasons behind it, in sentences. Pure."""

from __future__ import annotations

from headwater.definitions import AssetDef
from headwater.planning._freshness import freshness_status
from headwater.planning._state import NodeRecord
from headwater.planning._status import FRESH, REMOVED, Evaluator, node_label
from headwater.policies import ClockPolicy

__all__ = ["explain"]


def explain(ev: Evaluator, asset: str, partition: str | None, *, owned: bool = True) -> list[str]:
    """The first line says the state; the following ones say why, and what happens next.
    ``owned=False``: no process owns the state directory now, so a run the log shows under
    way was cut off (its owner died) rather than in progress."""
    node = ev.defs.nodes[asset]
    record = ev.state.record((asset, partition))
    label = node_label(asset, partition)
    if not ev.exists(asset, partition):
        return [f"{label} is {REMOVED}", ev.removed_reason(asset), *_history(record)]
    status = ev.status(asset, partition)
    lines = [f"{label} is {status.state}"]
    lines.extend(status.reasons)
    lines.extend(f"waiting: {b}" for b in status.blockers)
    if isinstance(node, AssetDef):
        if status.state != FRESH:
            decision = ev.decide(asset, partition, status)
            lines.append(f"policy {node.policy.name}: {decision.kind}: {decision.reason}")
        if isinstance(node.policy, ClockPolicy):
            handled = ev.handled_through(asset)
            if handled is not None and handled > ev.now:
                lines.append(
                    f"the wall clock stepped back: cron ticks through {handled.isoformat()} "
                    "were handled already, and are not repeated"
                )
            due = ev.due_tick(node)
            lines.append(
                f"cron tick {due.isoformat()} is due"
                if due is not None
                else f"next cron tick at {ev.next_cron_tick(asset, node.policy).isoformat()}"
            )
        if record is not None and record.decision is not None:
            kind, reason = record.decision
            lines.append(f"last recorded decision: {kind}: {reason}")
        lines += _materialized(record)
        if record is not None and record.failure is not None:
            f = record.failure
            where = f" at {f.where}" if f.where else ""
            lines.append(
                f"latest attempt failed at {f.at.isoformat()} (run {f.run_id}): {f.error}{where}"
            )
        if record is not None and record.running:
            lines.append(
                f"run {record.running} is in progress"
                if owned
                else f"run {record.running} was cut off (its daemon stopped without ending it): "
                "the next start marks it abandoned and runs it again"
            )
        if record is not None:
            for check in record.checks:
                verdict = "passed" if check.passed else "FAILED"
                kind = "blocking " if check.blocking else ""
                error = f": {check.error}" if check.error else ""
                older = "" if check.data_version == record.version else " (on older data)"
                lines.append(f"{kind}check {check.name!r} {verdict}{older}{error}")
    else:
        lines += _observed(record)
    fs = freshness_status(ev, asset, partition)
    if fs is not None:
        if fs.late:
            lines.extend(f"LATE: {r}" for r in fs.reasons)
        elif fs.deadline is not None:
            lines.append(f"on time; late at {fs.deadline.isoformat()} unless it catches up")
        else:
            lines.append("on time")
    return lines


def _history(record: NodeRecord | None) -> list[str]:
    """The last materialization (an asset's), else the last observed change (a source's)."""
    if record is None or record.materialized_at is None:
        return _observed(record)
    return _materialized(record)


def _materialized(record: NodeRecord | None) -> list[str]:
    if record is None or record.materialized_at is None:
        return []
    return [
        f"last materialized at {record.materialized_at.isoformat()} by run {record.run_id}"
        f" (data version {(record.version or '')[:12]})"
    ]


def _observed(record: NodeRecord | None) -> list[str]:
    if record is None or record.changed_at is None:
        return []
    return [f"last observed change at {record.changed_at.isoformat()}"]
