"""What ``status`` says of a partition whose current data a check failed.

A failed blocking check stops every reader while the checked partition itself stays fresh, so
its own row must say so (reason and ``failed_checks``), ``status --check`` must exit 1 on it
(a monitoring check wired to it must see a stopped pipeline), and the daemon's ``/status``,
``/metrics`` and web page must show it too. A failed non-blocking check is shown, and holds
nothing: ``--check`` stays 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from cli_process import hw_project
from daemon_process import DaemonProcess
from prometheus_client.parser import text_string_to_metric_families

from headwater._report import StatusRow

DEFS = (Path(__file__).parent / "resources" / "checked_project.py").read_text()


def _project(tmp_path: Path, data: list[int]) -> Path:
    (tmp_path / "defs.py").write_text(DEFS)
    (tmp_path / "raw.json").write_text(json.dumps(data))
    return tmp_path


def _row(project: Path, asset: str) -> dict[str, Any]:
    result = hw_project(project, "status", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = [r for r in json.loads(result.stdout) if r["asset"] == asset]
    return row  # type: ignore[no-any-return]


def test_a_failed_blocking_check_fails_status_check_and_is_named_on_its_row(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path, [])
    run = hw_project(project, "materialize", "rows", "total")
    assert "skipped total: requested, but waiting: input rows is blocked by failed check" in (
        run.stdout
    )
    rows = _row(project, "rows")
    assert rows["state"] == "fresh"  # its value is there and current: only its readers wait
    assert rows["failed_checks"] == [{"check": "not_empty", "blocking": True, "error": None}]
    assert "blocking check 'not_empty' failed; its readers wait until it passes" in rows["reason"]
    check = hw_project(project, "status", "--check")
    assert check.returncode == 1, check.stdout
    assert "1 failed a blocking check: rows (blocking check 'not_empty' failed" in check.stdout
    assert "blocking check 'not_empty' failed" in check.stdout.splitlines()[2]  # rows' own row

    (project / "raw.json").write_text("[1, 2, 3, 4]")  # not empty, but too many for `small`
    assert hw_project(project, "materialize", "rows", "total").returncode == 0
    rows = _row(project, "rows")
    assert rows["failed_checks"] == [
        {"check": "small", "blocking": False, "error": "ValueError: 4 rows"}
    ]
    assert "check 'small' failed: ValueError: 4 rows" in rows["reason"]
    assert "readers wait" not in rows["reason"]
    assert _row(project, "total")["state"] == "fresh"
    check = hw_project(project, "status", "--check")
    assert check.returncode == 0, check.stdout  # a non-blocking check holds nothing back
    assert "check 'small' failed" in check.stdout  # but the table shows it

    (project / "raw.json").write_text("[1]")
    assert hw_project(project, "materialize", "rows", "total").returncode == 0
    assert _row(project, "rows")["failed_checks"] == []
    assert hw_project(project, "status", "--check").returncode == 0


def test_the_verdict_shown_is_on_the_value_held_until_a_new_value_passes(
    tmp_path: Path,
) -> None:
    """An edit that makes the asset stale does not clear the failure: the value its readers
    would get is still the one the check failed; the next value's verdict replaces it."""
    project = _project(tmp_path, [])
    hw_project(project, "materialize", "rows")
    assert _row(project, "rows")["failed_checks"] != []
    (project / "defs.py").write_text(DEFS.replace("return raw", "return raw + [0]"))
    # rows is stale now, and its recorded verdict judged the value it still has: still shown
    assert _row(project, "rows")["failed_checks"][0]["check"] == "not_empty"
    hw_project(project, "materialize", "rows")
    assert _row(project, "rows")["failed_checks"] == []


def _metric(base: str, name: str, **labels: str) -> float | None:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def test_the_daemon_shows_a_failed_blocking_check_on_status_metrics_and_page(
    tmp_path: Path, daemons: list[object]
) -> None:
    project = _project(tmp_path, [])
    daemon = DaemonProcess(
        project,
        project / "defs.py",
        project / "state",
        args=("--settle", "0.2", "--grace", "10", "--http", "127.0.0.1:0"),
    )
    daemons.append(daemon)
    daemon.start()
    base = f"http://{daemon.wait_event('http_listening')['address']}"
    daemon.wait_event("check_failed", check="not_empty")
    daemon.wait_notify("READY=1")

    raw = httpx.get(f"{base}/status", timeout=10).json()
    (rows,) = [StatusRow.from_json(r) for r in raw if r["asset"] == "rows"]
    assert rows.held_by_check and [c.name for c in rows.failed_checks] == ["not_empty"]
    assert _metric(base, "headwater_check_failed_partitions", asset="rows") == 1.0
    graph = httpx.get(f"{base}/api/graph", timeout=10).json()
    assert {n["key"]: n["check_failed"] for n in graph["nodes"]} == {
        "raw": 0,
        "rows": 1,
        "total": 0,
    }

    since = daemon.mark()
    (project / "raw.json").write_text("[1]")
    daemon.wait_event("materialized", asset="total", since=since)
    assert _metric(base, "headwater_check_failed_partitions", asset="rows") == 0.0
    raw = httpx.get(f"{base}/status", timeout=10).json()
    assert all(r["failed_checks"] == [] for r in raw)


PARTITIONED = """
import headwater as hw

keys = hw.StaticPartitions({keys})
raw = hw.FileSource("raw", "raw/{{partition}}.json", partitions=keys)

@hw.asset(partitions=keys)
def rows(raw: list) -> list:
    return raw

@hw.check(rows, blocking=True)
def not_empty(rows: list) -> bool:
    return len(rows) > 0

defs = hw.Definitions([raw, rows], checks=[not_empty])
"""


def test_a_partition_removed_from_the_definitions_fails_no_check(tmp_path: Path) -> None:
    """Its failed blocking check holds no reader back any more: ``status`` still lists the
    partition the log knows of, but ``--check`` does not fail on it (as ``/metrics`` counts
    only partitions that exist)."""
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.json").write_text("[1]")
    (tmp_path / "raw" / "b.json").write_text("[]")
    (tmp_path / "defs.py").write_text(PARTITIONED.format(keys=["a", "b"]))
    hw_project(tmp_path, "materialize", "rows")
    check = hw_project(tmp_path, "status", "--check")
    assert check.returncode == 1 and "rows[b] (blocking check 'not_empty' failed" in check.stdout
    (tmp_path / "defs.py").write_text(PARTITIONED.format(keys=["a"]))
    result = hw_project(tmp_path, "status", "--check", "--json")
    assert result.returncode == 0, result.stdout
    rows = json.loads(result.stdout)
    (gone,) = [r for r in rows if (r["asset"], r["partition"]) == ("rows", "b")]
    assert gone["failed_checks"] == []
