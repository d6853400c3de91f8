"""A policy that runs only when a downstream freshness SLA needs it."""

from __future__ import annotations

from dataclasses import dataclass

from headwater.policies._base import Decision, PolicyContext, settled

__all__ = ["LazyPolicy", "lazy"]


@dataclass(frozen=True, slots=True)
class LazyPolicy:
    name: str = "lazy"
    reacts_to_upstream: bool = True
    """Reached by a change so that it can schedule itself; it runs only when pulled."""
    pulled_by_slas: bool = True

    def decide(self, ctx: PolicyContext) -> Decision:
        if (done := settled(ctx)) is not None:
            return done
        pull = ctx.pull
        if pull is None:
            return Decision.idle(
                f"{ctx.state}; lazy: no downstream freshness SLA needs it (eager and cron "
                "readers do not pull a lazy asset)"
            )
        why = f"lazy: pulled by {pull.holder}'s {pull.reason} (late at {pull.deadline.isoformat()})"
        if ctx.blockers:
            return Decision.wait(f"{why}, but waiting: " + "; ".join(ctx.blockers))
        if ctx.now >= pull.run_at:
            return Decision.run(f"{why}; {'; '.join(ctx.reasons) or ctx.state}")
        return Decision.wait(
            f"{why}; runs at {pull.run_at.isoformat()} ({pull.lead_s:.1f}s ahead, by recent "
            "run durations)",
            wake_at=pull.run_at,
        )


def lazy() -> LazyPolicy:
    """Materialize only when a downstream freshness SLA would otherwise be missed, just early
    enough by recent run durations; never for eager or cron readers."""
    return LazyPolicy()
