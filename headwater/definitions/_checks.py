"""``@check``: a test of an asset's value, run after it materializes."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headwater._errors import DefinitionError
from headwater.definitions._assets import CONTEXT_PARAMETER, AssetDef, dependency_key

__all__ = ["CheckDef", "check"]


@dataclass(eq=False, frozen=True, slots=True)
class CheckDef:
    """A declared check: ``fn(value)`` (plus ``context=`` if it asks) returns bool or CheckResult."""

    name: str
    asset: str
    fn: Callable[..., Any]
    blocking: bool
    wants_context: bool = False


def check(
    asset: AssetDef | str, *, blocking: bool = False, name: str | None = None
) -> Callable[[Callable[..., Any]], CheckDef]:
    """Declare a check of ``asset``'s value; a failed *blocking* check holds its dependents."""
    target = dependency_key(asset, owner=f"check {name or '?'}")

    def decorate(fn: Callable[..., Any]) -> CheckDef:
        if not callable(fn):
            raise DefinitionError(f"@check on {target!r} decorates a function, not {fn!r}")
        check_name = name or str(getattr(fn, "__name__", "check"))
        try:
            params = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError) as exc:
            raise DefinitionError(f"check {check_name!r}: cannot read its signature") from exc
        value_params = [p for p in params if p != CONTEXT_PARAMETER]
        if len(value_params) != 1:
            raise DefinitionError(
                f"check {check_name!r} on {target!r} must take exactly one parameter for the "
                f"asset's value (and optionally `context`), not {params}"
            )
        return CheckDef(check_name, target, fn, bool(blocking), CONTEXT_PARAMETER in params)

    return decorate
