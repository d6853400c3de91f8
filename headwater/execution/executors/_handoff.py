"""Threads that run calls for the event loop, at the cost of one wake-up each way.

``anyio.to_thread.run_sync`` costs ~150 µs a call on a small VM against ~100 µs for a queue
and a future (its limiter, cancel scope and worker bookkeeping are the difference): a sixth of
a trivial run. A call is never queued behind a busy thread (one that timed out and was left
behind may run for ever): with no idle thread, a new one starts; a thread idle for
``IDLE_S`` ends.
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

_Call = tuple[
    Callable[..., Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]
]


class Handoff:
    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        """Threads waiting for a call that no caller has counted on yet."""
        self._threads: set[threading.Thread] = set()
        self._closed = False

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a thread, in a copy of the caller's context. Cancelling the caller
        abandons the call: the thread finishes it, and its result is dropped."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the thread hand-off is closed")
            if self._idle:
                self._idle -= 1
            else:
                thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._threads.add(thread)
                thread.start()
        self._calls.put((contextvars.copy_context().run, loop, future, fn))
        return await future

    def _serve(self) -> None:
        try:
            while True:
                try:
                    call = self._calls.get(timeout=IDLE_S)
                except queue.Empty:
                    with self._lock:
                        if self._idle:  # nobody counted on this thread: end it
                            self._idle -= 1
                            return
                    continue  # a caller counted on it: its call is on the way
                if call is None:
                    return
                run, loop, future, fn = call
                try:
                    outcome: tuple[Any, BaseException | None] = (run(fn), None)
                except BaseException as exc:  # handed to the caller
                    outcome = (None, exc)
                with self._lock:  # idle before the caller hears: its next call comes here
                    if self._closed:
                        closed = True
                    else:
                        closed = False
                        self._idle += 1
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                    loop.call_soon_threadsafe(_settle, future, *outcome)
                del call, run, fn, future, outcome
                if closed:
                    return
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def close(self) -> None:
        """End the idle threads; a busy one (left behind) ends when its call does."""
        with self._lock:
            self._closed = True
            for _ in range(self._idle):
                self._calls.put(None)
            self._idle = 0


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return  # the caller gave up on it
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
