"""Calls that arrive together are served together (flat combining).

Five hundred sites answer a round within a few milliseconds of each other. Each answer is one
transaction under its job's lock, and most of its cost is the transaction itself (a session, a
commit and its fsync), so one thread takes every answer queued while the previous batch was
served and records them all in one transaction: a group commit. The same holds for handing out
tasks when a round opens and its sites' long polls all wake at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
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

    def outcome(self) -> R:
        """The result, or the error, raised in the caller's own thread."""
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # R may itself be optional


class Combiner(Generic[T, R]):
    """Queues of requests by key; one caller per key at a time serves everything queued under
    it, the others wait for their results (each on its own event: a batch served wakes only
    its callers, and the first caller queued meanwhile, who serves the next batch).

    ``serve(key, batch)`` sets each item's result or error; it takes whatever lock keeps
    other changes of the key out."""

    def __init__(self, serve: Callable[[Hashable, Sequence[Pending[T, R]]], None]) -> None:
        self.serve = serve
        self._lock = threading.Lock()
        self._queues: dict[Hashable, list[Pending[T, R]]] = {}
        self._serving: set[Hashable] = set()

    def __call__(self, key: Hashable, request: T) -> R:
        """Queue ``request`` under ``key`` and return its result, served by this thread or by
        the one serving ``key`` when it was queued."""
        item: Pending[T, R] = Pending(request)
        with self._lock:
            self._queues.setdefault(key, []).append(item)
            waits = key in self._serving
            if not waits:
                self._serving.add(key)
        if waits:
            item.woken.wait()
            if item.done:
                return item.outcome()
        with self._lock:  # this caller's turn: it serves all that is queued
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
            for other in batch:
                other.woken.set()
            if following:  # the key stays served: by the first caller queued meanwhile
                following[0].woken.set()
        return item.outcome()
