"""Several sites served by one process (``oncofed edge run --dir A --dir B ...``): one ``Agent``
per edge directory, each in a thread of its own.

Each site keeps everything of its own, as in a process of its own: its directory's credential,
policy, datasets, ledger (with its privacy budget), egress log and identity key, its HTTP
client and its task runner; no object of one site's is handed to another's. What the sites
share is the process: the imported modules (torch among them, once one site trains; its
thread settings are the process's, ``oncofed.edge.compute``), the plugins imported, the memory
and the CPU.

A site's trouble stays its own. A task that fails is declined by its agent as in a process of
its own; a policy file that is missing or invalid makes that site decline every task; an
agent that stops on an error is logged and started again after a pause (1 s, doubling up to
5 minutes) while the other sites go on. A directory that cannot be served at all (not
enrolled, its settings or credential unreadable) is a start-up error naming it, and nothing
starts. Every log line an agent's thread writes begins with ``site NAME:``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from oncofed._files import exclusive
from oncofed.edge.config import EdgeHome
from oncofed.edge.errors import EdgeError

if TYPE_CHECKING:
    from oncofed.edge.agent import Agent

log = logging.getLogger("oncofed.edge.host")
RESTART = (1.0, 300.0)
"""Pause before an agent that stopped on an error is started again: first, and at most."""
GRACE = 2.0
"""Seconds the agents get, once asked to stop, to leave their loops and close their files; one
still in a long poll is cut short when the process ends (its task is sent again)."""

_thread_site = threading.local()


def distinct(dirs: Sequence[Path]) -> list[Path]:
    """``dirs``, refused (``EdgeError``) when two of them name the same directory."""
    seen: dict[Path, Path] = {}
    for folder in dirs:
        real = folder.resolve()
        if real in seen:
            same = "twice" if seen[real] == folder else f"twice ({seen[real]} and {folder})"
            raise EdgeError(f"edge directory {folder} is given {same}: give each site once")
        seen[real] = folder
    return list(dirs)


@contextlib.contextmanager
def locked(dirs: Sequence[Path], holder: str = "oncofed edge run") -> Iterator[None]:
    """Hold every directory's lock (``oncofed._files.exclusive``) while the block runs: no
    other process serves any of these sites meanwhile (``FolderInUse`` names the one taken)."""
    with contextlib.ExitStack() as stack:
        for folder in dirs:
            stack.enter_context(exclusive(folder, holder))
        yield


@dataclass
class _Site:
    home: EdgeHome
    agent: Agent
    thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.agent.site


class EdgeHost:
    """``EdgeHost(homes).run(stop)``: every site's agent in its thread until ``stop`` is set.

    ``make_agent`` builds a site's agent (default: ``Agent(home, poll_seconds=...)``); it is
    called again to restart one that stopped on an error. ``settle`` is called once, when every
    agent has started (``Agent.started``): ``oncofed edge run`` freezes then what the process
    holds (``oncofed._memory.frozen_at_start``)."""

    def __init__(
        self,
        homes: Sequence[EdgeHome],
        *,
        poll_seconds: float = 25.0,
        make_agent: Callable[[EdgeHome], Agent] | None = None,
        restart: tuple[float, float] = RESTART,
        grace: float = GRACE,
        settle: Callable[[], None] | None = None,
    ) -> None:
        distinct([home.root for home in homes])
        self._homes = list(homes)
        self._poll_seconds = poll_seconds
        self._make_agent = make_agent or self._default_agent
        self._restart = restart
        self._grace = grace
        self._settle = settle
        self._sites: list[_Site] = []

    def _default_agent(self, home: EdgeHome) -> Agent:
        from oncofed.edge.agent import Agent

        return Agent(home, poll_seconds=self._poll_seconds)

    @property
    def agents(self) -> list[Agent]:
        """The sites' agents, once ``open`` built them (in the order of the directories)."""
        return [site.agent for site in self._sites]

    def open(self) -> list[Agent]:
        """Build every site's agent, or none: ``EdgeError`` listing each directory that cannot
        be served and why (its settings, credential or files), or two directories enrolled as
        the same site."""
        problems: list[str] = []
        sites: list[_Site] = []
        for home in self._homes:
            try:
                sites.append(_Site(home, self._make_agent(home)))
            except Exception as exc:  # any reason; each directory's is reported
                problems.append(f"{home.root}: {_said(exc)}")
        by_name: dict[str, Path] = {}
        for site in sites:
            if site.name in by_name:
                problems.append(
                    f"{site.home.root}: enrolled as site {site.name}, as {by_name[site.name]} is"
                )
            by_name.setdefault(site.name, site.home.root)
        if problems:
            for site in sites:
                with contextlib.suppress(Exception):
                    site.agent.close()
            count = f"{len(problems)} of the {len(self._homes)} edge directories"
            raise EdgeError(f"{count} cannot be served; nothing started: " + "; ".join(problems))
        self._sites = sites
        return self.agents

    def run(self, stop: threading.Event) -> None:
        """Serve every site (``open`` first when it was not called) until ``stop`` is set, then
        give the agents ``grace`` seconds to stop; log lines name their site meanwhile."""
        if not self._sites:
            self.open()
        previous = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_labelled(previous))
        try:
            for site in self._sites:
                site.thread = threading.Thread(
                    target=self._serve, args=(site, stop), name=site.name, daemon=True
                )
                site.thread.start()
            settle = self._settle
            while not stop.is_set():
                starting = [s.agent for s in self._sites if not s.agent.started.is_set()]
                if settle is not None and not starting:
                    settle()  # once, as the last agent starts
                    settle = None
                elif settle is not None:
                    starting[0].started.wait(0.5)
                else:
                    stop.wait(0.5)
            deadline = time.monotonic() + self._grace
            for site in self._sites:
                assert site.thread is not None
                site.thread.join(max(0.0, deadline - time.monotonic()))
        finally:
            logging.setLogRecordFactory(previous)

    def _serve(self, site: _Site, stop: threading.Event) -> None:
        """Run the site's agent until ``stop``; one that stops on an error is built and
        started again after a pause, doubling while it keeps failing."""
        _thread_site.name = site.name
        first, ceiling = self._restart
        pause = first
        try:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    site.agent.run(stop)
                    return
                except Exception:
                    if time.monotonic() - began > ceiling:  # it had run well for a while
                        pause = first
                    log.exception(
                        "the agent stopped on an error; the other sites go on; starting it "
                        "again in %.0f s",
                        pause,
                    )
                with contextlib.suppress(Exception):
                    site.agent.close()
                while not stop.wait(pause):
                    pause = min(pause * 2, ceiling)
                    try:
                        site.agent = self._make_agent(site.home)
                        break
                    except Exception as exc:
                        log.error("cannot start the agent again (%s); next try in %.0f s",
                                  _said(exc), pause)  # fmt: skip
                else:
                    return  # stopping: the closed agent stays closed
        finally:
            with contextlib.suppress(Exception):
                site.agent.close()


def _labelled(
    factory: Callable[..., logging.LogRecord],
) -> Callable[..., logging.LogRecord]:
    """A log record factory that begins each message written by a site's thread with
    ``site NAME:`` (a site's name may hold ``%``: escaped when the message is formatted)."""

    def make(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        site = getattr(_thread_site, "name", None)
        if site is not None and isinstance(record.msg, str):
            prefix = f"site {site}: "
            record.msg = (prefix.replace("%", "%%") if record.args else prefix) + record.msg
        return record

    return make


def _said(exc: Exception) -> str:
    """An error as one line: what it says, or its type when it says nothing."""
    text = " ".join(str(exc).split())
    if isinstance(exc, EdgeError | OSError) and text:
        return text
    return f"{type(exc).__name__}: {text}"
