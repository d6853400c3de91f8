"""What the CLI prints when things go wrong: where, why, what to type instead, and never raw
escape sequences or rich markup from data it did not write."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from cli_process import hw

PROJECT = textwrap.dedent(
    """
    import headwater as hw

    daily = hw.DailyPartitions(start="2026-01-01", end="2026-01-06")
    inbox = hw.DynamicPartitions("inbox")
    raw = hw.FileSource("raw", "data/{partition}.txt", partitions=daily,
                        loader=lambda path: path.read_text())
    notes = hw.FileSource("notes", "inbox/{partition}.txt", partitions=inbox,
                          loader=lambda path: path.read_text())


    def explode(text):
        raise RuntimeError("\\x1b[2J\\x1b]0;owned\\x07[/oops] [bold red]boom")


    @hw.asset(partitions=daily)
    def cleaned(raw: str) -> str:
        return raw.strip()


    @hw.asset(policy=hw.manual())
    def hostile(cleaned: dict) -> int:
        return explode("x")


    @hw.asset(partitions=inbox)
    def note_length(notes: str) -> int:
        return len(notes)


    defs = hw.Definitions([raw, notes, cleaned, hostile, note_length])
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "defs.py").write_text(PROJECT)
    (tmp_path / "data").mkdir()
    (tmp_path / "inbox").mkdir()
    (tmp_path / "data" / "2026-01-01.txt").write_text("hello\n")
    return tmp_path


def _hw(project: Path, *args: str) -> tuple[int, str, str]:
    result = hw(*args, "-d", "defs.py", cwd=project)
    return result.returncode, result.stdout, result.stderr


def test_a_failure_says_where_and_nothing_reaches_the_terminal_raw(project: Path) -> None:
    assert _hw(project, "materialize", "cleaned")[0] == 0
    code, out, _ = _hw(project, "materialize", "hostile")
    assert code == 1
    assert "\x1b" not in out and "\\x1b[2J" in out and "\\x07" in out
    code, out, err = _hw(project, "status")
    assert code == 0, err
    assert "\x1b" not in out and "[/oops] [bold red]boom" in out  # markup shown literally
    assert "FAILED" in out and "1 failed: hostile (" in out  # the summary line
    code, out, err = _hw(project, "why", "hostile")
    assert code == 0, err
    assert "\x1b" not in out
    assert f"at {project / 'defs.py'}:13" in out  # the user's line that raised
    assert "traceback (last frames):" in out and "explode" in out
    code, out, _ = _hw(project, "logs", "--kind", "run_failed")
    assert code == 0 and "\x1b" not in out and "\\u001b" in out  # JSON-escaped in the payload
    code, out, _ = _hw(project, "logs", "--json", "--kind", "run_failed")
    (line,) = out.splitlines()
    assert json.loads(line)["payload"]["error"].startswith("RuntimeError: \x1b[2J")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["logs", "--kind", "materialisation"], "did you mean 'materialization'"),
        (["logs", "--asset", "cleand"], "did you mean 'cleaned'"),
        (["materialize", "cleand"], "did you mean 'cleaned'"),
        (["materialize", "cleaned", "--partition", "2026-1-4"], "did you mean '2026-01-04'"),
        (["why", "cleaned", "--partition", "2026-1-4"], "did you mean '2026-01-04'"),
        (["why", "cleand"], "did you mean 'cleaned'"),
    ],
)
def test_typos_are_exit_2_with_did_you_mean(project: Path, args: list[str], message: str) -> None:
    assert _hw(project, "materialize", "cleaned")[0] == 0
    code, _, err = _hw(project, *args)
    assert code == 2, err
    assert message in err and "Traceback" not in err


def test_a_long_legal_file_name_is_a_partition_that_can_be_stored(project: Path) -> None:
    """205 characters (and 30 CJK characters, 90 bytes): fine as file names and as keys."""
    long_name = "x" * 205
    cjk = "数" * 30
    for name in (long_name, cjk):
        (project / "inbox" / f"{name}.txt").write_text("text")
    code, out, err = _hw(project, "materialize", "note_length")
    assert code == 0, err
    assert out.count("materialized note_length[") == 2
    code, out, _ = _hw(project, "status", "--json")
    states = {r["partition"]: r["state"] for r in json.loads(out) if r["asset"] == "note_length"}
    assert states == {long_name: "fresh", cjk: "fresh"}


def test_keys_that_differ_only_in_unicode_form_print_apart(project: Path) -> None:
    """``café`` written on macOS (NFD: ``e`` and a combining accent) and typed here (NFC)
    are two files and two keys, which printed alike in every table and message (hostile32b
    bug10). The one not in NFC shows its combining mark escaped; JSON keeps both as they
    are, and each can be named."""
    import unicodedata

    composed, decomposed = "café", unicodedata.normalize("NFD", "café")
    for name in (composed, decomposed):
        (project / "inbox" / f"{name}.txt").write_text(name)
    code, out, err = _hw(project, "materialize", "note_length")
    assert code == 0, err
    assert "materialized note_length[café]" in out
    assert "materialized note_length[cafe\\u0301]" in out
    code, out, _ = _hw(project, "status")
    assert "cafe\\u0301" in out and "café" in out
    code, out, _ = _hw(project, "status", "--json")
    keys = {r["partition"] for r in json.loads(out) if r["asset"] == "note_length"}
    assert keys == {composed, decomposed}
    code, out, err = _hw(project, "why", "note_length", "-p", decomposed)
    assert code == 0 and "note_length[cafe\\u0301] is fresh" in out, err


def test_a_backfill_summary_tells_refused_partitions_from_waiting_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Partitions the stopping daemon did not start make the command exit 1; its summary must
    not call them "waiting", the word for partitions that wait for an input (exit 0)."""
    from headwater._cli_print import print_backfill
    from headwater.execution import TickResult
    from headwater.execution._cycle import STOPPING

    result = TickResult(
        materialized=[("daily", "2026-11-01")],
        skipped={("daily", "2026-11-02"): STOPPING, ("daily", "2026-11-03"): "waiting: input"},
    )
    nodes = [("daily", f"2026-11-0{d}") for d in range(1, 5)]
    print_backfill("daily", "2026-11-01", "2026-11-04", result, nodes)
    summary = capsys.readouterr().out.splitlines()[-1]
    assert summary == (
        "backfill daily 2026-11-01..2026-11-04: 1 materialized, 0 failed, 1 not started, "
        "1 waiting, 1 already fresh"
    )
