"""kill -9 of the daemon at random moments, with the CLI asking for work at the same time.

Whatever the moment (starting up, scanning, running, committing), what is on disk afterwards is
whole: every landed file ends up materialized from its final content, no input is
materialized twice, every stored value reads back, and the kernel has released the lock.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from cli_process import hw, hw_start
from daemon_process import DaemonProcess

from headwater._statedir import Ownership
from headwater.eventlog import EventLogReader

RESOURCES = Path(__file__).parent / "resources"
ROUNDS = 50
SLOW_RUNS = {"HW_RUN_SECONDS": "0.15"}  # so that kills land in the middle of runs too


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path, daemons: list[object]
) -> None:
    shutil.copy(RESOURCES / "owner_project.py", tmp_path / "defs.py")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rng = random.Random(20261130)
    final: dict[str, str] = {}
    for round_ in range(ROUNDS):
        daemon = DaemonProcess(tmp_path, tmp_path / "defs.py", tmp_path / "state", env=SLOW_RUNS)
        daemons.append(daemon)
        daemon.start()
        for i in range(2):
            name, text = f"r{round_:02d}x{i}", f"a,b\n{round_},{i}\n"
            (inbox / f"{name}.csv").write_text(text)
            final[name] = text
        if rng.random() < 0.5:  # rewrite an earlier file with new content
            name = rng.choice(sorted(final))
            final[name] = f"a,b\n{round_},{rng.random()}\n"
            (inbox / f"{name}.csv").write_text(final[name])
        mid_run = round_ % 2 == 1
        if mid_run:  # half the rounds: kill while functions run, the daemon's and the CLI's
            daemon.wait_notify("READY=1")
        cli = hw_start("materialize", "parsed", "--state-dir", "state", "-d", "defs.py",
                       cwd=tmp_path, env=SLOW_RUNS)  # fmt: skip
        if mid_run:
            daemon.wait_event("run_started")
            time.sleep(rng.uniform(0, 0.15))  # a random moment within the run, not a wait
        else:  # the other half: any moment, start-up and scanning included
            time.sleep(rng.uniform(0.1, 1.6))
        daemon.kill9()
        _, err = cli.communicate(timeout=120)
        # done (by itself or the daemon), cut short mid-request (1), or no daemon to reach (3)
        assert cli.returncode in (0, 1, 3), err
        assert cli.returncode != 1 or "went away before the request finished" in err
        assert "Traceback" not in err

    Ownership.acquire(tmp_path / "state", "cli").release()  # kill -9 left no lock behind
    last = DaemonProcess(tmp_path, tmp_path / "defs.py", tmp_path / "state")
    daemons.append(last)
    last.start().wait_notify("READY=1")
    deadline = time.monotonic() + 120
    while True:
        status = hw("status", "--json", "--state-dir", "state", "-d", "defs.py", cwd=tmp_path)
        rows = {r["partition"]: r for r in json.loads(status.stdout) if r["asset"] == "parsed"}
        if set(rows) == set(final) and all(r["state"] == "fresh" for r in rows.values()):
            break
        assert time.monotonic() < deadline, f"not caught up: {rows}"
    assert last.terminate() == 0

    state = tmp_path / "state"
    with sqlite3.connect(state / "events.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    reader = EventLogReader(state)
    done = Counter(
        (e.partition, json.dumps(e.payload["inputs"]), e.payload["code_version"])
        for e in reader.events(kind="materialization", asset="parsed")
    )
    duplicated = {k: n for k, n in done.items() if n > 1}
    assert duplicated == {}, f"materialized twice from the same inputs: {duplicated}"
    for name, text in final.items():  # nothing lost, every value readable and current
        (value,) = (state / "values" / "parsed").glob(f"p={name}.*")
        frame = pd.read_parquet(value)
        expected = text.strip().splitlines()[1].split(",")
        assert [float(v) for v in frame.iloc[0]] == [float(v) for v in expected], name
    assert not list((state / "values").rglob(".tmp-*"))
    started = len(reader.events(kind="daemon_started"))
    assert started >= ROUNDS // 2  # most rounds got as far as owning the state directory
    assert len(reader.events(kind="run_abandoned")) >= ROUNDS // 4  # kills landed mid-run
