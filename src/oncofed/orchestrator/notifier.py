"""Wakes long-polling edges as soon as a task is published for them, with the task when the
transaction that published it handed it out too, and remembers which sites were found to have
nothing to do since, so their polls skip the database."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from oncofed.wire.messages import TaskAssignment


class Notifier:
    """Per-site asyncio events, fired from worker threads via the event loop.

    Every publication for a site bumps its generation. A check of the database that found
    nothing for a site marks it idle if no publication came since the check began
    (``found_nothing``), and the next publication clears the mark: while it stands, the
    site's polls need not look. Every task a site can be handed is published (a round
    opening, a secure round's next phase); a mark is trusted for ``trust`` seconds only, so
    a publication that was missed would delay a site by one long poll, not forever.

    A site's polls wait ``waiting_for`` it. The transaction that publishes a task hands it out
    to the sites waiting then (``waiting``) and ``notify`` passes it on: a poll woken takes it
    (``handed``) instead of asking the database again. One that stopped waiting meanwhile
    leaves it; the site's next poll asks the database, which hands the task out again.
    """

    def __init__(self, trust: float = 30.0) -> None:
        self.trust = trust
        self._events: dict[int, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._generations: dict[int, int] = {}
        self._idle: dict[int, float] = {}
        self._waiting: Counter[int] = Counter()  # site -> polls waiting for it
        self._handed: dict[int, tuple[int, TaskAssignment]] = {}  # site -> (generation, task)
        self._closing = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def event(self, site_id: int) -> asyncio.Event:
        """The event the next ``notify`` of this site sets; take it before checking for work."""
        return self._events.setdefault(site_id, asyncio.Event())

    def notify(
        self, site_ids: Iterable[int], handed: Mapping[int, TaskAssignment] | None = None
    ) -> None:
        """Thread-safe: wake every poller of these sites (after the commit that published),
        passing on the tasks that commit ``handed`` out to some of them."""
        sites = list(site_ids)
        handed = handed or {}
        with self._lock:
            for site_id in sites:
                generation = self._generations.get(site_id, 0) + 1
                self._generations[site_id] = generation
                self._idle.pop(site_id, None)
                if (task := handed.get(site_id)) is not None:
                    self._handed[site_id] = (generation, task)
                else:
                    self._handed.pop(site_id, None)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._fire, sites)

    def generations(self, site_ids: Iterable[int]) -> dict[int, int]:
        """The sites' generations; read before checking the database for their work."""
        with self._lock:
            return {site_id: self._generations.get(site_id, 0) for site_id in site_ids}

    @contextmanager
    def waiting_for(self, site_id: int) -> Iterator[None]:
        """A poll of the site waits for a publication meanwhile."""
        with self._lock:
            self._waiting[site_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting[site_id] -= 1
                if self._waiting[site_id] <= 0:
                    del self._waiting[site_id]

    def waiting(self) -> set[int]:
        """Thread-safe: the sites a poll waits for now."""
        with self._lock:
            return set(self._waiting)

    def handed(self, site_id: int, since: int) -> TaskAssignment | None:
        """The task handed out to the site by a publication after generation ``since`` (taken:
        one poll gets it), or None."""
        with self._lock:
            generation, task = self._handed.get(site_id, (0, None))
            if task is None or generation <= since:
                return None
            del self._handed[site_id]
            return task

    def found_nothing(self, generations: Mapping[int, int]) -> None:
        """A check that began at these ``generations`` found nothing for these sites."""
        now = time.monotonic()
        with self._lock:
            for site_id, generation in generations.items():
                if self._generations.get(site_id, 0) == generation:
                    self._idle[site_id] = now

    @property
    def closing(self) -> bool:
        """The server is stopping: polls answer at once instead of waiting."""
        return self._closing

    def close(self) -> None:
        """Thread- and signal-safe: the server is stopping; wake every waiting poll so that it
        answers now (long polls would otherwise hold the shutdown for up to their wait)."""
        self._closing = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._fire, list(self._events))

    def idle(self, site_id: int) -> bool:
        """Nothing was published for the site since a check found nothing for it."""
        since = self._idle.get(site_id)
        return since is not None and time.monotonic() - since < self.trust

    def _fire(self, site_ids: list[int]) -> None:
        for site_id in site_ids:
            event = self._events.pop(site_id, None)
            if event is not None:
                event.set()
