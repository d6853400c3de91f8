"""Hostile input that the other hostile tests do not cover yet, and the "confirmed safe"
list kept safe: a link to /dev/zero, long and CJK object keys on a real S3-compatible server,
escape sequences on a real pseudo-terminal, keys that look like paths or SQL, URI characters
in the state directory's path, a link planted where a value goes, a FIFO present at start.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import boto3
import pytest
from cli_process import cli_env, hw, hw_project
from daemon_process import DaemonProcess
from servers import moto_server

import headwater as hw_
from headwater.eventlog import EventLogReader
from headwater.testing import Harness

INBOX_DEFS = textwrap.dedent(
    """
    import pandas as pd
    import headwater as hw

    inbox = hw.DynamicPartitions("inbox")
    files = hw.FileSource("files", "inbox/{partition}.csv", partitions=inbox, symlinks="follow")

    @hw.asset(partitions=inbox)
    def parsed(files: pd.DataFrame) -> pd.DataFrame:
        return files

    defs = hw.Definitions([files, parsed])
    """
)


def _inbox_project(root: Path) -> Path:
    (root / "defs.py").write_text(INBOX_DEFS)
    (root / "inbox").mkdir()
    return root


def _land(root: Path, name: str) -> None:
    staged = root / f"{name}.part"
    staged.write_text("a\n1\n")
    staged.rename(root / "inbox" / f"{name}.csv")


def test_a_link_to_dev_zero_is_never_read_even_when_links_are_followed(
    tmp_path: Path, daemons: list[object]
) -> None:
    """Followed, it is not a regular file: skipped with a warning; the daemon stays
    responsive (a file landed after it is materialized) and stops at once."""
    root = _inbox_project(tmp_path)
    daemon = DaemonProcess(root, root / "defs.py", root / "state", args=("--grace", "3"))
    daemons.append(daemon)
    daemon.start().wait_notify("READY=1")
    (root / "inbox" / "zero.csv").symlink_to("/dev/zero")
    ignored = daemon.wait_event("file_ignored")
    assert ignored["path"].endswith("zero.csv") and "never read" in ignored["reason"]
    _land(root, "after")
    daemon.wait_event("materialized", asset="parsed", partition="after", timeout=10)
    stopped = time.monotonic()
    assert daemon.terminate(timeout=10) == 0
    assert time.monotonic() - stopped < 3
    assert EventLogReader(root / "state").events(partition="zero") == []


def test_a_fifo_present_before_the_daemon_starts_is_skipped_by_the_first_scan(
    tmp_path: Path, daemons: list[object]
) -> None:
    root = _inbox_project(tmp_path)
    os.mkfifo(root / "inbox" / "pipe.csv")
    _land(root, "regular")
    daemon = DaemonProcess(root, root / "defs.py", root / "state")
    daemons.append(daemon)
    daemon.start().wait_notify("READY=1", timeout=15)
    daemon.wait_event("materialized", asset="parsed", partition="regular")
    assert EventLogReader(root / "state").events(partition="pipe") == []
    assert daemon.terminate() == 0


OBJECT_DEFS = textwrap.dedent(
    """
    import headwater as hw

    keys = hw.DynamicPartitions("keys")
    objects = hw.ObjectSource("objects", "s3://lake/in/{partition}.json", partitions=keys,
                              poll="100ms")

    @hw.asset(partitions=keys)
    def copied(objects: dict) -> dict:
        return {**objects, "padding": "x" * 20_000}  # too large to keep in the log: a file

    defs = hw.Definitions([objects, copied])
    """
)


def test_long_and_cjk_object_keys_are_partitions_that_can_be_stored(
    tmp_path: Path, daemons: list[object]
) -> None:
    """A 230-character key and 30 CJK characters (90 bytes) become partitions, are
    materialized and stored (long names by hash), and `status --check` is clean."""
    long_key, cjk_key = "k" * 230, "漢" * 30
    (tmp_path / "defs.py").write_text(OBJECT_DEFS)
    with moto_server() as endpoint:
        client = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id="testing",
            aws_secret_access_key="testing", region_name="us-east-1",
        )  # fmt: skip
        client.create_bucket(Bucket="lake")
        for key in (long_key, cjk_key):
            client.put_object(Bucket="lake", Key=f"in/{key}.json", Body=b'{"ok": 1}')
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
        daemon = DaemonProcess(tmp_path, tmp_path / "defs.py", tmp_path / "state", env=env)
        daemons.append(daemon)
        daemon.start().wait_notify("READY=1")
        for key in (long_key, cjk_key):
            daemon.wait_event("materialized", asset="copied", partition=key)
        check = hw_project(tmp_path, "status", "--check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert daemon.terminate() == 0
    names = [p.name for p in (tmp_path / "state" / "values" / "copied").iterdir()]
    assert all(len(n.encode()) <= 255 for n in names) and len(names) == 2


ESCAPES = "\x1b]0;pwned\x07\x1b[2Jname"


def _in_a_terminal(args: list[str], cwd: Path) -> bytes:
    """What a command writes to a real pseudo-terminal."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "headwater", *args], cwd=cwd, env=cli_env({"TERM": "xterm"}),
        stdin=follower, stdout=follower, stderr=follower, close_fds=True,
    )  # fmt: skip
    os.close(follower)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 30)
            if not ready:
                raise AssertionError(f"no output for 30 s; so far: {out!r}")
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
        proc.wait(timeout=30)
    return out


def test_escape_sequences_in_an_error_never_reach_a_terminal_raw(tmp_path: Path) -> None:
    """An error message carrying an OSC title sequence and a clear-screen sequence (partition
    keys cannot: control characters are refused in keys): `status`, `why` and `logs` on a
    real terminal show them escaped, never as sequences."""
    (tmp_path / "defs.py").write_text(
        textwrap.dedent(
            """
            import headwater as hw

            @hw.asset
            def named() -> str:
                raise ValueError("bad input in " + NAME)

            defs = hw.Definitions([named])
            """
        ).replace("NAME", json.dumps(ESCAPES))
    )
    assert hw_project(tmp_path, "materialize", "named").returncode == 1
    for command in (["status"], ["why", "named"], ["logs"]):
        out = _in_a_terminal([*command, "--state-dir", "state", "-d", "defs.py"], tmp_path)
        assert b"\x1b]0;pwned" not in out and b"\x1b[2J" not in out, (command, out)
        assert b"\\x1b]0;pwned" in out or b"\\u001b]0;pwned" in out, (command, out)


def test_keys_that_look_like_paths_or_sql_stay_inside_their_asset_folder(tmp_path: Path) -> None:
    keys = ["..", ".", "%2e%2e", "x'; DROP TABLE events; --", "a b", "~"]
    parts = hw_.StaticPartitions(keys)

    @hw_.asset(partitions=parts)
    def kept(context: hw_.Context) -> str:
        return (context.partition or "") + " " * 20_000  # too large for the log: files

    with Harness(hw_.Definitions([kept]), state_dir=tmp_path / "state") as h:
        tick = h.tick()
        assert sorted(p for _, p in tick.materialized) == sorted(keys)
        for key in keys:
            assert h.value("kept", partition=key).rstrip(" ") == key
    folder = tmp_path / "state" / "values" / "kept"
    stored = list(folder.iterdir())
    assert len(stored) == len(keys)
    assert all(p.parent == folder and p.name.startswith("p=") for p in stored)
    values = tmp_path / "state" / "values"
    assert sorted(p.name for p in values.iterdir()) == [
        ".publish.lock",
        ".tmp",
        ".versioned",
        "kept",
    ]
    assert list((values / ".tmp").iterdir()) == []  # where values are written, then renamed
    with pytest.raises(hw_.DefinitionError, match="/"):
        hw_.StaticPartitions(["../etc/passwd"])


def test_uri_characters_in_the_state_directory_path_are_a_plain_path(tmp_path: Path) -> None:
    (tmp_path / "defs.py").write_text(
        "import headwater as hw\n\n@hw.asset\ndef one() -> int:\n    return 1\n\n"
        "defs = hw.Definitions([one])\n"
    )
    odd = "state?mode=ro&cache=shared#x"
    made = hw(*("materialize", "one", "--state-dir", odd, "-d", "defs.py"), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / odd / "events.db").is_file()
    assert not (tmp_path / "state").exists()
    status = hw(*("status", "--json", "--state-dir", odd, "-d", "defs.py"), cwd=tmp_path)
    assert json.loads(status.stdout)[0]["state"] == "fresh"


def test_a_link_planted_at_a_value_path_is_replaced_and_its_target_untouched(
    tmp_path: Path,
) -> None:
    @hw_.asset
    def value() -> list[int]:
        return [42] * 20_000  # too large for the log to keep: a file

    defs = hw_.Definitions([value])
    target = tmp_path / "precious.txt"
    target.write_text("do not overwrite")
    with Harness(defs, state_dir=tmp_path / "state") as h:
        h.tick()
        stored = tmp_path / "state" / "values" / "value" / "value.pickle"
        stored.unlink()
        stored.symlink_to(target)
        assert h.materialize("value", force=True).assets == {"value"}
        assert h.value("value") == [42] * 20_000
    assert not stored.is_symlink() and stored.is_file()
    assert target.read_text() == "do not overwrite"


@pytest.mark.parametrize(
    "args",
    [
        ["materialize", "../one"],
        ["why", "../../etc/passwd"],
        ["materialize", "one", "--partition", "../x"],
        ["logs", "--asset", "../one"],
    ],
)
def test_names_with_dot_dot_are_exit_2(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "defs.py").write_text(
        "import headwater as hw\n\n@hw.asset\ndef one() -> int:\n    return 1\n\n"
        "defs = hw.Definitions([one])\n"
    )
    result = hw(*args, "--state-dir", "state", "-d", "defs.py", cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
