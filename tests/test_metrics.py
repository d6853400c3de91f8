"""``run --http``: /metrics in the Prometheus text format, parsed with prometheus_client's own
parser, from the real daemon as a subprocess; counters move as runs happen; commands stay off
TCP unless asked for."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cli_process import hw_project
from daemon_process import DaemonProcess
from prometheus_client.parser import text_string_to_metric_families

import headwater as hw
from headwater._clock import VirtualClock, parse_instant
from headwater.daemon._summary import StateSummary
from headwater.execution import Engine


def _start(project: Path, daemons: list[object], *extra: str) -> tuple[DaemonProcess, str]:
    daemon = DaemonProcess(
        project,
        project / "defs.py",
        project / "state",
        args=("--settle", "0.2", "--grace", "10", "--http", "127.0.0.1:0", *extra),
    )
    daemons.append(daemon)
    daemon.start()
    line = daemon.wait_event("http_listening")
    daemon.wait_notify("READY=1")
    return daemon, f"http://{line['address']}"


def _scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{base}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _get(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_what_the_log_records(owner_project: Path, daemons: list[object]) -> None:
    (owner_project / "inbox" / "early.csv").write_text("x,y\n0,0\n")  # seen by the first scan
    daemon, base = _start(owner_project, daemons)
    daemon.wait_event("materialized", asset="parsed", partition="early")
    before = _scrape(base)
    assert _get(before, "process_resident_memory_bytes") > 0
    assert _get(before, "headwater_event_log_bytes") > 0
    assert _get(before, "headwater_sensor_lag_seconds", sensor="files", source="") == 0.0
    assert _get(before, "headwater_observations_total", asset="files") == 1
    assert _get(before, "headwater_runs_started_total", asset="parsed") == 1
    since = daemon.mark()
    for name in ("a", "b"):
        (owner_project / "inbox" / f"{name}.csv").write_text("x,y\n1,2\n")
    for name in ("a", "b"):
        daemon.wait_event("materialized", asset="parsed", partition=name, since=since)
    assert hw_project(owner_project, "materialize", "stamp").returncode == 0
    daemon.wait_event("materialized", asset="stamp_reader", since=since)
    after = _scrape(base)
    assert _get(after, "headwater_runs_started_total", asset="parsed") == 3
    assert _get(after, "headwater_runs_succeeded_total", asset="parsed") == 3
    assert _get(after, "headwater_observations_total", asset="files") == 3
    assert _get(after, "headwater_run_duration_seconds_count", asset="parsed") == 3
    assert _get(after, "headwater_runs_succeeded_total", asset="stamp_reader") == 1
    assert _get(after, "headwater_partitions", asset="parsed", state="fresh") == 3
    assert _get(after, "headwater_partitions", asset="stamp", state="fresh") == 1
    assert _get(after, "headwater_plan_duration_seconds_count") >= 1
    labels = {dict(k[1]).get("partition") for k in after}
    assert labels == {None}  # never a label per partition


def test_commands_stay_off_tcp_unless_asked(owner_project: Path, daemons: list[object]) -> None:
    _, base = _start(owner_project, daemons)
    refused = httpx.post(f"{base}/stop", json={}, timeout=10)
    assert refused.status_code == 403 and "--http-write" in refused.json()["error"]
    assert httpx.get(f"{base}/health", timeout=10).json()["state"] == "serving"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("99999", "is not an address to listen on"),
        ("localhost:http", "is not an address to listen on"),
    ],
)
def test_bad_http_addresses_exit_2(owner_project: Path, value: str, message: str) -> None:
    result = hw_project(owner_project, "run", "--http", value)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "--http" in result.stderr and "Traceback" not in result.stderr


def test_other_sites_may_neither_read_nor_command(
    owner_project: Path, daemons: list[object]
) -> None:
    """DNS rebinding (a foreign Host) cannot read the API; with --http-write, a form or a
    no-cors fetch of another site (no JSON content type, or a foreign Origin) cannot send a
    command; a JSON request from the daemon's own address can."""
    daemon, base = _start(owner_project, daemons, "--http-write")
    port = base.rsplit(":", 1)[1]
    rebound = httpx.get(f"{base}/status", headers={"Host": f"evil.example:{port}"}, timeout=10)
    assert rebound.status_code == 403 and "is not this daemon's address" in rebound.json()["error"]
    assert httpx.get(f"{base}/status", headers={"Host": f"localhost:{port}"}, timeout=10).is_success
    form = httpx.post(f"{base}/stop", content=b"{}", headers={"Content-Type": "text/plain"})
    assert form.status_code == 403 and "JSON body" in form.json()["error"]
    foreign = httpx.post(f"{base}/stop", json={}, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and "may not send commands" in foreign.json()["error"]
    assert daemon.proc is not None and daemon.proc.poll() is None
    stop = httpx.post(f"{base}/stop", json={}, timeout=30)
    assert stop.status_code == 200 and stop.json()["stopping"] is True
    assert daemon.proc.wait(timeout=30) == 0


@pytest.fixture
def wide() -> Any:
    """A source read by 300 assets (built outside the event loop: it reads the cwd)."""
    src = hw.source("src")
    return hw.Definitions(
        [src] + [hw.asset(f"a{i}", ins={"x": "src"})(_plus_one) for i in range(300)]
    )


@pytest.mark.asyncio
async def test_partitions_are_counted_off_the_event_loop_once_per_change(
    tmp_path: Path, wide: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What /metrics and the web page count looks at every partition (0.45 s at 100k assets):
    it is counted in a worker thread (the event loop goes on: file landings are not held
    back), concurrent asks share one count, and a write makes the next ask count again."""
    from headwater.daemon import _summary

    threads: list[int] = []
    real = _summary._recount

    def watched(ev: Any, before: Any, keys: Any) -> Any:
        threads.append(threading.get_ident())
        return real(ev, before, keys)

    monkeypatch.setattr(_summary, "_recount", watched)
    summary = StateSummary()
    clock = VirtualClock(parse_instant("2026-01-05T00:00:00Z"))
    async with Engine.open(wide, tmp_path, clock) as engine:
        engine.observers.append(summary)
        counted: list[Any] = []

        async def count() -> None:
            counted.append(await summary.of(engine))

        async with anyio.create_task_group() as tg:
            tg.start_soon(count)
            tg.start_soon(count)
        assert counted[0] is counted[1]  # one count for both
        assert counted[0].states["a7"] == {"missing": 1}
        await engine.observe("src", value=1)
        await engine.tick()
        after = await summary.of(engine)
        assert after is not counted[0]
        assert after.states["a7"] == {"fresh": 1}
        assert await summary.of(engine) is after  # nothing written since
    loop = threading.get_ident()
    assert len(threads) == 2 and loop not in threads, (loop, threads)


def _plus_one(x: int) -> int:
    return x + 1
