"""Text that came from outside (file names, payloads, a function's output) made safe to show."""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped as Python would write it: control
    characters and terminal escape sequences cannot forge a line or reach a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
