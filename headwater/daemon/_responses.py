"""The JSON responses of the daemon's HTTP API and web page."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse

__all__ = ["JSON"]


class JSON(JSONResponse):
    """JSON with every character beyond ASCII escaped: a payload may hold a lone surrogate
    (a file name that is not UTF-8, as ``os.fsdecode`` gives it), which UTF-8 cannot encode;
    Starlette's own rendering raised on it, so every page of ``/events`` holding that event
    answered 400 for good."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")
