"""What a policy decides and what it decides on. Pure: no I/O, no clock reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from headwater._records import record_class

__all__ = [
    "ClockPolicy",
    "Decision",
    "DecisionKind",
    "Policy",
    "PolicyContext",
    "Pull",
    "no_input_yet",
    "settled",
    "settled_on",
]

DecisionKind = Literal["run", "wait", "idle"]


@record_class  # frozen; one per partition decided, so built through plain slot stores
class Decision:
    """``run`` now; ``wait`` for something (an input); ``idle``: the policy does not act."""

    kind: DecisionKind
    reason: str
    notable: bool = True
    """Worth recording and reporting; False for "fresh, nothing to do" and the like."""
    wake_at: datetime | None = None
    """When waiting on the clock (a retry delay): the instant to look again."""

    @classmethod
    def run(cls, reason: str) -> Decision:
        return cls("run", reason)

    @classmethod
    def wait(cls, reason: str, *, wake_at: datetime | None = None) -> Decision:
        return cls("wait", reason, wake_at=wake_at)

    @classmethod
    def idle(cls, reason: str, *, notable: bool = True) -> Decision:
        return cls("idle", reason, notable)


_FRESH = Decision.idle("fresh; nothing to do", notable=False)
_FAILED = Decision.idle("failed; runs again when an input or its code changes, or when asked")


def settled(ctx: PolicyContext) -> Decision | None:
    """What every reacting policy decides before its own rule: nothing to do when fresh,
    failed (until something changes), or when no input has arrived yet."""
    return settled_on(ctx.state, ctx.nothing_arrived)


def settled_on(state: str, nothing_arrived: bool) -> Decision | None:
    """:func:`settled` on the context's two fields it reads."""
    if state == "fresh":
        return _FRESH
    if state == "failed":
        return _FAILED
    if nothing_arrived:
        return _no_input_yet(state)
    return None


def no_input_yet(ctx: PolicyContext) -> Decision:
    """Not waiting on anything in particular: quiet, so history does not flood the log."""
    return _no_input_yet(ctx.state)


def _no_input_yet(state: str) -> Decision:
    return Decision.idle(f"{state}; no input has arrived yet", notable=False)


@dataclass(frozen=True, slots=True)
class Pull:
    """A downstream freshness SLA that needs a lazy partition: the latest instant to start it."""

    holder: str
    """The partition whose SLA pulls, as people read it (``report[2026-01-05]``)."""
    node: tuple[str, str | None]
    """The same as ``(asset, partition)``."""
    reason: str
    """Which SLA: ``"max_lag 1h"``."""
    deadline: datetime
    run_at: datetime
    lead_s: float


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """One asset partition as a policy sees it."""

    asset: str
    partition: str | None
    state: str
    reasons: Sequence[str]
    now: datetime
    blockers: Sequence[str] = field(default=())
    """Inputs that hold the partition back (missing, failed, blocked), phrased for people."""
    nothing_arrived: bool = False
    """Every blocker is an input that never arrived: nothing specific is awaited yet."""
    has_inputs: bool = True
    due_tick: datetime | None = None
    """For clock-driven policies: the tick that is due and not yet handled, if any."""
    pull: Pull | None = None
    """For policies with ``pulled_by_slas``: the most urgent downstream SLA that needs it."""


@runtime_checkable
class Policy(Protocol):
    """When an asset partition should be materialized (see also :class:`ClockPolicy`)."""

    @property
    def name(self) -> str: ...

    @property
    def reacts_to_upstream(self) -> bool:
        """Whether an upstream change puts the partition into the same plan as the change."""
        ...

    def decide(self, ctx: PolicyContext) -> Decision: ...


@runtime_checkable
class ClockPolicy(Policy, Protocol):
    """A policy driven by the clock: the engine wakes at its ticks."""

    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after ``after``."""
        ...

    def last_tick(self, at: datetime) -> datetime | None:
        """The latest tick at or before ``at``."""
        ...
