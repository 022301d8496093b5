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
from dataclasses import dataclass
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

    def outcome(self) -> R:
        """The result, or the error, raised in the caller's own thread."""
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # R may itself be optional


class Combiner(Generic[T, R]):
    """Queues of requests by key; one caller per key at a time serves everything queued under
    it, the others wait for their results (not for a lock: woken together, none of them
    queues behind another's wake-up).

    ``serve(key, batch)`` sets each item's result or error; it takes whatever lock keeps
    other changes of the key out."""

    def __init__(self, serve: Callable[[Hashable, Sequence[Pending[T, R]]], None]) -> None:
        self.serve = serve
        self._changed = threading.Condition()
        self._queues: dict[Hashable, list[Pending[T, R]]] = {}
        self._serving: set[Hashable] = set()

    def __call__(self, key: Hashable, request: T) -> R:
        """Queue ``request`` under ``key`` and return its result, served by this thread or by
        the one serving ``key`` when it was queued."""
        item: Pending[T, R] = Pending(request)
        with self._changed:
            self._queues.setdefault(key, []).append(item)
            while not item.done and key in self._serving:
                self._changed.wait()
            if item.done:
                return item.outcome()
            self._serving.add(key)
            batch = self._queues.pop(key)
        try:
            self.serve(key, batch)
        except BaseException as exc:  # nothing served: every caller hears of it
            for other in batch:
                other.error = other.error or exc
        finally:
            with self._changed:
                for other in batch:
                    other.done = True
                self._serving.discard(key)
                self._changed.notify_all()
        return item.outcome()
