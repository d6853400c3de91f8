"""Policies decide when an asset partition is materialized; pure functions of a snapshot."""

from headwater.policies._base import (
    ClockPolicy,
    Decision,
    DecisionKind,
    Policy,
    PolicyContext,
    Pull,
)
from headwater.policies._cron import CronPolicy, on_cron
from headwater.policies._eager import EagerPolicy, eager
from headwater.policies._freshness import Freshness
from headwater.policies._lazy import LazyPolicy, lazy
from headwater.policies._manual import ManualPolicy, manual
from headwater.policies._retry import Retry

__all__ = [
    "ClockPolicy",
    "CronPolicy",
    "Decision",
    "DecisionKind",
    "EagerPolicy",
    "Freshness",
    "LazyPolicy",
    "ManualPolicy",
    "Policy",
    "PolicyContext",
    "Pull",
    "Retry",
    "eager",
    "lazy",
    "manual",
    "on_cron",
]
