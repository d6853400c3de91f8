"""The public surface: __all__ is sorted, complete and importable."""

from __future__ import annotations

import headwater
import headwater.testing


def test_all_is_sorted_and_resolvable() -> None:
    assert headwater.__all__ == sorted(headwater.__all__)
    for name in headwater.__all__:
        assert hasattr(headwater, name), name


def test_spec_names_are_public() -> None:
    """Every name SPEC §1 uses as hw.X is exported."""
    spec_names = {
        "asset", "source", "FileSource", "ObjectSource", "check", "Context", "Output",
        "CheckResult", "Retry", "Freshness", "Definitions", "DefinitionError", "DailyPartitions",
        "HourlyPartitions", "StaticPartitions", "DynamicPartitions", "MultiPartitions", "eager",
        "manual", "on_cron",
    }  # fmt: skip
    assert spec_names <= set(headwater.__all__)


def test_public_objects_name_their_public_module() -> None:
    """Public names live in private modules; none leaks a private name into __all__."""
    assert all(not name.startswith("_") for name in headwater.__all__)
    assert headwater.testing.__all__ == ["FreshnessStatus", "Harness", "TickResult"]
