"""Calls that arrive together are served together (flat combining).

Five hundred sites answer a round within a few milliseconds of each other. Each answer is one
transaction under its job's lock, and most of its cost is the transaction itself (a session, a
commit and its fsync), so one thread takes every answer queued while the previous batch was
served and records them all in one transaction: a group commit. The same holds for handing out
tasks when a round opens and its sites' long polls all wake at once.

A request handler waits on the event loop (``submit``), not in a thread of its own: only the
thread serving a batch runs, so hundreds of waiting requests cost no threads and no switches
between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)
class Pending(Generic[T, R]):
    """One caller's request in a queue, and in the end its result or its error."""

    request: T
    result: R | None = None
    error: BaseException | None = None
    done: bool = False
    woken: threading.Event = field(default_factory=threading.Event)
    """Set when it is done, or when its caller is to serve the queue it is in."""
    settled: asyncio.Future[None] | None = None
    """For a caller on an event loop (``submit``): resolved when it is done."""

    def outcome(self) -> R:
        """The result, or the error, raised in the caller's own thread."""
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # R may itself be optional


def _settle(items: Sequence[Pending[T, R]]) -> None:
    for item in items:
        if item.settled is not None and not item.settled.done():  # its caller may have left
            item.settled.set_result(None)


class Combiner(Generic[T, R]):
    """Queues of requests by key; one thread per key at a time serves everything queued under
    it, the others wait for their results (each on its own event, or on its event loop: a
    batch served wakes only its callers).

    A caller in a thread (``__call__``) that finds nobody serving its key serves it; once its
    batch is done, the first caller queued meanwhile serves the next one if it waits in a
    thread, else the same thread goes on. A caller on an event loop (``submit``) that finds
    nobody serving starts a thread of ``executor`` to serve (the loop's default executor when
    None).

    ``serve(key, batch)`` sets each item's result or error; it takes whatever lock keeps
    other changes of the key out."""

    def __init__(
        self,
        serve: Callable[[Hashable, Sequence[Pending[T, R]]], None],
        executor: Executor | None = None,
    ) -> None:
        self.serve = serve
        self._executor = executor
        self._lock = threading.Lock()
        self._queues: dict[Hashable, list[Pending[T, R]]] = {}
        self._serving: set[Hashable] = set()

    def _queue(self, key: Hashable, item: Pending[T, R]) -> bool:
        """Queue ``item``; True when its caller is to serve the key."""
        with self._lock:
            self._queues.setdefault(key, []).append(item)
            if key in self._serving:
                return False
            self._serving.add(key)
            return True

    def __call__(self, key: Hashable, request: T) -> R:
        """Queue ``request`` under ``key`` and return its result, served by this thread or by
        the one serving ``key`` when it was queued."""
        item: Pending[T, R] = Pending(request)
        if not self._queue(key, item):
            item.woken.wait()
            if item.done:
                return item.outcome()
        self._drain(key)
        return item.outcome()

    async def submit(self, key: Hashable, request: T) -> R:
        """``__call__`` for a caller on an event loop: it waits there, not in a thread."""
        loop = asyncio.get_running_loop()
        item: Pending[T, R] = Pending(request, settled=loop.create_future())
        assert item.settled is not None
        if self._queue(key, item):
            loop.run_in_executor(self._executor, self._drain, key)
        await asyncio.shield(item.settled)  # a caller that leaves leaves its request queued
        return item.outcome()

    def _drain(self, key: Hashable) -> None:
        """Serve ``key``'s queue batch by batch, until it is empty or a caller waiting in a
        thread takes over."""
        while True:
            with self._lock:
                batch = self._queues.pop(key)
            try:
                self.serve(key, batch)
            except BaseException as exc:  # nothing served: every caller hears of it
                for other in batch:
                    other.error = other.error or exc
            finally:
                with self._lock:
                    for other in batch:
                        other.done = True
                    following = self._queues.get(key)
                    if not following:
                        self._serving.discard(key)
                self._wake(batch)
            if not following:
                return
            if following[0].settled is None:  # the key stays served: by that caller's thread
                following[0].woken.set()
                return

    @staticmethod
    def _wake(batch: Sequence[Pending[T, R]]) -> None:
        """Tell every caller in ``batch`` it is done: threads by their events, callers on an
        event loop by one call into each loop."""
        loops: dict[asyncio.AbstractEventLoop, list[Pending[T, R]]] = {}
        for item in batch:
            if item.settled is None:
                item.woken.set()
            else:
                loops.setdefault(item.settled.get_loop(), []).append(item)
        for loop, items in loops.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits on it
                loop.call_soon_threadsafe(_settle, items)
