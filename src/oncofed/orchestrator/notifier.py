"""Wakes long-polling edges as soon as a task is published for them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Notifier:
    """Per-site asyncio events, fired from worker threads via the event loop."""

    def __init__(self) -> None:
        self._events: dict[int, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def event(self, site_id: int) -> asyncio.Event:
        """The event the next ``notify`` of this site sets; take it before checking for work."""
        return self._events.setdefault(site_id, asyncio.Event())

    def notify(self, site_ids: Iterable[int]) -> None:
        """Thread-safe: wake every poller of these sites."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._fire, list(site_ids))

    def _fire(self, site_ids: list[int]) -> None:
        for site_id in site_ids:
            event = self._events.pop(site_id, None)
            if event is not None:
                event.set()
