"""Retries on the virtual clock: delays with backoff, downstream waits, exhaustion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from servers import moto_bucket

import headwater as hw
from headwater.testing import Harness
from headwater.versions import file_version


def _flaky(fail_times: int, retries: hw.Retry) -> tuple[hw.Definitions, list[int]]:
    calls: list[int] = []
    src = hw.source("src")

    @hw.asset(retries=retries)
    def fetch(src: Any) -> Any:
        calls.append(1)
        if len(calls) <= fail_times:
            raise ConnectionError(f"attempt {len(calls)} failed")
        return src

    @hw.asset
    def below(fetch: Any) -> Any:
        return fetch

    return hw.Definitions([src, fetch, below]), calls


def test_retry_after_the_delay_and_downstream_waits_meanwhile() -> None:
    defs, calls = _flaky(1, hw.Retry(max_attempts=3, delay="10m", backoff=2))
    with Harness(defs, now="2026-01-05T00:00:00Z") as h:
        h.observe("src", value=1)
        tick = h.tick()
        assert tick.failed == {("fetch", None): "ConnectionError: attempt 1 failed"}
        assert tick.skipped[("fetch", None)] == "retry 2 of 3 at 2026-01-05T00:10:00+00:00"
        assert tick.skipped[("below", None)].startswith("waiting: input fetch failed")
        assert h.advance(minutes=9).materialized == []
        tick = h.advance(minutes=1)
        assert tick.materialized == [("fetch", None), ("below", None)]
        assert len(calls) == 2
        started = h.events(kind="run_started", asset="fetch")
        assert [e.payload["attempt"] for e in started] == [1, 2]
        assert started[1].payload["reason"].startswith("retry 2 of 3")


def test_backoff_grows_and_exhaustion_leaves_it_failed() -> None:
    defs, calls = _flaky(99, hw.Retry(max_attempts=3, delay="10m", backoff=2))
    with Harness(defs, now="2026-01-05T00:00:00Z") as h:
        h.observe("src", value=1)
        h.tick()
        h.advance(minutes=10)  # attempt 2 fails; the next waits 20 minutes
        assert len(calls) == 2
        assert h.advance(minutes=19).materialized == []
        assert len(calls) == 2
        h.advance(minutes=1)
        assert len(calls) == 3
        h.advance("2d")
        assert len(calls) == 3  # exhausted: no more attempts
        assert h.state("fetch") == "failed"
        assert h.state("below") == "missing"
        failures = h.events(kind="run_failed", asset="fetch")
        assert [e.timestamp.isoformat()[11:16] for e in failures] == ["00:00", "00:10", "00:30"]
        h.observe("src", value=2)  # an input change starts over
        h.tick()
        assert len(calls) == 4


def test_a_request_runs_an_exhausted_partition_again() -> None:
    defs, calls = _flaky(1, hw.Retry(max_attempts=1))
    with Harness(defs) as h:
        h.observe("src", value=1)
        h.tick()
        assert h.state("fetch") == "failed"
        h.advance("1d")
        assert len(calls) == 1
        assert h.materialize("fetch").materialized == [("fetch", None), ("below", None)]


def _reads_file(folder: Path, loader: Any = None) -> hw.Definitions:
    src = hw.FileSource("f", str(folder / "a.csv"), loader=loader)

    @hw.asset(retries=hw.Retry(max_attempts=2, delay="30s"))
    def rows(f: Any) -> int:
        return len(f)

    return hw.Definitions([src, rows])


def test_a_source_file_deleted_before_the_run_reads_it_spends_no_retry(tmp_path: Path) -> None:
    """Not the function's failure: the run is abandoned, the deletion recorded (as a sensor
    would record it), and the asset waits for the file, then runs on it as a first attempt."""
    path = tmp_path / "a.csv"
    path.write_text("x\n1\n")
    with Harness(_reads_file(tmp_path), state_dir=tmp_path / "state") as h:
        h.observe("f", file_version(path))
        path.unlink()  # after the observation, before the tick's run reads it
        result = h.tick()
        assert result.failed == {} and result.materialized == []
        assert "deleted" in result.skipped[("rows", None)]
        assert h.events(kind="run_failed") == []
        (abandoned,) = h.events(kind="run_abandoned", asset="rows")
        assert "deleted before the run read it" in abandoned.payload["reason"]
        assert h.events(kind="observation", asset="f")[-1].data_version is None
        assert h.tick().materialized == []  # waiting for its input: it does not run again
        path.write_text("x\n1\n2\n")
        h.observe("f", file_version(path))
        assert h.tick().assets == {"rows"} and h.value("rows") == 2
        (started, *_) = h.events(kind="run_started", asset="rows")[-1:]
        assert started.payload["attempt"] == 1


def test_a_loader_missing_a_file_of_its_own_fails_its_run(tmp_path: Path) -> None:
    """Only the source's own file being gone is "not the function's failure": a loader that
    looks for another file fails the run as any function does (and is not run in a loop)."""
    path = tmp_path / "a.csv"
    path.write_text("x\n1\n")

    def loader(p: Path) -> Any:
        return (p.parent / "sidecar.json").read_text()

    with Harness(_reads_file(tmp_path, loader), state_dir=tmp_path / "state") as h:
        h.observe("f", file_version(path))
        result = h.tick()
        assert "sidecar.json" in result.failed[("rows", None)]
        assert h.events(kind="run_abandoned") == []
        assert len(h.events(kind="run_started", asset="rows")) == 1


def test_an_object_deleted_before_the_run_reads_it_spends_no_retry(tmp_path: Path) -> None:
    """The same for an object source, on a real S3-compatible server: the store's NoSuchKey
    abandons the run, and the asset waits for the object to come back."""
    with moto_bucket("lake") as (endpoint, client):
        options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing",
                   "region_name": "us-east-1"}  # fmt: skip
        src = hw.ObjectSource("o", "s3://lake/a.csv", storage_options=options)

        @hw.asset(retries=hw.Retry(max_attempts=2, delay="30s"))
        def rows(o: Any) -> int:
            return len(o)

        client.put_object(Bucket="lake", Key="a.csv", Body=b"x\n1\n")
        etag = client.head_object(Bucket="lake", Key="a.csv")["ETag"].strip('"')
        with Harness(hw.Definitions([src, rows]), state_dir=tmp_path / "state") as h:
            h.observe("o", etag)
            client.delete_object(Bucket="lake", Key="a.csv")  # after the listing saw it
            result = h.tick()
            assert result.failed == {} and result.materialized == []
            assert h.events(kind="run_failed") == []
            (abandoned,) = h.events(kind="run_abandoned", asset="rows")
            assert "object was deleted before the run read it" in abandoned.payload["reason"]
            assert h.events(kind="observation", asset="o")[-1].data_version is None
            assert h.tick().materialized == []  # waiting for its input
            client.put_object(Bucket="lake", Key="a.csv", Body=b"x\n1\n2\n")
            h.observe("o", client.head_object(Bucket="lake", Key="a.csv")["ETag"].strip('"'))
            assert h.tick().assets == {"rows"} and h.value("rows") == 2
            assert h.events(kind="run_started", asset="rows")[-1].payload["attempt"] == 1


def test_an_input_that_changes_back_to_the_failed_version_runs_it_again() -> None:
    """Retries spent on input v2; the input goes to v1 (fresh again) and back to v2: it
    changed since the failure, so the failure no longer stands and the asset runs (it stood
    for good, and a transient failure was never tried again on v2: hostile34c bug4)."""
    src = hw.source("src")
    outage = [True]

    @hw.asset(retries=hw.Retry(max_attempts=2, delay="30s"))
    def a(src: int) -> int:
        if src == 2 and outage[0]:
            raise ConnectionError("upstream API unavailable")
        return src

    with Harness(hw.Definitions([src, a]), now="2026-01-05T00:00:00Z") as h:
        h.observe("src", value=1)
        h.tick()
        h.observe("src", value=2)
        h.advance("2m")
        assert h.state("a") == "failed"
        h.advance("1h")
        assert h.state("a") == "failed"  # nothing changed: it stands
        outage[0] = False
        h.observe("src", value=1)
        h.tick()
        assert h.state("a") == "fresh"
        h.observe("src", value=2)
        assert h.state("a") == "stale"
        assert h.tick().materialized == [("a", None)]
        assert h.value("a") == 2


def test_a_reader_of_a_failure_whose_code_was_fixed_waits_for_a_missing_input() -> None:
    """A failed input whose code was edited since runs again: its reader said "input a
    failed" while `why a`, `plan` and the tick treated the failure as moot (hostile34c
    bug8). It waits for an input that is missing and runs again."""
    from headwater._loading import load_definitions

    src_text = (
        "import headwater as hw\nsrc = hw.source('src')\n"
        "@hw.asset(retries=hw.Retry(max_attempts=3, delay='30m'))\ndef a(src):\n    BODY\n"
        "@hw.asset\ndef b(a):\n    return a\n"
        "defs = hw.Definitions([src, a, b])\n"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "defs.py").write_text(src_text.replace("BODY", "raise ValueError('bug')"))
        with Harness(load_definitions(str(folder / "defs.py")), state_dir=folder / "s") as h:
            h.observe("src", value=1)
            h.tick()
            assert any("input a failed" in r for r in h.why("b"))
        (folder / "defs.py").write_text(src_text.replace("BODY", "return src"))
        with Harness(load_definitions(str(folder / "defs.py")), state_dir=folder / "s") as h:
            reasons = [r for r in h.why("b") if not r.startswith("last recorded decision")]
            assert not any("input a failed" in r for r in reasons), reasons
            assert any("input a is missing (its last run failed; it runs again)" in r
                       for r in reasons), reasons  # fmt: skip
            assert h.tick().materialized == [("a", None), ("b", None)]
