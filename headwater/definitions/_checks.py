"""``@check``: a test of an asset's value, run after it materializes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headwater._errors import DefinitionError
from headwater.definitions._assets import AssetDef, dependency_key

__all__ = ["CheckDef", "check"]


@dataclass(eq=False, frozen=True, slots=True)
class CheckDef:
    name: str
    asset: str
    fn: Callable[..., Any]
    blocking: bool


def check(
    asset: AssetDef | str, *, blocking: bool = False, name: str | None = None
) -> Callable[[Callable[..., Any]], CheckDef]:
    """Declare a check of ``asset``'s value; a failed *blocking* check holds its dependents."""
    target = dependency_key(asset, owner=f"check {name or '?'}")

    def decorate(fn: Callable[..., Any]) -> CheckDef:
        if not callable(fn):
            raise DefinitionError(f"@check on {target!r} decorates a function, not {fn!r}")
        check_name = name or str(getattr(fn, "__name__", "check"))
        return CheckDef(check_name, target, fn, bool(blocking))

    return decorate
