"""A partition that waits on a failed or blocked input runs once that input recovers, even
when the input recovers with the very version it had (found by a hostile fuzzer: the tick used
to reach children only when a version changed, so such a partition stayed stale for good)."""

from __future__ import annotations

from typing import Any

import headwater as hw
from headwater.testing import Harness


def _pair(b: Any, checks: list[Any] | None = None) -> hw.Definitions:
    """``joined`` reads ``left`` (which will change) and ``b`` (which will recover)."""
    a = hw.source("a")
    bs = hw.source("bs")

    @hw.asset
    def left(a: Any) -> Any:
        return a

    @hw.asset
    def joined(left: Any, right: Any) -> Any:
        return (left, right)

    return hw.Definitions([a, bs, left, b, joined], checks=checks or [])


def _settle(h: Harness) -> None:
    """Everything materialized once from version 1 of both sources."""
    h.observe("a", value=1)
    h.observe("bs", value=1)
    h.tick()


def _change_both(h: Harness) -> None:
    h.observe("a", value=2)
    h.observe("bs", value=2)


def test_an_input_fixed_and_rerun_with_its_old_version_releases_its_reader() -> None:
    broken = {"now": False}

    @hw.asset
    def right(bs: Any) -> str:
        if broken["now"]:
            raise RuntimeError("boom")
        return "constant"

    with Harness(_pair(right)) as h:
        _settle(h)
        broken["now"] = True
        _change_both(h)
        assert h.tick().skipped[("joined", None)].startswith("waiting: input right failed")
        broken["now"] = False
        assert ("joined", None) in h.materialize("right").materialized
        assert h.state("joined") == "fresh"
        assert h.value("joined") == (2, "constant")


def test_an_automatic_retry_that_gives_the_old_version_releases_the_reader() -> None:
    broken = {"now": False}

    @hw.asset(retries=hw.Retry(max_attempts=3, delay="30s"))
    def right(bs: Any) -> str:
        if broken["now"]:
            raise RuntimeError("transient")
        return "constant"

    with Harness(_pair(right)) as h:
        _settle(h)
        broken["now"] = True
        _change_both(h)
        h.tick()
        broken["now"] = False
        h.advance("5m")  # the retry runs, and returns what it returned before
        assert h.state("right") == "fresh"
        assert h.state("joined") == "fresh"
        assert h.value("joined") == (2, "constant")


def test_a_blocking_check_that_passes_again_releases_the_reader() -> None:
    good = {"now": True}

    @hw.asset
    def right(bs: Any) -> str:
        return "constant"

    @hw.check(right, blocking=True)
    def right_ok(value: Any) -> bool:
        return good["now"]

    with Harness(_pair(right, [right_ok])) as h:
        _settle(h)
        good["now"] = False
        _change_both(h)
        h.tick()
        assert h.state("joined") == "stale"  # held back by the failed check
        good["now"] = True
        h.materialize("right", force=True)
        assert h.state("joined") == "fresh"
        assert h.value("joined") == (2, "constant")
