"""Staleness and planning: pure functions of the definitions and a state snapshot."""

from headwater.planning._explain import explain
from headwater.planning._freshness import (
    FreshnessStatus,
    behind_until,
    behind_upstream,
    carry_pending_since,
    freshness_status,
    held_above,
    lag_since,
    released_below,
    stuck_below,
    unreflected_since,
)
from headwater.planning._lazy import usual_durations
from headwater.planning._planner import Plan, Request, decide_step, plan
from headwater.planning._selection import (
    backfill_nodes,
    expand_selection,
    partition_range,
    resolve_selection,
)
from headwater.planning._state import (
    CheckRecord,
    Failure,
    InputVersions,
    Memo,
    NodeKey,
    NodeRecord,
    Schedule,
    State,
)
from headwater.planning._status import (
    REMOVED,
    Evaluator,
    FailedCheck,
    Status,
    as_input,
    failed_blocking,
    failed_checks,
    node_label,
)
from headwater.planning._wavefront import Wavefront

__all__ = [
    "REMOVED",
    "CheckRecord",
    "Evaluator",
    "FailedCheck",
    "Failure",
    "FreshnessStatus",
    "InputVersions",
    "Memo",
    "NodeKey",
    "NodeRecord",
    "Plan",
    "Request",
    "Schedule",
    "State",
    "Status",
    "Wavefront",
    "as_input",
    "backfill_nodes",
    "behind_until",
    "behind_upstream",
    "carry_pending_since",
    "decide_step",
    "expand_selection",
    "explain",
    "failed_blocking",
    "failed_checks",
    "freshness_status",
    "held_above",
    "lag_since",
    "node_label",
    "partition_range",
    "plan",
    "released_below",
    "resolve_selection",
    "stuck_below",
    "unreflected_since",
    "usual_durations",
]
