"""Every way a file lands, on the real daemon with real inotify: cp, mv from a sibling folder,
rsync, an editor's save, links (inside the folder, to anywhere, to what must never be read),
hard links, a FIFO, non-canonical names, a file appended to in steps, and a burst of thousands
of files into new folders. The periodic rescan is set to an hour: what is seen here, the events
showed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_process import DaemonProcess

import headwater as hw
from headwater.eventlog import EventLogReader

RESOURCES = Path(__file__).parent / "resources"
CSV = "a,b\n1,2\n"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, DaemonProcess]]:
    """One daemon for the module; each test lands its own files."""
    root = tmp_path_factory.mktemp("arrivals")
    shutil.copy(RESOURCES / "arrivals_project.py", root / "defs.py")
    for folder in ("inbox", "linked", "days", "burst", "appends", "staging", "elsewhere"):
        (root / folder).mkdir()
    daemon = DaemonProcess(
        root, root / "defs.py", root / "state",
        args=("--settle", "0.3", "--grace", "5", "--rescan-interval", "3600",
              "--log-level", "debug"),  # every look at a file is a line
    )  # fmt: skip
    daemon.start().wait_notify("READY=1")
    yield root, daemon
    daemon.close()
    assert daemon.bad_lines == []


def _events(
    root: Path, kind: str, asset: str | None = None, partition: str | None = None
) -> list[Any]:
    return EventLogReader(root / "state").events(kind=kind, asset=asset, partition=partition)


def _materialized(
    daemon: DaemonProcess, asset: str, partition: str, since: int, timeout: float = 10
) -> dict[str, Any]:
    return daemon.wait_event(
        "materialized", asset=asset, partition=partition, since=since, timeout=timeout
    )


def test_cp_counts_once(site: tuple[Path, DaemonProcess]) -> None:
    root, daemon = site
    (root / "staging" / "copied.csv").write_text(CSV)
    since = daemon.mark()
    subprocess.run(["cp", str(root / "staging" / "copied.csv"), str(root / "inbox")], check=True)
    _materialized(daemon, "parsed", "copied", since)
    assert len(_events(root, "observation", "files", "copied")) == 1


def test_a_copied_file_is_looked_at_once(site: tuple[Path, DaemonProcess]) -> None:
    """cp's creation and close arrive together: the creation must not leave the file waiting
    for a close that already came (it would be examined, and logged, again after --settle)."""
    root, daemon = site
    (root / "staging" / "once.csv").write_text(CSV)
    since = daemon.mark()
    subprocess.run(["cp", str(root / "staging" / "once.csv"), str(root / "inbox")], check=True)
    _materialized(daemon, "parsed", "once", since)
    # A file of the source with settle="400ms" is observed 0.4 s after it lands: later than
    # the copied file's second look (--settle, 0.3 s, after it landed) would have been.
    (root / "appends" / "after_once.log").write_text("one\n")
    daemon.wait_event("file_observed", source="appends", partition="after_once", since=since)
    looks = [ln for ln in daemon.lines[since:] if ln.get("partition") == "once"
             and ln.get("event") in ("file_observed", "file_unchanged")]  # fmt: skip
    assert len(looks) == 1, looks


def test_a_file_seen_again_unchanged_is_not_news(site: tuple[Path, DaemonProcess]) -> None:
    """Rewriting the same bytes changes no version: at info level the log says nothing of
    it (a glob source is looked at again on every batch); at debug level it says it saw it."""
    root, daemon = site

    def land(text: str) -> None:  # by rename, so that no look can see it half-written
        (root / "staging" / "same.csv").write_text(text)
        (root / "staging" / "same.csv").replace(root / "inbox" / "same.csv")

    since = daemon.mark()
    land(CSV)
    _materialized(daemon, "parsed", "same", since)
    again = daemon.mark()
    land(CSV)
    daemon.wait_event("file_unchanged", source="files", partition="same", since=again)
    land(CSV + "3,4\n")
    daemon.wait_event("file_observed", source="files", partition="same", since=again)
    seen = [(ln["event"], ln["level"]) for ln in daemon.lines[again:]
            if ln.get("partition") == "same" and ln.get("event", "").startswith("file_")]  # fmt: skip
    assert seen == [("file_unchanged", "debug"), ("file_observed", "info")], seen


def test_mv_from_a_sibling_folder_is_seen_at_once(site: tuple[Path, DaemonProcess]) -> None:
    """watchdog reports a move in from an unwatched folder as a creation; it still counts."""
    root, daemon = site
    (root / "staging" / "moved.csv").write_text(CSV)
    since = daemon.mark()
    started = time.monotonic()
    subprocess.run(["mv", str(root / "staging" / "moved.csv"), str(root / "inbox")], check=True)
    _materialized(daemon, "parsed", "moved", since)
    assert time.monotonic() - started < 5  # the rescan is an hour away: the event did it


def test_rsync_into_the_inbox_counts_its_final_content_once(
    site: tuple[Path, DaemonProcess],
) -> None:
    """rsync writes a hidden temp file beside the target, then renames it into place."""
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (.ci/run installs it)")
    root, daemon = site
    (root / "staging" / "synced.csv").write_text("a,b\n1,2\n3,4\n")
    since = daemon.mark()
    subprocess.run(
        ["rsync", str(root / "staging" / "synced.csv"), str(root / "inbox") + "/"], check=True
    )
    line = _materialized(daemon, "parsed", "synced", since)
    (event,) = list(_events(root, "materialization", "parsed", "synced"))
    assert event.run_id == line["run_id"] and event.payload["metadata"]["rows"] == 2
    assert _events(root, "partitions_added") and all(
        not k.startswith(".") for e in _events(root, "partitions_added") for k in e.payload["keys"]
    )  # rsync's temp file matched no partition: names starting with a dot are its own


def test_an_editor_save_counts_its_final_content(site: tuple[Path, DaemonProcess]) -> None:
    """Write a swap file, then rename it over the target (what editors do on save)."""
    root, daemon = site
    (root / "inbox" / "edited.csv").write_text(CSV)
    _materialized(daemon, "parsed", "edited", daemon.mark())
    since = daemon.mark()
    swap = root / "inbox" / ".edited.csv.swp"
    swap.write_text("a,b\n9,9\n8,8\n7,7\n")
    swap.rename(root / "inbox" / "edited.csv")
    _materialized(daemon, "parsed", "edited", since)
    last = _events(root, "materialization", "parsed", "edited")[-1]
    assert last.payload["metadata"]["rows"] == 3


def test_a_hard_link_counts_at_once(site: tuple[Path, DaemonProcess]) -> None:
    root, daemon = site
    (root / "staging" / "hard.csv").write_text(CSV)
    since = daemon.mark()
    os.link(root / "staging" / "hard.csv", root / "inbox" / "hard.csv")
    _materialized(daemon, "parsed", "hard", since)


def test_a_link_inside_the_folder_is_followed_and_its_target_watched(
    site: tuple[Path, DaemonProcess],
) -> None:
    root, daemon = site
    (root / "inbox" / "store").mkdir()
    target = root / "inbox" / "store" / "real.data"
    target.write_text(CSV)
    since = daemon.mark()
    (root / "inbox" / "inlink.csv").symlink_to(target)
    _materialized(daemon, "parsed", "inlink", since)
    since = daemon.mark()
    target.write_text("a,b\n5,6\n7,8\n")  # the target changes: so does the link's partition
    _materialized(daemon, "parsed", "inlink", since)
    assert _events(root, "materialization", "parsed", "inlink")[-1].payload["metadata"]["rows"] == 2


def test_a_link_outside_the_folder_is_ignored_with_how_to_allow_it(
    site: tuple[Path, DaemonProcess],
) -> None:
    root, daemon = site
    secret = root / "elsewhere" / "secret.csv"
    secret.write_text("password\nhunter2\n")
    secret.chmod(0o600)
    since = daemon.mark()
    (root / "inbox" / "leak.csv").symlink_to(secret)
    (root / "inbox" / "environ.csv").symlink_to("/proc/self/environ")
    (root / "inbox" / "state.csv").symlink_to(root / "state" / "events.db")
    for name in ("leak", "environ", "state"):
        line = daemon.wait_event(
            "file_ignored", path=str(root / "inbox" / f"{name}.csv"), since=since
        )
        assert "symbolic link" in line["reason"]
    assert (
        'symlinks="follow"'
        in daemon.wait_event("file_ignored", path=str(root / "inbox" / "leak.csv"), since=since)[
            "reason"
        ]
    )
    for name in ("leak", "environ", "state"):
        assert _events(root, "observation", "files", name) == []
    values = root / "state" / "values"
    assert not any("leak" in p.name or "environ" in p.name for p in values.rglob("*"))


def test_a_link_anywhere_is_followed_with_symlinks_follow_and_its_target_watched(
    site: tuple[Path, DaemonProcess],
) -> None:
    root, daemon = site
    target = root / "elsewhere" / "shared.csv"
    target.write_text(CSV)
    since = daemon.mark()
    (root / "linked" / "far.csv").symlink_to(target)
    _materialized(daemon, "linked_rows", "far", since)
    since = daemon.mark()
    target.write_text("a,b\n1,2\n3,4\n5,6\n")  # outside every watched folder: watched for it
    _materialized(daemon, "linked_rows", "far", since)
    since = daemon.mark()
    (root / "linked" / "env.csv").symlink_to("/proc/self/environ")  # never, even with follow
    assert (
        "/proc"
        in daemon.wait_event("file_ignored", path=str(root / "linked" / "env.csv"), since=since)[
            "reason"
        ]
    )


def test_a_hard_link_published_then_its_temporary_name_removed_counts(
    site: tuple[Path, DaemonProcess],
) -> None:
    """``os.link(tmp, dst); os.unlink(tmp)``: dst shows only a creation, and by the time the
    sensor looks it has one link. No process holds it open, so no close will ever come."""
    root, daemon = site
    temporary = root / "staging" / ".published.tmp"
    temporary.write_text(CSV)
    since = daemon.mark()
    os.link(temporary, root / "inbox" / "published.csv")
    temporary.unlink()
    _materialized(daemon, "parsed", "published", since)


def test_a_file_held_open_without_a_close_is_counted_at_its_close_only(
    site: tuple[Path, DaemonProcess],
) -> None:
    """A writer pausing for longer than --settle: the sensor asks /proc, sees it held for
    writing, and waits for the close, so the half-written content is never read."""
    root, daemon = site
    since = daemon.mark()
    with open(root / "inbox" / "slow.csv", "w") as writer:
        writer.write("a,b\n1,2\n")
        writer.flush()
        # well past --settle (0.3 s): the sensor looks while the file is held open
        time.sleep(1.0)
        writer.write("3,4\n")
    _materialized(daemon, "parsed", "slow", since)
    (observed,) = _events(root, "observation", "files", "slow")
    assert _events(root, "materialization", "parsed", "slow")[-1].payload["metadata"]["rows"] == 2
    assert observed.payload.get("path", "").endswith("slow.csv")


@pytest.mark.parametrize(
    ("folder", "target", "asset", "made"),
    [
        ("inbox", "inbox/pending/early.data", "parsed", "before"),
        ("linked", "elsewhere/early.csv", "linked_rows", "before"),
        # the target's folder is made after the link, and after the sensor looked at it
        ("linked", "elsewhere/later/deeper/late.csv", "linked_rows", "after"),
    ],
)
def test_a_dangling_link_is_named_and_counts_once_its_target_appears(
    site: tuple[Path, DaemonProcess], folder: str, target: str, asset: str, made: str
) -> None:
    root, daemon = site
    if made == "before":
        (root / target).parent.mkdir(exist_ok=True)
    name = Path(target).stem
    link = root / folder / f"{name}.csv"
    since = daemon.mark()
    link.symlink_to(root / target)
    line = daemon.wait_event("file_ignored", path=str(link), since=since)
    assert "does not exist" in line["reason"]
    since = daemon.mark()
    (root / target).parent.mkdir(parents=True, exist_ok=True)
    (root / target).write_text(CSV)  # no event on the link itself: its target's is enough
    _materialized(daemon, asset, name, since)


@pytest.mark.parametrize("folder", ["inbox", "burst"], ids=["partition_key", "glob"])
def test_a_file_name_that_is_not_utf8_is_named_and_stops_nothing(
    site: tuple[Path, DaemonProcess], folder: str
) -> None:
    """A name's bytes that are not UTF-8 (a file from another system's encoding) would reach
    the log as a partition key or in a glob's version: the file is named as ignored, with
    what to do, and the daemon goes on (it died at once, and again at every start)."""
    root, daemon = site
    name = os.fsdecode(b"caf\xe9-" + folder.encode() + b".csv")  # Latin-1 bytes
    since = daemon.mark()
    (root / folder / name).write_text(CSV)
    line = daemon.wait_event("file_ignored", path=str(root / folder / name), since=since)
    assert "valid UTF-8" in line["reason"] and "rename" in line["reason"]
    (root / "inbox" / f"after_{folder}.csv").write_text(CSV)
    _materialized(daemon, "parsed", f"after_{folder}", since)
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_a_fifo_is_skipped_and_never_blocks_the_daemon(site: tuple[Path, DaemonProcess]) -> None:
    root, daemon = site
    fifo = root / "staging" / "pipe.csv"
    os.mkfifo(fifo)
    since = daemon.mark()
    fifo.rename(root / "inbox" / "pipe.csv")
    line = daemon.wait_event("file_ignored", path=str(root / "inbox" / "pipe.csv"), since=since)
    assert "FIFO" in line["reason"]
    (root / "inbox" / "after_fifo.csv").write_text(CSV)
    _materialized(daemon, "parsed", "after_fifo", since)
    assert _events(root, "observation", "files", "pipe") == []


def test_a_fifo_made_in_the_inbox_is_named_without_waiting_for_a_rescan(
    site: tuple[Path, DaemonProcess],
) -> None:
    """mkfifo shows only a creation; no writer holds it, so it is looked at after --settle."""
    root, daemon = site
    since = daemon.mark()
    os.mkfifo(root / "inbox" / "made_here.csv")
    line = daemon.wait_event(
        "file_ignored", path=str(root / "inbox" / "made_here.csv"), since=since, timeout=10
    )
    assert "FIFO" in line["reason"]


def test_a_non_canonical_key_is_not_a_partition_and_is_named_once(
    site: tuple[Path, DaemonProcess],
) -> None:
    root, daemon = site
    since = daemon.mark()
    (root / "days" / "2026-1-5.csv").write_text(CSV)
    line = daemon.wait_event("file_ignored", path=str(root / "days" / "2026-1-5.csv"), since=since)
    assert "did you mean '2026-01-05'" in line["reason"]
    (root / "days" / "2026-1-5.csv").write_text(CSV + "3,4\n")  # again: no second warning
    (root / "days" / "2026-01-05.csv").write_text(CSV)
    deadline = time.monotonic() + 10
    while not _events(root, "observation", "days", "2026-01-05"):
        assert time.monotonic() < deadline
    warnings = [ln for ln in daemon.lines[since:] if ln.get("event") == "file_ignored"
                and ln.get("path", "").endswith("2026-1-5.csv")]  # fmt: skip
    assert len(warnings) == 1
    assert [e.partition for e in _events(root, "observation", "days")] == ["2026-01-05"]


def test_a_file_appended_in_steps_counts_once_with_its_final_content(
    site: tuple[Path, DaemonProcess],
) -> None:
    """The source's settle= waits for the path to be quiet: three appends, one run."""
    root, daemon = site
    since = daemon.mark()
    log = root / "appends" / "steps.log"
    for line in ("one", "two", "three"):
        with open(log, "a") as f:
            f.write(line + "\n")
    _materialized(daemon, "log_lines", "steps", since)
    runs = _events(root, "materialization", "log_lines", "steps")
    assert len(runs) == 1
    assert len(_events(root, "observation", "appends", "steps")) == 1
    assert runs[0].data_version == hw.data_version(3)


def test_a_burst_of_2000_files_into_new_folders_is_seen_within_10_s_without_delaying_others(
    site: tuple[Path, DaemonProcess],
) -> None:
    root, daemon = site
    since = daemon.mark()
    started = time.monotonic()

    def write_burst() -> None:
        for folder in range(200):
            where = root / "burst" / f"batch{folder:03d}"
            where.mkdir()
            for i in range(10):
                (where / f"f{i}.csv").write_text(f"x\n{folder * 10 + i}\n")

    writer = threading.Thread(target=write_burst)
    writer.start()
    (root / "inbox" / "during_burst.csv").write_text(CSV)
    landed = time.monotonic()
    _materialized(daemon, "parsed", "during_burst", since, timeout=10)
    other_latency = time.monotonic() - landed
    writer.join()
    daemon.wait_event("materialized", asset="burst_count", data_version=hw.data_version(2000),
                      since=since, timeout=10)  # fmt: skip
    assert time.monotonic() - started < 10
    assert other_latency < 2, f"the inbox file waited {other_latency:.1f} s behind the burst"
