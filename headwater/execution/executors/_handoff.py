"""Threads that run calls for the event loop, at the cost of one wake-up each way per batch.

``anyio.to_thread.run_sync`` costs ~150 µs a call on a small VM against ~100 µs for a queue
and a future (its limiter, cancel scope and worker bookkeeping are the difference): a sixth of
a trivial run.

The calls made in one turn of the event loop (the runs that slots freed at once) go to one
thread as a batch, and their results come back together: one wake-up of a thread and one of
the loop for all of them, and no contention for the GIL between threads that would each run
one. 500 independent trivial runs (benchmarks/scale.py, threads): 0.62 -> 0.57 ms a run with
two slots, 0.53 -> 0.47 with eight.

A call is never held up for long behind another, though: ``STEAL_AFTER_S`` after a batch was
sent, the calls its thread has not started go to threads of their own, and the results of
those it finished are delivered (a long call would otherwise hold them). With no idle thread
for a batch, a new one starts; a thread idle for ``IDLE_S`` ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Handoff"]

T = TypeVar("T")

IDLE_S = 10.0
STEAL_AFTER_S = 0.001
"""How long a call may wait behind others of its batch in one thread (a few trivial runs)."""

_Call = tuple[Callable[..., Any], "asyncio.Future[Any]", Callable[[], Any]]
"""The context's ``run``, the caller's future, and the function."""
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class _Batch:
    """Calls for one thread, taken one at a time under the hand-off's lock (the loop may
    steal those not yet started)."""

    __slots__ = ("calls", "done", "loop", "next", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, calls: list[_Call]) -> None:
        self.loop = loop
        self.calls = calls
        self.next = 0
        """The first call no thread has started."""
        self.done: list[_Outcome] = []
        """Outcomes not yet handed to the loop."""
        self.timer: asyncio.TimerHandle | None = None


class Handoff:
    def __init__(self, name: str, *, steal_after: float = STEAL_AFTER_S) -> None:
        self._name = name
        self._steal_after = steal_after
        self._batches: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        """Threads waiting for a batch that no sender has counted on yet."""
        self._threads: set[threading.Thread] = set()
        self._closed = False
        self._gathering: _Batch | None = None
        """The calls of this turn of the loop, sent as one batch at its end."""

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a thread, in a copy of the caller's context. Cancelling the caller
        abandons the call: the thread finishes it, and its result is dropped."""
        if self._closed:
            raise RuntimeError("the thread hand-off is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        call = (contextvars.copy_context().run, future, fn)
        if self._gathering is None:
            self._gathering = _Batch(loop, [call])
            loop.call_soon(self._send_gathered)
        elif self._gathering.loop is loop:
            self._gathering.calls.append(call)
        else:  # another event loop's turn is gathering (never in the daemon): alone
            self._send(_Batch(loop, [call]))
        return await future

    def _send_gathered(self) -> None:
        batch, self._gathering = self._gathering, None
        if batch is not None:
            self._send(batch)

    def _send(self, batch: _Batch) -> None:
        with self._lock:
            closed = self._closed
            if not closed:
                if self._idle:
                    self._idle -= 1
                else:
                    thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                    self._threads.add(thread)
                    thread.start()
        if closed:  # closed within this turn of the loop
            error = RuntimeError("the thread hand-off is closed")
            _settle([(future, None, error) for _, future, _ in batch.calls])
            return
        if len(batch.calls) > 1:
            batch.timer = batch.loop.call_later(self._steal_after, self._steal, batch)
        self._batches.put(batch)

    def _steal(self, batch: _Batch) -> None:
        """On the loop: what the batch's thread has finished, now; what it has not started,
        to threads of its own."""
        with self._lock:
            waiting = batch.calls[batch.next :]
            batch.next = len(batch.calls)
            done, batch.done = batch.done, []
        _settle(done)
        for call in waiting:
            self._send(_Batch(batch.loop, [call]))

    def _serve(self) -> None:
        try:
            while True:
                try:
                    batch = self._batches.get(timeout=IDLE_S)
                except queue.Empty:
                    with self._lock:
                        if self._idle:  # nobody counted on this thread: end it
                            self._idle -= 1
                            return
                    continue  # a sender counted on it: its batch is on the way
                if batch is None:
                    return
                closed = self._run(batch)
                del batch
                if closed:
                    return
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _run(self, batch: _Batch) -> bool:
        """Run the batch's calls that nobody stole; hand the outcomes to the loop. Returns
        whether the hand-off closed meanwhile (this thread then ends)."""
        lock = self._lock
        while True:
            with lock:
                if batch.next == len(batch.calls):
                    break
                run, future, fn = batch.calls[batch.next]
                batch.next += 1
            try:
                outcome: _Outcome = (future, run(fn), None)
            except BaseException as exc:  # handed to the caller
                outcome = (future, None, exc)
            with lock:
                batch.done.append(outcome)
            del run, future, fn, outcome
        with lock:  # idle before the callers hear: their next calls come here
            done, batch.done = batch.done, []
            closed = self._closed
            if not closed:
                self._idle += 1
        if done:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                batch.loop.call_soon_threadsafe(_settle, done, batch.timer)
        return closed

    def close(self) -> None:
        """End the idle threads; a busy one (left behind) ends when its call does."""
        with self._lock:
            self._closed = True
            for _ in range(self._idle):
                self._batches.put(None)
            self._idle = 0


def _settle(outcomes: list[_Outcome], timer: asyncio.TimerHandle | None = None) -> None:
    if timer is not None:
        timer.cancel()  # a stealer finds nothing to take once every outcome is in
    for future, result, error in outcomes:
        if future.cancelled():
            continue  # the caller gave up on it
        if error is not None:
            if isinstance(error, StopIteration):  # a future refuses it (as a coroutine does)
                refused, error = error, RuntimeError("the call raised StopIteration")
                error.__cause__ = refused
            future.set_exception(error)
        else:
            future.set_result(result)
