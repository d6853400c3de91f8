"""Deliberately broken: a cycle between two assets."""

from typing import Any

import headwater as hw


@hw.asset
def ping(pong: Any) -> int:
    return 1


@hw.asset
def pong(ping: Any) -> int:
    return 1


defs = hw.Definitions([ping, pong])
