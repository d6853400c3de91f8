"""The default policy: materialize as soon as a partition is stale, or missing with inputs present."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from headwater.policies._base import Decision, PolicyContext, settled_on

__all__ = ["EagerPolicy", "decide_eagerly", "eager"]


@dataclass(frozen=True, slots=True)
class EagerPolicy:
    name: str = "eager"
    reacts_to_upstream: bool = True

    def decide(self, ctx: PolicyContext) -> Decision:
        return decide_eagerly(ctx.state, ctx.reasons, ctx.blockers, ctx.nothing_arrived)


def decide_eagerly(
    state: str, reasons: Sequence[str], blockers: Sequence[str], nothing_arrived: bool
) -> Decision:
    """:meth:`EagerPolicy.decide` on the only fields of the context it reads: the planner
    calls it without building a context (a dry run of 100k steps makes one per step)."""
    if state == "stale" and not blockers and not nothing_arrived:  # most runs: settled_on
        return Decision("run", "; ".join(reasons) or state)  # says None, nothing waits
    if (done := settled_on(state, nothing_arrived)) is not None:
        return done
    if blockers:
        return Decision.wait("waiting: " + "; ".join(blockers))
    return Decision.run("; ".join(reasons) or state)


def eager() -> EagerPolicy:
    """Materialize whenever stale, or missing with all inputs present (the default)."""
    return EagerPolicy()
