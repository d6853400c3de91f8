"""The thread hand-off behind the threads executor: calls made in one turn of the event loop go
to one thread together, and none waits long behind another (real threads, no mocks)."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from headwater.execution.executors._handoff import STEAL_AFTER_S, Handoff

_who = contextvars.ContextVar("who", default="nobody")


@asynccontextmanager
async def _handoff(steal_after: float = STEAL_AFTER_S) -> AsyncIterator[Handoff]:
    handoff = Handoff("test hand-off", steal_after=steal_after)
    try:
        yield handoff
    finally:
        handoff.close()


async def _outcome(handoff: Handoff, fn: Any, outcomes: dict[str, object], name: str) -> None:
    """The call's result, or the exception it raised, as ``outcomes[name]``."""
    try:
        outcomes[name] = await handoff.run(fn)
    except Exception as exc:
        outcomes[name] = exc


@pytest.mark.asyncio
async def test_calls_made_together_share_one_thread_and_keep_their_own_context() -> None:
    results: dict[int, tuple[int, str]] = {}

    async def call(handoff: Handoff, n: int) -> None:
        _who.set(f"caller {n}")
        results[n] = await handoff.run(lambda: (threading.get_ident(), _who.get()))

    # Never stolen: a thread that starts late on a busy machine must not make it look as if
    # the batch had been split (stealing is the next test's).
    async with _handoff(steal_after=60) as handoff:
        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(call, handoff, n)
        threads = {thread for thread, _ in results.values()}
        assert len(threads) == 1, "four calls of one turn of the loop: one thread"
        assert threading.get_ident() not in threads
        assert {n: who for n, (_, who) in results.items()} == {n: f"caller {n}" for n in range(4)}
        # Called one at a time, each call reuses the idle thread: no new one starts.
        again = {await handoff.run(threading.get_ident) for _ in range(3)}
        assert again == threads


@pytest.mark.asyncio
async def test_a_long_call_holds_back_neither_the_calls_after_it_nor_the_results_before_it() -> (
    None
):
    """In one batch: a quick call, one that blocks until released, another quick one. The
    quick ones' results arrive while the long one still runs (after about ``STEAL_AFTER_S``)."""
    release = threading.Event()
    arrived: list[str] = []

    def long() -> str:
        assert release.wait(timeout=30)
        return "long"

    quick_ones = anyio.Event()

    async def call(handoff: Handoff, fn: Any) -> None:
        arrived.append(await handoff.run(fn))
        if len(arrived) == 2:
            quick_ones.set()

    async with _handoff() as handoff:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, handoff, lambda: "first")
            tg.start_soon(call, handoff, long)
            tg.start_soon(call, handoff, lambda: "last")
            with anyio.fail_after(100 * STEAL_AFTER_S + 5):
                await quick_ones.wait()
            assert sorted(arrived) == ["first", "last"], "the long call is still running"
            release.set()
        assert arrived[-1] == "long"


@pytest.mark.asyncio
async def test_each_caller_gets_its_own_outcome() -> None:
    """An exception reaches only its caller; a cancelled caller's call still runs (its result
    is dropped) and leaves the others of its batch alone."""
    ran = threading.Event()

    def fails() -> None:
        raise ValueError("from the thread")

    def abandoned() -> str:
        ran.set()
        return "dropped"

    outcomes: dict[str, object] = {}

    async def cancelled(handoff: Handoff) -> None:
        with anyio.CancelScope() as scope:
            scope.cancel()
            outcomes["cancelled"] = await handoff.run(abandoned)

    async with _handoff() as handoff:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_outcome, handoff, fails, outcomes, "fails")
                tg.start_soon(cancelled, handoff)
                tg.start_soon(_outcome, handoff, lambda: 2, outcomes, "works")
        assert outcomes["works"] == 2
        assert "cancelled" not in outcomes
        assert isinstance(outcomes["fails"], ValueError)
        assert str(outcomes["fails"]) == "from the thread"
        assert await anyio.to_thread.run_sync(ran.wait, 5), "the abandoned call never ran"


@pytest.mark.asyncio
async def test_a_closed_hand_off_refuses_calls() -> None:
    handoff = Handoff("test hand-off")
    assert await handoff.run(lambda: 1) == 1
    handoff.close()
    with pytest.raises(RuntimeError, match="closed"):
        await handoff.run(lambda: 2)


@pytest.mark.asyncio
async def test_a_call_that_raises_stop_iteration_fails_alone() -> None:
    """A future refuses StopIteration: its caller gets a RuntimeError caused by it, and the
    other calls of its batch their results."""

    def stops() -> None:
        raise StopIteration("done early")

    outcomes: dict[str, object] = {}
    async with _handoff() as handoff:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_outcome, handoff, stops, outcomes, "stops")
                tg.start_soon(_outcome, handoff, lambda: 2, outcomes, "works")
    assert outcomes["works"] == 2
    error = outcomes["stops"]
    assert isinstance(error, RuntimeError)
    assert isinstance(error.__cause__, StopIteration)
