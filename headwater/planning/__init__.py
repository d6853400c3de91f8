"""Staleness and planning: pure functions of the definitions and a state snapshot."""

from headwater.planning._explain import explain
from headwater.planning._planner import Plan, Request, decide_step, plan
from headwater.planning._state import Failure, InputVersions, NodeKey, NodeRecord, State
from headwater.planning._status import Evaluator, Status, node_label

__all__ = [
    "Evaluator",
    "Failure",
    "InputVersions",
    "NodeKey",
    "NodeRecord",
    "Plan",
    "Request",
    "State",
    "Status",
    "decide_step",
    "explain",
    "node_label",
    "plan",
]
