"""The bundled example (the README's quick start) keeps working."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parent.parent / "examples" / "sales"
SHIPPED = ["definitions.py", *(f"data/raw/sales/2026-01-0{d}.csv" for d in (1, 2, 3))]
"""The example as shipped: a reader who followed the quick start may have added files."""


def test_quick_start_materializes_the_example_and_reacts_to_a_new_day(tmp_path: Path) -> None:
    """Three shipped days materialize with their roll-up; a fourth day runs only itself and the roll-up."""
    for name in SHIPPED:
        (tmp_path / "sales" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLE / name, tmp_path / "sales" / name)
    target = str(tmp_path / "sales" / "definitions.py")

    def materialize() -> str:
        result = subprocess.run(
            [sys.executable, "-m", "headwater", "materialize", "sales_clean", "sales_by_region",
             "--definitions", target, "--state-dir", str(tmp_path / "state")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    first = materialize()
    for day in ("2026-01-01", "2026-01-02", "2026-01-03"):
        assert f"materialized sales_clean[{day}]" in first
    assert "materialized sales_by_region" in first
    (tmp_path / "sales" / "data" / "raw" / "sales" / "2026-01-04.csv").write_text(
        "order_id,region,amount\n13,eu,10.0\n"
    )
    second = [line for line in materialize().splitlines() if line.startswith("materialized")]
    assert second == ["materialized sales_clean[2026-01-04]", "materialized sales_by_region"]
