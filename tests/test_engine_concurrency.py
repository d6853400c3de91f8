"""Overlapping ticks: a partition is never run twice at once, and no change is lost."""

from __future__ import annotations

import asyncio
import functools
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

import headwater as hw
from headwater._clock import SystemClock
from headwater.eventlog import EventLogReader
from headwater.execution import Engine


@pytest.mark.asyncio
async def test_a_change_during_a_run_reruns_after_it_never_alongside(tmp_path: Path) -> None:
    src = hw.source("src")
    release = threading.Event()
    first_started = anyio.Event()
    running = 0
    most = 0
    lock = threading.Lock()

    @hw.asset
    def slow(src: Any) -> Any:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        loop.call_soon_threadsafe(first_started.set)  # back on the loop: the run has begun
        release.wait(timeout=10)
        with lock:
            running -= 1
        return src

    @hw.asset
    def after(slow: Any) -> Any:
        return slow

    defs = hw.Definitions([src, slow, after], max_concurrency=4)
    loop = asyncio.get_running_loop()
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        await engine.observe("src", value=1)
        results = []
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def tick() -> None:
                    results.append(await engine.tick())

                tg.start_soon(tick)
                await first_started.wait()
                await engine.observe("src", value=2)  # changes while slow runs
                tg.start_soon(tick)  # a second tick, overlapping the first
                await anyio.wait_all_tasks_blocked()  # it has gone as far as it can go
                assert most == 1
                release.set()
        assert most == 1
        runs = [n for r in results for n in r.materialized if n == ("slow", None)]
        assert len(runs) == 2
        assert await anyio.to_thread.run_sync(engine.runner.load, "after", None) == 2


@pytest.mark.asyncio
async def test_a_run_that_waited_for_a_slot_reads_what_changed_meanwhile(tmp_path: Path) -> None:
    """One slot: ``reader`` queues behind ``hog``, and its input changes while it waits. It
    runs on the new input and records that version, not the one it was first decided on."""
    release = threading.Event()
    hog_started = anyio.Event()

    @hw.asset
    def hog(h: Any) -> Any:
        loop.call_soon_threadsafe(hog_started.set)
        release.wait(timeout=10)
        return h

    @hw.asset
    def reader(r: Any) -> Any:
        return r * 10

    defs = hw.Definitions([hw.source("h"), hw.source("r"), hog, reader], max_concurrency=1)
    loop = asyncio.get_running_loop()
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        await engine.observe("h", value=1)
        await engine.observe("r", value=1)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                results = []

                async def tick() -> None:
                    results.append(await engine.tick())

                tg.start_soon(tick)
                await hog_started.wait()
                assert engine.cycle.in_flight[("reader", None)].state == "queued"
                await engine.observe("r", value=2)  # while reader waits for the slot
                release.set()
        assert ("reader", None) in results[0].materialized
        assert await anyio.to_thread.run_sync(engine.runner.load, "reader", None) == 20
        record = engine.state.record(("reader", None))
        assert record is not None
        assert record.inputs == (("r", None, engine.state.version(("r", None))),)
        lost = await anyio.to_thread.run_sync(
            lambda: EventLogReader(tmp_path).events(kind="value_lost")
        )
        assert lost == []


@pytest.mark.asyncio
@pytest.mark.parametrize("partitioned", [False, True])
async def test_a_tick_waits_for_an_input_another_tick_is_running(
    tmp_path: Path, partitioned: bool
) -> None:
    """``joined`` reads ``slow`` and ``other``. While one tick runs ``slow``, ``other``
    changes and a second tick finds ``joined`` stale: it must wait for ``slow`` rather than
    run ``joined`` on the value ``slow`` is about to replace, so ``joined`` runs once, on
    both new values (unpartitioned and partitioned nodes find their inputs differently)."""
    parts = hw.StaticPartitions(["p"]) if partitioned else None
    key = "p" if partitioned else None
    release = threading.Event()
    slow_started = anyio.Event()
    read: list[Any] = []

    @hw.asset(partitions=parts)
    def slow(src: Any) -> Any:
        loop.call_soon_threadsafe(slow_started.set)
        release.wait(timeout=10)
        return src

    @hw.asset(partitions=parts)
    def joined(slow: Any, other: Any) -> Any:
        read.append((slow, other))
        return (slow, other)

    nodes = [hw.source("src", partitions=parts), hw.source("other", partitions=parts)]
    defs = hw.Definitions([*nodes, slow, joined], max_concurrency=4)
    loop = asyncio.get_running_loop()
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        await engine.observe("src", partition=key, value=1)
        await engine.observe("other", partition=key, value=1)
        release.set()
        await engine.tick()
        assert read == [(1, 1)]
        release.clear()
        slow_started = anyio.Event()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                try:
                    await engine.observe("src", partition=key, value=2)
                    tg.start_soon(engine.tick)
                    await slow_started.wait()
                    await engine.observe("other", partition=key, value=2)
                    tg.start_soon(engine.tick)  # finds `joined` stale, `slow` running
                    await anyio.wait_all_tasks_blocked()
                    assert read == [(1, 1)]  # not run on the value `slow` is replacing
                finally:
                    release.set()
        assert read == [(1, 1), (2, 2)]


@pytest.mark.asyncio
async def test_a_change_back_to_the_old_version_while_the_reader_runs_is_not_lost(
    tmp_path: Path,
) -> None:
    """``s`` goes A -> B -> A while ``r`` runs on B. The tick for the last change must not
    decide ``r`` on its record of the run before (which read A: "fresh"): once the run on B
    ends, ``r`` is stale, and it runs again on A."""
    hold = threading.Event()
    started = anyio.Event()
    runs: list[Any] = []

    @hw.asset
    def r(s: Any) -> Any:
        runs.append(s)
        loop.call_soon_threadsafe(started.set)
        hold.wait(timeout=10)
        return s

    loop = asyncio.get_running_loop()
    async with Engine.open(hw.Definitions([hw.source("s"), r], max_concurrency=4),
                           tmp_path, SystemClock()) as engine:  # fmt: skip
        await engine.observe("s", value="A")
        hold.set()
        await engine.tick()
        hold.clear()
        started = anyio.Event()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                try:
                    await engine.observe("s", value="B")
                    tg.start_soon(engine.tick)
                    await started.wait()
                    await engine.observe("s", value="A")  # back while r runs on B
                    tg.start_soon(engine.tick)
                    await anyio.wait_all_tasks_blocked()
                    assert runs == ["A", "B"]
                finally:
                    hold.set()
        assert runs == ["A", "B", "A"]
        assert engine.evaluator().status("r", None).state == "fresh"
        assert await anyio.to_thread.run_sync(engine.runner.load, "r", None) == "A"


@pytest.mark.asyncio
async def test_a_run_that_waited_for_a_slot_waits_for_an_input_claimed_meanwhile(
    tmp_path: Path,
) -> None:
    """Both slots busy. ``joined`` is decided and queued (``other`` changed); then another
    tick claims ``slow``, its input, and queues it too. When a slot frees, ``joined`` (first
    in line) must not run on the value ``slow`` is about to replace: it lets the slot go
    until ``slow`` has run (``why`` says so), and runs once, on both new values."""
    release = threading.Event()
    slow_may_end = threading.Event()
    slow_may_end.set()
    slow_started = anyio.Event()
    read: list[Any] = []

    def hog(h: Any) -> Any:
        release.wait(timeout=10)
        return h

    @hw.asset
    def slow(src: Any) -> Any:
        loop.call_soon_threadsafe(slow_started.set)
        slow_may_end.wait(timeout=10)
        return src

    @hw.asset
    def joined(slow: Any, other: Any) -> Any:
        read.append((slow, other))
        return (slow, other)

    hogs = [hw.asset(f"hog{i}", ins={"h": f"h{i}"})(hog) for i in (1, 2)]
    sources = [hw.source(k) for k in ("h1", "h2", "src", "other")]
    defs = hw.Definitions([*sources, *hogs, slow, joined], max_concurrency=2)
    loop = asyncio.get_running_loop()
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        flight = engine.cycle.in_flight
        for key in ("h1", "h2", "src", "other"):
            await engine.observe(key, value=1)
        release.set()
        await engine.tick()
        assert read == [(1, 1)]
        release.clear()
        slow_may_end.clear()
        slow_started = anyio.Event()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                try:
                    await engine.observe("h1", value=2)
                    await engine.observe("h2", value=2)
                    tg.start_soon(engine.tick)  # both hogs: both slots
                    await anyio.wait_all_tasks_blocked()
                    assert {flight[(h, None)].state for h in ("hog1", "hog2")} == {"running"}
                    await engine.observe("other", value=2)
                    tg.start_soon(engine.tick)
                    await anyio.wait_all_tasks_blocked()
                    assert flight[("joined", None)].state == "queued"
                    await engine.observe("src", value=2)
                    tg.start_soon(engine.tick)
                    await anyio.wait_all_tasks_blocked()
                    assert flight[("slow", None)].state == "queued"
                    release.set()
                    await slow_started.wait()
                    await anyio.wait_all_tasks_blocked()
                    assert flight[("joined", None)].waiting_for == ("slow", None)
                    assert "waiting for slow, which another plan is running" in " ".join(
                        engine.why("joined", None)
                    )
                finally:
                    release.set()
                    slow_may_end.set()
        assert read == [(1, 1), (2, 2)]


class _SlowToLoad:
    """A user's store whose loads wait for the test (a big table): a reader is held while
    it loads its inputs, before it reaches the one that changes."""

    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}
        self.loading = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def save(self, asset: str, partition: str | None, value: Any) -> None:
        self.values[(asset, partition)] = value

    def load(self, asset: str, partition: str | None) -> Any:
        self.loading.set()
        self.release.wait(timeout=10)
        return self.values[(asset, partition)]


@pytest.mark.asyncio
@pytest.mark.parametrize("changed", ["a source observed", "an asset materialized"])
async def test_an_input_replaced_while_a_reader_loads_it_is_not_declared_lost(
    tmp_path: Path, changed: str
) -> None:
    """``reader`` loads ``slow`` (held), then ``s``, whose value file meanwhile holds a newer
    version than the run was given: a source observed with a value, or an asset that another
    tick re-materialized. That value was replaced, not lost (SPEC §2: only a value that
    disappeared makes its partition missing): no ``value_lost``, ``s`` keeps its version,
    the run is abandoned and ``reader`` runs again on the new one."""
    store = _SlowToLoad()

    @hw.asset(io=store)
    def slow(x: Any) -> Any:
        return x

    def many(src: Any) -> Any:
        return [src] * 10_000  # large: a file of the default store, not kept in the log

    @hw.asset
    def reader(slow: Any, s: Any, o: Any) -> Any:
        return s

    by_source = changed == "a source observed"
    s_node = hw.source("s") if by_source else hw.asset("s")(many)
    sources = [hw.source(k) for k in ("x", "o", "src")]
    defs = hw.Definitions([*sources, s_node, slow, reader])
    new = [2] * 10_000
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        for key in ("x", "o", "src"):
            await engine.observe(key, value=1)
        if by_source:
            await engine.observe("s", value=[1] * 10_000)
        await engine.tick()
        store.loading.clear()
        store.release.clear()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                try:
                    await engine.observe("o", value=2)
                    tg.start_soon(engine.tick)  # reader runs, held loading `slow`
                    await anyio.to_thread.run_sync(store.loading.wait, 10)
                    if by_source:
                        await engine.observe("s", value=new)
                    else:
                        stored = anyio.Event()

                        def on_step(node: tuple[str, str | None], outcome: str) -> None:
                            if node == ("s", None) and outcome == "materialized":
                                stored.set()

                        await engine.observe("src", value=2)
                        tg.start_soon(functools.partial(engine.tick, on_step=on_step))
                        await stored.wait()  # the new value is on disk and in the log
                finally:
                    store.release.set()
        await engine.tick()
        lost = await anyio.to_thread.run_sync(
            lambda: EventLogReader(tmp_path).events(kind="value_lost")
        )
        assert lost == []
        assert engine.state.version(("s", None)) is not None
        assert engine.evaluator().status("reader", None).state == "fresh"
        assert await anyio.to_thread.run_sync(engine.runner.load, "reader", None) == new


@pytest.mark.asyncio
async def test_a_source_value_replaced_before_its_observation_is_recorded_is_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, but the reader meets the new value of ``s`` while its observation is still
    being stored: the file holds the new version, the log still the old one, which is the
    version the run was given. Only ``Engine.storing`` tells that apart from a value that
    disappeared: no ``value_lost``, the run is abandoned, and runs again on the new one."""
    slow_store = _SlowToLoad()

    @hw.asset(io=slow_store)
    def slow(x: Any) -> Any:
        return x

    @hw.asset
    def reader(slow: Any, s: Any) -> Any:
        return s

    defs = hw.Definitions([hw.source("x"), hw.source("s"), slow, reader])
    new = [2] * 10_000
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        await engine.observe("x", value=1)
        await engine.observe("s", value=[1] * 10_000)  # large: a file, not kept in the log
        await engine.tick()
        stored, recorded = threading.Event(), threading.Event()
        store_file = engine.store.store

        def store_then_wait(key: str, *args: Any) -> None:
            store_file(key, *args)  # the file holds the new version from here
            if key == "s":
                stored.set()
                recorded.wait(10)  # the observation is not in the log until the test says

        monkeypatch.setattr(engine.store, "store", store_then_wait)
        slow_store.loading.clear()
        slow_store.release.clear()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                try:
                    await engine.observe("x", value=2)
                    decided = anyio.Event()

                    def on_step(node: tuple[str, str | None], outcome: str) -> None:
                        if node == ("reader", None):
                            decided.set()

                    # reader runs, held loading `slow`
                    tg.start_soon(functools.partial(engine.tick, on_step=on_step))
                    await anyio.to_thread.run_sync(slow_store.loading.wait, 10)
                    tg.start_soon(functools.partial(engine.observe, "s", value=new))
                    await anyio.to_thread.run_sync(stored.wait, 10)
                    assert ("s", None) in engine.storing
                    slow_store.release.set()  # reader loads `s`: it finds the new file
                    await decided.wait()
                    abandoned = await anyio.to_thread.run_sync(
                        lambda: EventLogReader(tmp_path).events(kind="run_abandoned")
                    )
                    # decided again at once, it may read the unrecorded file again (a loaded
                    # machine): each time abandoned for the change, never failed or lost
                    assert abandoned and {e.asset for e in abandoned} == {"reader"}, abandoned
                    assert all(
                        "changed while it was read" in e.payload["reason"] for e in abandoned
                    )
                finally:
                    slow_store.release.set()
                    recorded.set()
        assert engine.storing == {}
        await engine.tick()
        lost = await anyio.to_thread.run_sync(
            lambda: EventLogReader(tmp_path).events(kind="value_lost")
        )
        assert lost == []
        assert engine.evaluator().status("reader", None).state == "fresh"
        assert await anyio.to_thread.run_sync(engine.runner.load, "reader", None) == new


@pytest.mark.asyncio
async def test_a_reader_of_all_partitions_waits_for_one_being_materialized_for_the_first_time(
    tmp_path: Path,
) -> None:
    """``x[q]`` runs for the first time (not present yet) when ``o`` changes and another
    tick finds ``roll`` stale: ``roll`` must wait for it, and run once, on ``p`` and ``q``."""
    hold = threading.Event()
    started = anyio.Event()
    read: list[Any] = []

    @hw.asset(partitions=hw.StaticPartitions(["p", "q"]))
    def x(s: Any, context: hw.Context) -> Any:
        if context.partition == "q":
            loop.call_soon_threadsafe(started.set)
            hold.wait(timeout=10)
        return s

    @hw.asset
    def roll(x: Any, o: Any) -> Any:
        read.append((sorted(x), o))
        return o

    parts = hw.StaticPartitions(["p", "q"])
    defs = hw.Definitions([hw.source("s", partitions=parts), hw.source("o"), x, roll])
    loop = asyncio.get_running_loop()
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        await engine.observe("s", partition="p", value=1)
        await engine.observe("o", value=1)
        await engine.tick()
        assert read == [(["p"], 1)]
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                try:
                    await engine.observe("s", partition="q", value=1)
                    tg.start_soon(engine.tick)
                    await started.wait()
                    await engine.observe("o", value=2)
                    tg.start_soon(engine.tick)
                    await anyio.wait_all_tasks_blocked()
                    assert read == [(["p"], 1)]
                finally:
                    hold.set()
        assert read == [(["p"], 1), (["p", "q"], 2)]


@pytest.mark.asyncio
@pytest.mark.parametrize("only_requested", [False, True])
async def test_a_requested_run_whose_input_was_replaced_while_it_read_runs_again(
    tmp_path: Path, only_requested: bool
) -> None:
    """A manual asset runs only when asked, and it was: when its run is abandoned because an
    input was replaced while it loaded (``s`` observed meanwhile), the request stands, and it
    runs again on the new version, in the same request."""
    store = _SlowToLoad()

    @hw.asset(io=store)
    def slow(x: Any) -> Any:
        return x

    @hw.asset(policy=hw.manual())
    def reader(slow: Any, s: Any) -> Any:
        return s

    defs = hw.Definitions([hw.source("x"), hw.source("s"), slow, reader])
    big = [2] * 10_000  # a file of the default store, not kept in the log
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        await engine.observe("x", value=1)
        await engine.observe("s", value=[1] * 10_000)
        await engine.tick()
        store.loading.clear()
        store.release.clear()
        results = []
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def ask() -> None:
                    nodes = [("reader", None)]
                    results.append(await engine.materialize(nodes, only_requested=only_requested))

                try:
                    tg.start_soon(ask)
                    await anyio.to_thread.run_sync(store.loading.wait, 10)
                    await engine.observe("s", value=big)
                finally:
                    store.release.set()
        assert results[0].materialized == [("reader", None)]
        assert await anyio.to_thread.run_sync(engine.runner.load, "reader", None) == big


@pytest.mark.asyncio
async def test_a_reader_waits_once_for_its_claimed_inputs_not_for_a_stream_of_them(
    tmp_path: Path,
) -> None:
    """``roll`` reads all partitions of ``x``. It waits for ``x[p]``, which a tick is
    running when ``roll`` is decided; ``x[q]``, claimed by another tick while it waits, is a
    later change: ``roll`` runs once ``x[p]`` is done, without waiting for ``x[q]`` (under a
    stream of such changes it would never run), and again after ``x[q]``."""
    gates = {"p": threading.Event(), "q": threading.Event()}
    started = {"p": anyio.Event(), "q": anyio.Event()}
    read: list[Any] = []

    @hw.asset(partitions=hw.StaticPartitions(["p", "q"]))
    def x(s: Any, context: hw.Context) -> Any:
        loop.call_soon_threadsafe(started[context.partition].set)
        gates[context.partition].wait(timeout=10)
        return s

    rolled = anyio.Event()

    @hw.asset
    def roll(x: Any, o: Any) -> Any:
        read.append((dict(x), o))
        loop.call_soon_threadsafe(rolled.set)
        return o

    parts = hw.StaticPartitions(["p", "q"])
    defs = hw.Definitions([hw.source("s", partitions=parts), hw.source("o"), x, roll])
    loop = asyncio.get_running_loop()
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        for key in ("p", "q"):
            gates[key].set()
            await engine.observe("s", partition=key, value=1)
        await engine.observe("o", value=1)
        await engine.tick()
        assert read == [({"p": 1, "q": 1}, 1)]
        for key in ("p", "q"):
            gates[key].clear()
            started[key] = anyio.Event()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                try:
                    await engine.observe("s", partition="p", value=2)
                    tg.start_soon(engine.tick)
                    await started["p"].wait()
                    await engine.observe("o", value=2)
                    tg.start_soon(engine.tick)  # roll: waits for x[p]
                    await anyio.wait_all_tasks_blocked()
                    await engine.observe("s", partition="q", value=2)
                    tg.start_soon(engine.tick)
                    await started["q"].wait()  # x[q] claimed, running
                    rolled = anyio.Event()
                    gates["p"].set()
                    await rolled.wait()  # without waiting for x[q]
                    assert read[1:] == [({"p": 2, "q": 1}, 2)]
                finally:
                    gates["p"].set()
                    gates["q"].set()
        assert read[1:] == [({"p": 2, "q": 1}, 2), ({"p": 2, "q": 2}, 2)]


@pytest.mark.asyncio
async def test_writes_of_one_partition_in_flight_together_both_count(tmp_path: Path) -> None:
    """A large transaction goes to the writer's thread; a write of the same partition made
    meanwhile (a deadline's ``freshness_violated``, a correction of its ``pending_since``,
    while a new version commits) must be reduced from the record the first one leads to, not
    from the one before it: else the later one, applied last, puts the old version back (in
    memory and in ``current_state``)."""
    from headwater._events import EventKind
    from headwater.eventlog._writer import ON_LOOP_ROWS

    keys = [f"p{i}" for i in range(ON_LOOP_ROWS + 1)]
    defs = hw.Definitions(
        [hw.source("many", partitions=hw.StaticPartitions(keys)), hw.source("one")]
    )
    node = ("one", None)
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        big = [engine.event(EventKind.OBSERVATION, ("many", p), data_version="v1") for p in keys]
        big.append(engine.event(EventKind.OBSERVATION, node, data_version="new"))
        late = engine.event(EventKind.FRESHNESS_VIOLATED, node, payload={"reason": "test"})
        behind = datetime(2026, 1, 1, tzinfo=UTC)
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.append, big)  # goes to the writer's thread: it yields
            await anyio.lowlevel.checkpoint()
            tg.start_soon(engine.append, [late])
            tg.start_soon(functools.partial(engine.put, {}, pending_since={node: behind}))
        expected = ("new", True, behind)
        record = engine.state.record(node)
        assert record is not None
        assert (record.version, record.late, record.pending_since) == expected
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        record = engine.state.record(node)
        assert record is not None
        assert (record.version, record.late, record.pending_since) == expected


async def _commit_in_thread(engine: Engine, events: list[Any]) -> None:
    """Append ``events`` with more than ON_LOOP_ROWS others: the commit goes to the writer's
    thread, so the append yields with its records in flight (as on a slow disk)."""
    from headwater._events import EventKind
    from headwater.eventlog._writer import ON_LOOP_ROWS

    filler = [
        engine.event(EventKind.OBSERVATION, ("many", f"p{i}"), data_version="v")
        for i in range(ON_LOOP_ROWS + 1)
    ]
    await engine.append([*filler, *events])


_MANY = hw.source("many", partitions=hw.StaticPartitions([f"p{i}" for i in range(65)]))


@pytest.mark.asyncio
async def test_a_lateness_decided_while_a_new_version_commits_is_decided_again(
    tmp_path: Path,
) -> None:
    """``one`` is past its max_age; its new version is committing when the deadline is
    checked. Decided on the old record, ``freshness_violated`` would land after the new
    version and leave a fresh partition late for good (no recovery would follow)."""
    from headwater._clock import VirtualClock
    from headwater._events import EventKind

    one = hw.source("one", freshness=hw.Freshness(max_age="1m"))
    defs = hw.Definitions([_MANY, one])
    clock = VirtualClock(datetime(2026, 1, 5, tzinfo=UTC))
    node = ("one", None)
    async with Engine.open(defs, tmp_path, clock) as engine:
        await engine.observe("one", "v1")
        clock.advance(timedelta(minutes=2))  # late by max_age; nothing has checked yet
        new = engine.event(EventKind.OBSERVATION, node, data_version="v2")
        async with anyio.create_task_group() as tg:
            tg.start_soon(_commit_in_thread, engine, [new])
            await anyio.lowlevel.checkpoint()
            tg.start_soon(engine.clockwork.check_freshness, [node])
        record = engine.state.record(node)
        assert record is not None and (record.version, record.late) == ("v2", False)
        assert engine.freshness("one").late is False  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_a_correction_decided_while_an_input_commits_keeps_the_lag(
    tmp_path: Path,
) -> None:
    """``a`` (max_lag) is up to date, with a pending_since left over; its deadline is
    checked while ``u``'s new version, an input, is committing. Judged on the old ``u``,
    ``a`` looked up to date and its pending_since was cleared: stale once ``u`` landed, it
    was never late. (It is behind since ``u``'s change: the leftover, a change undone that
    it reflects, is not what it lags behind.)"""
    from headwater._clock import VirtualClock
    from headwater._events import EventKind

    @hw.asset
    def u(q: int) -> int:
        return q

    @hw.asset(policy=hw.manual(), freshness=hw.Freshness(max_lag="1m"))
    def a(u: int) -> int:
        return u

    defs = hw.Definitions([_MANY, hw.source("q"), u, a])
    clock = VirtualClock(datetime(2026, 1, 5, tzinfo=UTC))
    node = ("a", None)
    async with Engine.open(defs, tmp_path, clock) as engine:
        await engine.observe("q", value=1)
        await engine.tick()
        await engine.materialize([node])
        behind = clock.now()
        await engine.put({}, pending_since={node: behind})  # left over from a change undone
        clock.advance(timedelta(seconds=1))
        u_new = engine.event(
            EventKind.MATERIALIZATION,
            ("u", None),
            run_id="r",
            data_version="u2",
            payload={"code_version": defs.code_version("u"), "inputs": []},
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(_commit_in_thread, engine, [u_new])
            await anyio.lowlevel.checkpoint()
            tg.start_soon(engine.clockwork.check_freshness, [node])
        assert engine.status("a").state == "stale"  # u changed
        record = engine.state.record(node)
        assert record is not None and record.pending_since == u_new.timestamp
        assert u_new.timestamp == behind + timedelta(seconds=1)
        clock.advance(timedelta(hours=1))
        fs = engine.freshness("a")
        assert fs is not None and fs.late


@pytest.mark.asyncio
async def test_a_listing_older_than_an_observation_does_not_undo_it(tmp_path: Path) -> None:
    """A rescan lists a source while the watcher observes a rewritten file and a new one:
    the listing (read before them) must not put the old version back, nor delete the new
    file's partition."""
    inbox = hw.DynamicPartitions("inbox")
    defs = hw.Definitions([hw.source("files", partitions=inbox)])
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        await engine.observe("files", "v1", partition="p")
        since = engine.observation_mark()  # the listing begins, and reads p at v1
        await engine.observe("files", "v2", partition="p")  # the watcher, meanwhile
        await engine.observe("files", "q1", partition="q")
        assert await engine.reconcile("files", {"p": "v1"}, since) == []
        assert engine.state.version(("files", "p")) == "v2"
        assert engine.state.version(("files", "q")) == "q1"
        later = engine.observation_mark()
        assert len(await engine.reconcile("files", {"p": "v3"}, later)) == 2  # q deleted, p v3
        assert engine.state.version(("files", "q")) is None


class _Written:
    """An engine observer: an event set once the log holds an event of ``kind``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.seen = anyio.Event()

    def written(self, events: Any) -> None:
        if any(e.kind == self.kind for e in events):
            self.seen.set()

    def planned(self, seconds: float) -> None:
        return None


@pytest.mark.asyncio
async def test_an_outage_that_ends_while_a_run_goes_on_does_not_abandon_it(
    tmp_path: Path,
) -> None:
    """Recovery abandons the runs the outage cut off, not one still running: that one records
    its own end (the log must not say abandoned, then materialized, for one run)."""
    from headwater._storage import StorageFailure

    gate, started = threading.Event(), threading.Event()

    @hw.asset
    def slow(s: int) -> int:
        started.set()
        gate.wait(20)
        return s

    defs = hw.Definitions([hw.source("s"), slow])
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        begun = _Written("run_started")
        engine.observers.append(begun)
        await engine.observe("s", value=1)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(engine.tick)
                await begun.seen.wait()  # its start committed on its own, while it runs
                engine.storage_failed(StorageFailure(tmp_path / "events.db", "test: disk full"))
                await engine.probe_storage()
                await engine.recover()
                gate.set()
        assert engine.state.version(("slow", None)) is not None
    reader = EventLogReader(tmp_path)
    events = await anyio.to_thread.run_sync(functools.partial(reader.events, asset="slow"))
    assert [e.kind for e in events] == ["run_started", "materialization"]


@pytest.mark.asyncio
async def test_an_event_decided_on_a_record_that_changed_meanwhile_is_not_written(
    tmp_path: Path,
) -> None:
    """A value found gone by a listing that began before a run stored a new one (the
    start-up check, a reader's): once that run's materialization lands first, the
    ``value_lost`` decided on the record before it is dropped, not applied to the new one."""
    from headwater._events import EventKind

    one = ("one", None)
    defs = hw.Definitions([_MANY, hw.source("one")])
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        await engine.observe("one", "v1")
        before = engine.state.record(one)
        lost = engine.value_lost_event(one, "found gone at start")
        new = engine.event(EventKind.OBSERVATION, one, data_version="v2")
        async with anyio.create_task_group() as tg:
            tg.start_soon(_commit_in_thread, engine, [new])
            await anyio.lowlevel.checkpoint()
            written = await engine.append([lost], decided_on={one: before})
        assert written == []
        assert engine.state.version(one) == "v2"
        assert await engine.append([lost], decided_on={one: engine.state.record(one)}) == [lost]
        assert engine.state.version(one) is None


@pytest.mark.asyncio
async def test_a_lost_value_is_recorded_though_its_lateness_changed_meanwhile(
    tmp_path: Path,
) -> None:
    """The start-up check lists the value folders; meanwhile a deadline marks the partition
    late. Only a new value makes "lost" moot: a change of its lateness must not drop the
    ``value_lost`` (nothing would decide it again, and the log would claim a value that is
    gone)."""
    from headwater._clock import VirtualClock

    @hw.asset(freshness=hw.Freshness(max_age="1m"))
    def a(s: int) -> list[int]:
        return list(range(20_000))  # a file of its own, not a small value in the log

    defs = hw.Definitions([hw.source("s"), a])
    clock = VirtualClock(datetime(2026, 1, 5, tzinfo=UTC))
    node = ("a", None)
    async with Engine.open(defs, tmp_path, clock) as engine:
        await engine.observe("s", value=1)
        await engine.tick()
        files = await anyio.to_thread.run_sync(lambda: list((tmp_path / "values" / "a").rglob("*")))
        for path in files:
            if path.is_file():
                await anyio.to_thread.run_sync(path.unlink)  # the value is deleted by hand
        clock.advance(timedelta(minutes=2))
        found: list[int] = []

        async def forget() -> None:
            found.append(await engine.forget_lost_values())

        async with anyio.create_task_group() as tg:
            tg.start_soon(forget)
            await anyio.lowlevel.checkpoint()  # it has taken the records and lists the folders
            await engine.clockwork.check_freshness([node])  # the deadline, meanwhile
            record = engine.state.record(node)
            assert record is not None and record.late
        assert found == [1]
        assert engine.state.version(node) is None


@pytest.mark.asyncio
async def test_of_two_listings_the_later_begun_stands(tmp_path: Path) -> None:
    """Two rescans of one source overlap (the periodic one, one after a recovery): the one
    begun first may reconcile first; the later one, which saw a deletion, must still count."""
    inbox = hw.DynamicPartitions("inbox")
    defs = hw.Definitions([hw.source("files", partitions=inbox)])
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        await engine.observe("files", "v1", partition="p")
        await engine.observe("files", "q1", partition="q")
        first = engine.observation_mark()
        second = engine.observation_mark()  # begun after q was deleted
        assert await engine.reconcile("files", {"p": "v1", "q": "q1"}, first) == []
        assert len(await engine.reconcile("files", {"p": "v1"}, second)) == 1
        assert engine.state.version(("files", "q")) is None
        assert await engine.reconcile("files", {"p": "v1", "q": "q1"}, first) == []  # older
        assert engine.state.version(("files", "q")) is None


@pytest.mark.asyncio
async def test_a_partition_due_twice_in_one_check_is_late_once(tmp_path: Path) -> None:
    """A window timer and the partition's own deadline, both due when the loop comes late:
    one lateness, one ``freshness_violated``."""
    from headwater._clock import VirtualClock

    defs = hw.Definitions([hw.source("one", freshness=hw.Freshness(max_age="1m"))])
    clock = VirtualClock(datetime(2026, 1, 5, tzinfo=UTC))
    node = ("one", None)
    async with Engine.open(defs, tmp_path, clock) as engine:
        await engine.observe("one", "v1")
        clock.advance(timedelta(minutes=2))
        await engine.clockwork.check_freshness([node, node])
    reader = EventLogReader(tmp_path)
    events = await anyio.to_thread.run_sync(functools.partial(reader.events, asset="one"))
    assert [e.kind for e in events].count("freshness_violated") == 1


@pytest.mark.asyncio
async def test_closing_a_violation_no_sla_covers_waits_out_a_write_of_it(
    tmp_path: Path,
) -> None:
    """The SLA was removed; its open violation is closed while a new version of the partition
    commits. The close rests on the violation being open, not on the version: it is
    written, not dropped (nothing else would close it)."""
    from headwater._clock import VirtualClock
    from headwater._events import EventKind

    sla = hw.Freshness(max_age="1m")
    clock = VirtualClock(datetime(2026, 1, 5, tzinfo=UTC))
    node = ("one", None)
    with_sla = hw.Definitions([_MANY, hw.source("one", freshness=sla)])
    async with Engine.open(with_sla, tmp_path, clock) as engine:
        await engine.observe("one", "v1")
        clock.advance(timedelta(minutes=2))
        await engine.clockwork.check_freshness([node])
        assert engine.state.record(node).late  # type: ignore[union-attr]
    without = hw.Definitions([_MANY, hw.source("one")])
    async with Engine.open(without, tmp_path, clock) as engine:
        new = engine.event(EventKind.OBSERVATION, node, data_version="v2")
        async with anyio.create_task_group() as tg:
            tg.start_soon(_commit_in_thread, engine, [new])
            await anyio.lowlevel.checkpoint()
            tg.start_soon(engine.clockwork.close_dropped_violations, [])
        record = engine.state.record(node)
        assert record is not None and (record.version, record.late) == ("v2", False)


@pytest.mark.asyncio
async def test_events_of_an_asset_the_definitions_dropped_are_written(tmp_path: Path) -> None:
    """A run of ``gone`` left open by a dead owner is abandoned at the next start, whose
    definitions no longer hold it: with an SLA elsewhere, the append looked ``gone`` up."""
    from headwater._events import EventKind

    sla = hw.Freshness(max_age="1h")
    defs = hw.Definitions([hw.source("s", freshness=sla)])
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        ended = engine.event(EventKind.RUN_ABANDONED, ("gone", None), run_id="r")
        assert await engine.append([ended]) == [ended]


@pytest.mark.asyncio
async def test_a_write_whose_caller_was_cancelled_is_still_taken_into_memory(
    tmp_path: Path,
) -> None:
    """Queued behind a commit in the writer's thread, an append is cancelled: its batch is
    committed all the same, so the state must hold it (else an observation of the old
    version again looks unchanged and writes nothing)."""
    from headwater._events import EventKind

    node = ("one", None)
    defs = hw.Definitions([_MANY, hw.source("one")])
    scopes: list[anyio.CancelScope] = []

    async def append_cancelled(engine: Engine, event: Any) -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await engine.append([event])

    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        await engine.observe("one", "v0")
        new = engine.event(EventKind.OBSERVATION, node, data_version="v1")
        async with anyio.create_task_group() as tg:
            tg.start_soon(_commit_in_thread, engine, [])  # the leader, in the writer's thread
            await anyio.lowlevel.checkpoint()
            tg.start_soon(append_cancelled, engine, new)
            await anyio.lowlevel.checkpoint()  # queued behind the leader
            scopes[0].cancel()
        assert engine.state.version(node) == "v1"
    reader = EventLogReader(tmp_path)
    events = await anyio.to_thread.run_sync(functools.partial(reader.events, asset="one"))
    assert [e.data_version for e in events] == ["v0", "v1"]  # committed


@pytest.mark.asyncio
async def test_a_start_refused_alone_by_an_outage_is_written_with_the_end_after_it(
    tmp_path: Path,
) -> None:
    """A run's start, committed alone once the run has gone on for a while, is refused by an
    outage that ends before the run does: its end then writes start and end together, not
    the old failure again (the finished run would be thrown away and run again)."""
    from headwater._events import EventKind
    from headwater._storage import StorageFailure
    from headwater.execution._run_start import RunStart

    node = ("one", None)
    defs = hw.Definitions([hw.source("one")])
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        began = engine.event(EventKind.RUN_STARTED, node, run_id="r", payload={})
        start = RunStart(engine, began)
        engine.storage_failed(StorageFailure(tmp_path / "events.db", "test: disk full"))
        start._commit_alone()  # what its timer does, while the disk refuses writes
        with pytest.raises(StorageFailure):
            await start._alone  # type: ignore[misc]
        await engine.probe_storage()
        await engine.recover()
        ended = engine.event(EventKind.RUN_ABANDONED, node, run_id="r")
        await start.append_with([ended])
        start.close()
        assert engine.stranded == {}
    reader = EventLogReader(tmp_path)
    events = await anyio.to_thread.run_sync(functools.partial(reader.events, asset="one"))
    assert [(e.kind, e.run_id) for e in events] == [("run_started", "r"), ("run_abandoned", "r")]


@pytest.mark.asyncio
async def test_a_lateness_check_does_not_wait_out_a_stream_of_writes(tmp_path: Path) -> None:
    """Its reader's inputs keep being written (commits in the writer's thread, overlapping):
    an observation of the reader's other input, whose lateness check waits for the writes
    under way, returns once those have landed, not once writing stops (it never would, and
    every sensor waits behind an observation)."""
    from headwater._events import EventKind

    parts = hw.StaticPartitions([f"m{i}" for i in range(2)])

    @hw.asset(partitions=parts, code_version="1")
    def ups() -> int:
        return 1

    @hw.asset(policy=hw.manual(), freshness=hw.Freshness(max_lag="1h"))
    def agg(src: int, ups: dict[str, int]) -> int:
        return src

    defs = hw.Definitions([_MANY, ups, hw.source("src"), agg])
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        await engine.append([
            engine.event(EventKind.MATERIALIZATION, ("ups", f"m{i}"), run_id=f"r{i}",
                         data_version="v", payload={"code_version": "1", "inputs": []})
            for i in range(2)
        ])  # fmt: skip
        writing = True

        async def writer(index: int) -> None:
            round_ = 0
            while writing:
                round_ += 1
                run = f"r{index}-{round_}"
                started = engine.event(EventKind.RUN_STARTED, ("ups", f"m{index}"), run_id=run)
                await _commit_in_thread(engine, [started])

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer, 0)
            tg.start_soon(writer, 1)
            await anyio.lowlevel.checkpoint()
            try:
                with anyio.fail_after(10):
                    await engine.observe("src", "s1")
            finally:
                writing = False
        assert engine.state.version(("src", None)) == "s1"


@pytest.mark.asyncio
async def test_two_lateness_checks_overlapping_a_commit_record_it_once(tmp_path: Path) -> None:
    """The first check's ``freshness_violated`` waits behind a commit in the writer's
    thread; a second check of the partition meanwhile must see it, not decide again on the
    record before it (two violations for one breach)."""
    from headwater._clock import VirtualClock

    defs = hw.Definitions([_MANY, hw.source("one", freshness=hw.Freshness(max_age="1m"))])
    clock = VirtualClock(datetime(2026, 1, 5, tzinfo=UTC))
    node = ("one", None)
    async with Engine.open(defs, tmp_path, clock) as engine:
        await engine.observe("one", "v1")
        clock.advance(timedelta(minutes=2))
        async with anyio.create_task_group() as tg:
            tg.start_soon(_commit_in_thread, engine, [])  # the writer's thread is busy
            await anyio.lowlevel.checkpoint()
            tg.start_soon(engine.clockwork.check_freshness, [node])
            await anyio.lowlevel.checkpoint()  # its violation waits behind that commit
            tg.start_soon(engine.clockwork.check_freshness, [node])
    reader = EventLogReader(tmp_path)
    events = await anyio.to_thread.run_sync(functools.partial(reader.events, asset="one"))
    assert [e.kind for e in events].count("freshness_violated") == 1


@pytest.mark.asyncio
async def test_a_slot_is_free_for_the_next_function_while_an_end_is_recorded(
    tmp_path: Path,
) -> None:
    """One slot, two independent assets: the second function starts once the first has
    returned, while the first run's end is still waiting to be committed (here: for the
    writer, held by the test). Both ends are then recorded."""
    started: list[str] = []
    both = anyio.Event()

    def note(name: str) -> int:
        started.append(name)
        if len(started) == 2:
            loop.call_soon_threadsafe(both.set)
        return 1

    @hw.asset
    def first(src: Any) -> int:
        return note("first")

    @hw.asset
    def second(src: Any) -> int:
        return note("second")

    defs = hw.Definitions([hw.source("src"), first, second], max_concurrency=1)
    loop = asyncio.get_running_loop()
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        await engine.observe("src", value=1)
        with anyio.fail_after(20):
            # the writer is held: no commit until both functions have run
            async with anyio.create_task_group() as tg, engine.log._txn:
                tg.start_soon(engine.tick)
                await both.wait()
                assert engine.state.version(("first", None)) is None
                assert engine.state.version(("second", None)) is None
        assert sorted(started) == ["first", "second"]
        reader = EventLogReader(tmp_path)
        ends = await anyio.to_thread.run_sync(
            functools.partial(reader.events, kind="materialization")
        )
        assert sorted(e.asset or "" for e in ends) == ["first", "second"]


@pytest.mark.asyncio
async def test_a_run_that_goes_alone_waits_for_every_end_to_be_recorded() -> None:
    """A run the daemon died during (threads) starts only once no other run is open: one
    whose function has returned but whose end is not recorded yet still counts (a crash now
    would find it open and blame it too). Its slot is free for others meanwhile."""
    from headwater.execution._cycle import _Gate

    gate = _Gate(2)
    bystander = await gate.enter(alone=False)
    bystander.function_done()
    entered = anyio.Event()

    async def go_alone() -> None:
        slot = await gate.enter(alone=True)
        entered.set()
        slot.leave()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(go_alone)
            await anyio.wait_all_tasks_blocked()
            assert not entered.is_set()
            other = await gate.enter(alone=False)  # the bystander's slot is free
            other.leave()
            await anyio.wait_all_tasks_blocked()
            assert not entered.is_set()
            bystander.leave()
            await entered.wait()
