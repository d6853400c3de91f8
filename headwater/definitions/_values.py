"""What asset and check functions may return besides a plain value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CheckResult", "Output"]


@dataclass(frozen=True, slots=True)
class Output:
    """A value with an explicit data version and/or metadata to record with it."""

    value: Any
    data_version: str | None = None
    metadata: Mapping[str, Any] | None = field(default=None)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of an asset check, with optional metadata to record."""

    passed: bool
    metadata: Mapping[str, Any] | None = None
