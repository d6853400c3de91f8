"""The default policy: materialize as soon as a partition is stale, or missing with inputs present."""

from __future__ import annotations

from dataclasses import dataclass

from headwater.policies._base import Decision, PolicyContext, no_input_yet

__all__ = ["EagerPolicy", "eager"]


@dataclass(frozen=True, slots=True)
class EagerPolicy:
    name: str = "eager"
    reacts_to_upstream: bool = True

    def decide(self, ctx: PolicyContext) -> Decision:
        if ctx.state == "fresh":
            return Decision.idle("fresh; nothing to do", notable=False)
        if ctx.state == "failed":
            return Decision.idle(
                "failed; runs again when an input or its code changes, or when asked"
            )
        if ctx.nothing_arrived:
            return no_input_yet(ctx)
        if ctx.blockers:
            return Decision.wait("waiting: " + "; ".join(ctx.blockers))
        return Decision.run("; ".join(ctx.reasons) or ctx.state)


def eager() -> EagerPolicy:
    """Materialize whenever stale, or missing with all inputs present (the default)."""
    return EagerPolicy()
