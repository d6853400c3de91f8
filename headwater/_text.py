"""Text that came from outside (file names, payloads, a function's output) made safe to show."""

from __future__ import annotations

import unicodedata

__all__ = ["printable"]


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped as Python would write it: control
    characters and terminal escape sequences cannot forge a line or reach a terminal. In text
    not in Unicode's composed form (NFC), combining marks are escaped too (``cafe\\u0301``):
    a name written on macOS (NFD) and the same name typed here (NFC) are two keys that would
    print alike."""
    if text.isascii() and text.isprintable():
        return text
    composed = unicodedata.is_normalized("NFC", text)
    if composed and text.isprintable():
        return text
    return "".join(
        c if c.isprintable() and (composed or not unicodedata.combining(c)) else _escaped(c)
        for c in text
    )


def _escaped(c: str) -> str:
    shown = repr(c)[1:-1]
    return shown if shown != c else f"\\u{ord(c):04x}"
