"""Sizes as users write them: ``"512MB"``, ``"4GB"``, ``"4 GiB"``, or a number of bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass

from headwater._errors import HeadwaterError

__all__ = ["Size", "SizeError", "parse_size"]

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")


class SizeError(HeadwaterError, ValueError):
    """A value that is not a size; the message names where it came from."""


@dataclass(frozen=True, slots=True)
class Size:
    bytes: int
    text: str
    """As the user wrote it, tidied: ``"4 GB"``."""

    def __str__(self) -> str:
        return self.text


def parse_size(value: str | int, *, what: str = "size") -> Size:
    """A size of at least one mebibyte (anything smaller cannot hold a Python process)."""
    text = str(value).strip()
    match = _SIZE.fullmatch(text.lower())
    if match is None or match.group(2) not in _UNITS:
        raise SizeError(f'{what}: {value!r} is not a size; write it as "512MB", "4GB" or "4GiB"')
    number, unit = match.groups()
    size = int(float(number) * _UNITS[unit])
    if size < 2**20:
        raise SizeError(f"{what}: {value!r} is too small (less than 1 MiB)")
    shown = f"{number} {text[len(number) :].strip()}".strip() if unit else f"{size} bytes"
    return Size(size, shown)
