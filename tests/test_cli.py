"""The command line, run as users run it: `python -m headwater ...` in a subprocess."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from cli_process import hw

import headwater as hw_

RESOURCES = Path(__file__).parent / "resources"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copy(RESOURCES / "pipeline.py", tmp_path / "pipeline.py")
    data = tmp_path / "data"
    data.mkdir()
    (data / "2026-01-01.csv").write_text("region,amount\neu,1.5\nus,2.0\n,9\n")
    (data / "2026-01-02.csv").write_text("region,amount\neu,3.0\n")
    return tmp_path


def test_validate_reports_counts(project: Path) -> None:
    result = hw("validate", "--definitions", "pipeline.py", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "5 assets, 1 sources, 0 checks" in result.stdout


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("broken_cycle.py", "cycle in the asset graph"),
        ("broken_import.py", "NameError: name 'undefined_name' is not defined (line 6)"),
        ("missing.py", "definitions file 'missing.py' does not exist"),
        ("exits.py", "importing it raised SystemExit: 0"),  # not a silent exit 0
        ("stops.py", "importing it raised SystemExit: 3"),  # not 'state directory unusable'
        ("ends.py", "importing it called os._exit(0) (line 2)"),  # cannot be caught
        ("thread_ends.py", "importing it called os._exit(0) in a thread it started"),
        ("catches.py", "importing it called os._exit(3)"),  # the file caught the refusal
        ("posix_ends.py", "importing it called os._exit(4) (line 2)"),  # the same function
        ("odd.py", "importing it raised Odd: x"),
        ("folder", "definitions file 'folder' is not a regular file"),
    ],
)
def test_bad_definitions_exit_2_with_one_paragraph(
    tmp_path: Path, target: str, message: str
) -> None:
    """A user's mistake: exit 2, a message naming the file, no traceback."""
    for name in ("broken_cycle.py", "broken_import.py"):
        shutil.copy(RESOURCES / name, tmp_path / name)
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(0)\n")
    (tmp_path / "stops.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "ends.py").write_text("import os\nos._exit(0)\n")
    (tmp_path / "thread_ends.py").write_text(
        "import os, threading\nt = threading.Thread(target=os._exit, args=(0,))\n"
        "t.start()\nt.join()\n"
    )
    (tmp_path / "catches.py").write_text(
        "import os\ntry:\n    os._exit(3)\nexcept BaseException:\n    pass\n"
    )
    (tmp_path / "posix_ends.py").write_text("import posix\nposix._exit(4)\n")
    (tmp_path / "odd.py").write_text("class Odd(BaseException): ...\nraise Odd('x')\n")
    (tmp_path / "folder").mkdir()
    result = hw("validate", "--definitions", target, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert target in result.stderr
    assert "Traceback" not in result.stderr


FORKS = """
import os
pid = os.fork()
if pid == 0:
    os._exit(0)  # a child of the import: it must end, not go on as the validator
os.waitpid(pid, 0)
import headwater as hw
defs = hw.Definitions([hw.source("src")])
"""


def test_a_child_forked_by_the_import_can_still_exit(tmp_path: Path) -> None:
    (tmp_path / "forks.py").write_text(FORKS)
    result = hw("validate", "--definitions", "forks.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok:") == 1
    assert result.stderr == ""


def test_an_exit_saved_at_import_exits_for_real_after_it(tmp_path: Path) -> None:
    """``atexit.register(os._exit, 0)`` (or ``from os import _exit``) keeps the function it
    found while the definitions imported: after the import it must exit, not raise (a
    traceback as validate ended; a worker that could not exit)."""
    (tmp_path / "saves.py").write_text(
        "import atexit, os\natexit.register(os._exit, 0)\n"
        "import headwater as hw\ndefs = hw.Definitions([hw.source('src')])\n"
    )
    result = hw("validate", "--definitions", "saves.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:") and result.stderr == ""


def test_a_module_target_names_a_package_folder_beside_it(tmp_path: Path) -> None:
    """``mypkg:defs`` from the folder that holds the package ``mypkg/``: the module, not a
    definitions file named ``mypkg`` ("not a regular file")."""
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text(
        "import headwater as hw\ndefs = hw.Definitions([hw.source('src')])\n"
    )
    result = hw("validate", "--definitions", "mypkg:defs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: mypkg:defs: 0 assets, 1 sources")


def test_no_definitions_anywhere_is_explained(tmp_path: Path) -> None:
    result = hw("status", cwd=tmp_path)
    assert result.returncode == 2
    assert "HEADWATER_DEFINITIONS" in result.stderr and "[tool.headwater]" in result.stderr


@pytest.mark.parametrize("option", ["--state-dir", "--definitions"])
def test_an_empty_option_is_refused_not_taken_for_the_default(tmp_path: Path, option: str) -> None:
    """`--state-dir ''` (an unset shell variable) wrote ./.headwater, and `--definitions ''`
    read the daemon's definitions, without a word (hostile33b bug6)."""
    result = hw("materialize", "a", option, "", cwd=tmp_path)
    assert result.returncode == 2
    assert f"Invalid value for '{option}'" in result.stderr
    assert "is empty; leave the option out for the default" in result.stderr
    assert not (tmp_path / ".headwater").exists()


def test_definitions_from_environment_and_pyproject(project: Path) -> None:
    """HEADWATER_DEFINITIONS, then [tool.headwater] in pyproject.toml, supply the defaults."""
    assert hw("validate", cwd=project, env={"HEADWATER_DEFINITIONS": "pipeline.py"}).returncode == 0
    (project / "pyproject.toml").write_text(
        '[tool.headwater]\ndefinitions = "pipeline.py"\nstate_dir = "st"\n'
    )
    sub = project / "sub"
    sub.mkdir()
    result = hw("materialize", "orders_clean", "--partition", "2026-01-01", cwd=sub)
    assert result.returncode == 0, result.stderr
    assert (project / "st" / "events.db").exists()


def test_materialize_status_why_logs(project: Path) -> None:
    """The whole read/write loop: materialize, then read it back every way."""
    result = hw("materialize", "orders_clean", "totals", "-d", "pipeline.py", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "materialized orders_clean[2026-01-01]" in result.stdout
    assert (
        "skipped orders_clean[2026-01-03]: requested, but waiting: input orders[2026-01-03] is missing"
        in result.stdout
    )

    status = hw("status", "--json", "-d", "pipeline.py", cwd=project)
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    by_node = {(r["asset"], r["partition"]): r for r in rows}
    for row in rows:
        assert {
            "asset",
            "partition",
            "state",
            "late",
            "data_version",
            "last_materialized_at",
        } <= set(row)
    assert by_node[("orders_clean", "2026-01-01")]["state"] == "fresh"
    assert by_node[("orders_clean", "2026-01-03")]["state"] == "missing"
    assert by_node[("totals", None)]["last_materialized_at"].endswith("Z")

    table = hw("status", "-d", "pipeline.py", cwd=project)
    assert "orders_clean" in table.stdout and "fresh" in table.stdout

    (project / "data" / "2026-01-02.csv").write_text("region,amount\neu,4.0\n")
    rerun = hw("materialize", "orders_clean", "totals", "-d", "pipeline.py", cwd=project)
    assert "materialized orders_clean[2026-01-02]" in rerun.stdout
    assert "orders_clean[2026-01-01]" not in rerun.stdout.replace("skipped", "")

    why = hw("why", "orders_clean", "--partition", "2026-01-03", "-d", "pipeline.py", cwd=project)
    assert why.returncode == 0
    assert why.stdout.startswith("orders_clean[2026-01-03] is missing")
    assert "input orders[2026-01-03] is missing" in why.stdout

    logs = hw("logs", "--json", "--kind", "materialization", "-d", "pipeline.py", cwd=project)
    lines = [json.loads(line) for line in logs.stdout.splitlines()]
    assert {line["kind"] for line in lines} == {"materialization"}
    assert set(lines[0]) == {
        "id",
        "timestamp",
        "kind",
        "asset",
        "partition",
        "run_id",
        "data_version",
        "payload",
    }
    assert sum(1 for line in lines if line["asset"] == "orders_clean") == 3
    since = hw(
        "logs", "--json", "--since", "1h", "--asset", "totals", "-d", "pipeline.py", cwd=project
    )
    assets = {json.loads(line)["asset"] for line in since.stdout.splitlines()}
    assert assets == {"totals"}
    assert (
        hw("logs", "--since", "2099-01-01T00:00:00Z", "-d", "pipeline.py", cwd=project).stdout == ""
    )


def test_failed_materialization_exits_1_and_status_check_reports_it(project: Path) -> None:
    hw("materialize", "orders_clean", "totals", "-d", "pipeline.py", cwd=project)
    rows = json.loads(hw("status", "--json", "-d", "pipeline.py", cwd=project).stdout)
    assert [r["state"] for r in rows if r["asset"] == "broken"] == ["missing"]
    failed = hw("materialize", "broken", "-d", "pipeline.py", cwd=project)
    assert failed.returncode == 1
    assert "failed broken: RuntimeError: this asset always fails" in failed.stdout
    check = hw("status", "--check", "-d", "pipeline.py", cwd=project)
    assert check.returncode == 1
    rows = json.loads(hw("status", "--json", "-d", "pipeline.py", cwd=project).stdout)
    assert [r["state"] for r in rows if r["asset"] == "broken"] == ["failed"]
    why = hw("why", "broken", "-d", "pipeline.py", cwd=project)
    assert "broken is failed" in why.stdout and "this asset always fails" in why.stdout


@pytest.mark.parametrize(
    "command", [["status", "--check"], ["status"], ["why", "totals"], ["logs"]]
)
def test_reading_commands_without_an_event_log_exit_2_saying_where_they_looked(
    project: Path, command: list[str]
) -> None:
    """A monitoring check run from the wrong folder must not report an empty "all OK"."""
    result = hw(*command, "-d", "pipeline.py", cwd=project)
    assert result.returncode == 2, result.stdout
    assert f"no event log at {project / '.headwater' / 'events.db'}" in result.stderr
    assert "--state-dir" in result.stderr
    assert not (project / ".headwater").exists()  # reading never creates the state directory


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["materialize", "nope"], "unknown asset 'nope'"),
        (["materialize", "orders"], "'orders' is a source"),
        (
            ["materialize", "orders_clean", "--partition", "2027-01-01"],
            "partition '2027-01-01' is not a key",
        ),
        (["why", "totals", "--partition", "x"], "asset 'totals' is not partitioned"),
        (["logs", "--since", "whenever"], "--since 'whenever'"),
        (["lineage", "--format", "png"], "Invalid value for '--format'"),
    ],
)
def test_usage_mistakes_exit_2(project: Path, args: list[str], message: str) -> None:
    hw("materialize", "totals", "-d", "pipeline.py", cwd=project)  # creates the log for `logs`
    result = hw(*args, "-d", "pipeline.py", cwd=project)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("text", "orders_clean (asset, eager) <- orders"),
        ("mermaid", "graph LR"),
        ("dot", '"orders" -> "orders_clean";'),
    ],
)
def test_lineage_formats(project: Path, fmt: str, expected: str) -> None:
    result = hw("lineage", "--format", fmt, "-d", "pipeline.py", cwd=project)
    assert result.returncode == 0
    assert expected in result.stdout


_QUOTED = r'"(?:[^"\\\n]|\\.)*"'
_DOT_LINE = re.compile(
    rf"^\s*(digraph headwater {{|rankdir=LR;|}}|{_QUOTED} \[shape=\w+\];"
    rf"|{_QUOTED} -> {_QUOTED}( \[label={_QUOTED}\])?;)$"
)
_MERMAID_LINE = re.compile(r'^\s*(graph LR|n\d+\["[^"\n]*"\]|n\d+ (-->|-- "[^"\n]*" -->) n\d+)$')


def test_lineage_labels_cannot_break_out_of_their_quotes() -> None:
    """A partition dimension's name is free text, and an edge's label shows it: a quote, a
    backslash or a line break in it must not end the label and start a statement of its own
    (dot would draw a node named by whoever wrote the definitions' labels)."""
    from headwater._lineage import render_lineage

    evil = 're\\gion"];\n  evil [label="pwn'
    multi = hw_.MultiPartitions(
        {'da"te': hw_.DailyPartitions(start="2026-01-01"), evil: hw_.StaticPartitions(["eu"])}
    )
    src = hw_.source("src", partitions=multi)
    mapping = {'da"te': hw_.TimeWindow(offset=-1), evil: hw_.Identity()}

    @hw_.asset(partitions=multi, ins={"prev": hw_.Input("src", mapping=mapping, optional=True)})
    def shifted(prev: object) -> object:
        return prev

    defs = hw_.Definitions([src, shifted])
    dot = render_lineage(defs, "dot").splitlines()
    assert [line for line in dot if not _DOT_LINE.match(line)] == []
    assert any("label=" in line for line in dot)  # the label is there, escaped
    mermaid = render_lineage(defs, "mermaid").splitlines()
    assert [line for line in mermaid if not _MERMAID_LINE.match(line)] == []
    text = render_lineage(defs, "text").splitlines()
    assert len(text) == 2 and text[1].startswith("shifted (asset"), text
    assert text[0] == "src (source)"


def test_module_attribute_target(project: Path) -> None:
    result = hw("validate", "-d", "pipeline:defs", cwd=project, env={"PYTHONPATH": str(project)})
    assert result.returncode == 0, result.stderr


def test_status_check_exits_1_when_something_is_late(project: Path) -> None:
    """An SLA breach (max_age of 1ms, long past by the time status runs) fails --check."""
    assert hw("materialize", "always_late", "-d", "pipeline.py", cwd=project).returncode == 0
    check = hw("status", "--check", "--json", "-d", "pipeline.py", cwd=project)
    assert check.returncode == 1
    rows = json.loads(check.stdout)
    assert [r for r in rows if r["state"] == "failed"] == []  # lateness alone fails the check
    (row,) = [r for r in rows if r["asset"] == "always_late"]
    assert row["late"] is True and row["state"] == "fresh"
    assert "LATE" in hw("status", "-d", "pipeline.py", cwd=project).stdout


def test_backfill_reports_per_partition_and_exits_1_on_failure(project: Path) -> None:
    result = hw(
        "backfill",
        "flaky_days",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-03",
        "-d",
        "pipeline.py",
        cwd=project,
    )
    assert result.returncode == 1
    assert "failed flaky_days[2026-01-02]: ValueError: no data for the 2nd" in result.stdout
    assert (
        "backfill flaky_days 2026-01-01..2026-01-03: 2 materialized, 1 failed, 0 waiting, 0 already fresh"
        in result.stdout
    )
    again = hw(
        "backfill",
        "flaky_days",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-01",
        "-d",
        "pipeline.py",
        cwd=project,
    )
    assert again.returncode == 0
    assert "0 materialized, 0 failed, 0 waiting, 1 already fresh" in again.stdout


def test_backfill_waits_on_missing_inputs_without_failing(project: Path) -> None:
    result = hw(
        "backfill",
        "orders_clean",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-03",
        "-d",
        "pipeline.py",
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    assert "2 materialized, 0 failed, 1 waiting" in result.stdout
    assert (
        "skipped orders_clean[2026-01-03]: requested, but waiting: input orders[2026-01-03] is missing"
        in result.stdout
    )


def test_backfill_usage_errors_exit_2(project: Path) -> None:
    result = hw(
        "backfill",
        "orders_clean",
        "--from",
        "2026-01-03",
        "--to",
        "2026-01-01",
        "-d",
        "pipeline.py",
        cwd=project,
    )
    assert result.returncode == 2
    assert "comes after" in result.stderr


def test_plan_lists_the_steps_a_change_would_run_and_writes_nothing(project: Path) -> None:
    assert (
        hw("materialize", "orders_clean", "totals", "-d", "pipeline.py", cwd=project).returncode
        == 0
    )
    log = project / ".headwater" / "events.db"
    before = (
        log.stat().st_size,
        len(json.loads(hw("status", "--json", "-d", "pipeline.py", cwd=project).stdout)),
    )
    result = hw("plan", "--changed", "orders:2026-01-02", "-d", "pipeline.py", cwd=project)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("plan if orders[2026-01-02] changed: 2 steps")
    assert lines[1].startswith("    1. orders_clean[2026-01-02]: input orders[2026-01-02] changed")
    assert lines[2].startswith("    2. totals: input orders_clean[2026-01-02] changed")
    assert lines[2].endswith("[may stop: early cutoff]")
    as_json = json.loads(
        hw("plan", "-c", "orders:2026-01-02", "--json", "-d", "pipeline.py", cwd=project).stdout
    )
    assert [(s["asset"], s["partition"], s["may_stop"]) for s in as_json["steps"]] == [
        ("orders_clean", "2026-01-02", False),
        ("totals", None, True),
    ]
    now = hw("plan", "-d", "pipeline.py", cwd=project)
    assert now.returncode == 0, now.stderr
    assert now.stdout.startswith("plan now: 0 steps")
    assert "broken: missing; manual policy: runs only when asked" in now.stdout
    assert "always_late: LATE" in now.stdout
    after = (
        log.stat().st_size,
        len(json.loads(hw("status", "--json", "-d", "pipeline.py", cwd=project).stdout)),
    )
    assert after == before
    for args, message in (
        (["-c", "orders"], "source 'orders' is partitioned; name one as orders:PARTITION"),
        (["-c", "totals"], "'totals' is an asset; --changed names sources"),
        (["-c", "order:2026-01-01"], "did you mean 'orders'"),
        (["-c", "orders:2026-02-30"], "partition '2026-02-30'"),
        (["-c", "orders:"], "no partition after ':'"),
    ):
        bad = hw("plan", *args, "-d", "pipeline.py", cwd=project)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
        assert "Traceback" not in bad.stderr


EDITED_SOURCES = """
import headwater as hw

raw = hw.FileSource("raw", "data/raw.json")
days = hw.FileSource("days", "data/days/{partition}.json", partitions=hw.StaticPartitions(["a", "b"]))

@hw.asset
def a(raw):
    return raw

@hw.asset(partitions=hw.StaticPartitions(["a", "b"]))
def per_day(days):
    return days

defs = hw.Definitions([raw, days, a, per_day])
"""


def test_plan_with_no_daemon_sees_files_changed_since_they_were_observed(tmp_path: Path) -> None:
    """No daemon watched while a file was edited and another deleted: ``plan`` says what a
    daemon starting now would run (it observes the files first), and still writes nothing
    (hostile34c bug15: it said 0 steps, and a start ran the reader)."""
    (tmp_path / "defs.py").write_text(EDITED_SOURCES)
    (tmp_path / "data" / "days").mkdir(parents=True)
    (tmp_path / "data" / "raw.json").write_text('{"x": 1}')
    for day in ("a", "b"):
        (tmp_path / "data" / "days" / f"{day}.json").write_text("[1]")
    done = hw("materialize", "a", "per_day", "-d", "defs.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    unchanged = json.loads(hw("plan", "--json", "-d", "defs.py", cwd=tmp_path).stdout)
    assert unchanged["steps"] == [] and unchanged["unobserved"] == []
    (tmp_path / "data" / "raw.json").write_text('{"x": 2}')
    (tmp_path / "data" / "days" / "b.json").unlink()
    log = tmp_path / ".headwater" / "events.db"
    before = log.stat().st_size
    out = json.loads(hw("plan", "--json", "-d", "defs.py", cwd=tmp_path).stdout)
    assert {(u["asset"], u["partition"], u["version"] is None) for u in out["unobserved"]} == {
        ("raw", None, False),
        ("days", "b", True),
    }
    assert [(s["asset"], s["partition"]) for s in out["steps"]] == [("a", None)]
    assert out["steps"][0]["reason"].startswith("input raw changed")
    held = {(h["asset"], h["partition"]): h["reason"] for h in out["held"]}
    assert "input days[b] was deleted" in held[("per_day", "b")]
    text = hw("plan", "-d", "defs.py", cwd=tmp_path).stdout
    assert "as the files are now (no daemon watches them" in text
    assert "raw changed, days[b] deleted" in text
    assert log.stat().st_size == before  # nothing observed, nothing written
    assert "1 materialized" in hw("materialize", "a", "-d", "defs.py", cwd=tmp_path).stdout


def test_plan_names_at_most_ten_files_changed_on_disk(tmp_path: Path) -> None:
    """Thousands of files deleted while no daemon watched: the text names ten and counts the
    rest (it printed one line of 50 KB: hostile35b bug7); --json lists them all."""
    keys = [f"k{i:02}" for i in range(12)]
    (tmp_path / "defs.py").write_text(
        "import headwater as hw\n"
        f"keys = hw.StaticPartitions({keys})\n"
        "days = hw.FileSource('days', 'd/{partition}.json', partitions=keys)\n"
        "per = hw.asset('per', ins={'days': 'days'}, partitions=keys)(lambda days: days)\n"
        "defs = hw.Definitions([days, per])\n"
    )
    (tmp_path / "d").mkdir()
    for key in keys:
        (tmp_path / "d" / f"{key}.json").write_text("[1]")
    observed = hw("materialize", "per", "-d", "defs.py", cwd=tmp_path)  # scans the files first
    assert observed.returncode == 0, observed.stderr
    for key in keys:
        (tmp_path / "d" / f"{key}.json").unlink()
    text = hw("plan", "-d", "defs.py", cwd=tmp_path).stdout
    (line,) = [ln for ln in text.splitlines() if "as the files are now" in ln]
    assert line.endswith("days[k09] deleted, and 2 more") and "k10" not in line
    listed = json.loads(hw("plan", "--json", "-d", "defs.py", cwd=tmp_path).stdout)
    assert len(listed["unobserved"]) == 12


DEEP_METADATA = """
import headwater as hw

@hw.asset
def deep() -> hw.Output:
    nested: list = []
    inner = nested
    for _ in range(900):  # past pickle's recursion limit
        inner.append([])
        inner = inner[0]
    return hw.Output(1, metadata={"nested": nested})

defs = hw.Definitions([deep], executor="processes", max_concurrency=1)
"""


def test_a_worker_answers_with_metadata_that_does_not_pickle(tmp_path: Path) -> None:
    """Metadata nested past pickle's recursion limit: the worker died sending the outcome
    ("worker exited with status 1") though the function had returned. It goes as the log
    writes it, and the run materializes."""
    (tmp_path / "defs.py").write_text(DEEP_METADATA)
    args = ("--definitions", "defs.py", "--state-dir", "state")
    done = hw("materialize", "deep", *args, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    logs = hw("logs", "--kind", "materialization", "--json", *args, cwd=tmp_path)
    (event,) = [json.loads(line) for line in logs.stdout.splitlines() if line.strip()]
    assert event["asset"] == "deep"
    assert "nested past 64 levels" in json.dumps(event["payload"]["metadata"])


def test_why_from_the_log_alone_uses_run_durations_and_names_a_cut_off_run(
    tmp_path: Path,
) -> None:
    """``why`` with no daemon running: a lazy asset's run time leads by its recent run
    durations, as the engine and ``plan`` schedule it (it said 1 s ahead for a 2 s run:
    hostile34c bug6); a run the log shows under way with no owner alive was cut off, not in
    progress (hostile34c bug14)."""
    from datetime import UTC, datetime, timedelta

    from headwater._events import EventKind
    from headwater._loading import load_definitions
    from headwater.testing import Harness

    (tmp_path / "defs.py").write_text(
        "import time\nimport headwater as hw\n"
        "src = hw.source('src')\n"
        "@hw.asset(policy=hw.lazy())\ndef lz(src):\n    time.sleep(2)\n    return src\n"
        "@hw.asset(freshness=hw.Freshness(max_lag='1h'))\ndef top(lz):\n    return lz\n"
        "other = hw.source('other')\n"
        "@hw.asset\ndef cut(other):\n    return other\n"
        "defs = hw.Definitions([src, lz, top, other, cut])\n"
    )
    start = (datetime.now(UTC) - timedelta(hours=1, seconds=5)).isoformat()
    defs = load_definitions(str(tmp_path / "defs.py"))
    with Harness(defs, now=start, state_dir=tmp_path / "state") as h:
        h.observe("src", value=1)
        h.tick()  # top pulls lz, which runs for 2 s
        h.advance("1h")
        h.observe("src", value=2)
        h.tick()
        opened = h.engine.event(EventKind.RUN_STARTED, ("cut", None), run_id="r-cut")
        h._call(h.engine.append, [opened])  # as a daemon killed mid-run leaves it
    why = hw("why", "lz", "-d", "defs.py", "--state-dir", "state", cwd=tmp_path)
    assert why.returncode == 0, why.stderr
    lead = re.search(r"runs at \S+ \((\d+(?:\.\d+)?)s ahead", why.stdout)
    assert lead is not None and float(lead.group(1)) >= 3.0, why.stdout
    cut = hw("why", "cut", "-d", "defs.py", "--state-dir", "state", cwd=tmp_path)
    assert "run r-cut was cut off" in cut.stdout and "in progress" not in cut.stdout, cut.stdout
