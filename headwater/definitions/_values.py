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

    def __post_init__(self) -> None:
        """Refused where the function builds it, so its run fails naming the mistake: a
        version that is not text was written into the log and stopped the daemon at the next
        change, and metadata that is not a mapping failed the run after the value was stored
        (over the last good one)."""
        version = self.data_version
        if version is not None:
            if not isinstance(version, str) or not version:
                raise TypeError(
                    f"hw.Output(data_version={version!r}): a data version is non-empty text"
                )
            try:
                version.encode()
            except UnicodeEncodeError:
                raise ValueError(
                    f"hw.Output(data_version={version!r}): a data version must be valid "
                    "Unicode text (it holds a lone surrogate)"
                ) from None
        if self.metadata is not None and not isinstance(self.metadata, Mapping):
            raise TypeError(
                f"hw.Output(metadata=...) takes a mapping of names to values, "
                f"not {type(self.metadata).__name__}"
            )


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of an asset check, with optional metadata to record."""

    passed: bool
    metadata: Mapping[str, Any] | None = None
