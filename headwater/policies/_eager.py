"""The default policy: materialize as soon as a partition is stale, or missing with inputs present."""

from __future__ import annotations

from dataclasses import dataclass

from headwater.policies._base import Decision, PolicyContext, settled

__all__ = ["EagerPolicy", "eager"]


@dataclass(frozen=True, slots=True)
class EagerPolicy:
    name: str = "eager"
    reacts_to_upstream: bool = True

    def decide(self, ctx: PolicyContext) -> Decision:
        if (done := settled(ctx)) is not None:
            return done
        if ctx.blockers:
            return Decision.wait("waiting: " + "; ".join(ctx.blockers))
        return Decision.run("; ".join(ctx.reasons) or ctx.state)


def eager() -> EagerPolicy:
    """Materialize whenever stale, or missing with all inputs present (the default)."""
    return EagerPolicy()
