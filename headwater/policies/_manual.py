"""A policy that never acts by itself."""

from __future__ import annotations

from dataclasses import dataclass

from headwater.policies._base import Decision, PolicyContext

__all__ = ["ManualPolicy", "manual"]


@dataclass(frozen=True, slots=True)
class ManualPolicy:
    name: str = "manual"
    reacts_to_upstream: bool = False

    def decide(self, ctx: PolicyContext) -> Decision:
        return Decision.idle(f"{ctx.state}; manual policy: runs only when asked")


def manual() -> ManualPolicy:
    """Materialize only when asked, through the CLI or the API."""
    return ManualPolicy()
