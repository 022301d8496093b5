"""Several sites in one process (``oncofed.edge.host``), with stand-in agents: a site whose agent
fails is started again while the others go on, nothing starts when a directory cannot be
served, and log lines name their site. ``test_host_process.py`` runs real agents."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import cast

import pytest

from oncofed.edge import EdgeError, EdgeHome
from oncofed.edge.agent import Agent
from oncofed.edge.host import EdgeHost, distinct

log = logging.getLogger("oncofed.edge.test")


class StandIn:
    """An agent that logs a line per loop, and fails its first run when told to."""

    def __init__(self, home: EdgeHome, fail: bool = False, start_after: float = 0.0) -> None:
        self.site = home.root.name
        self.orchestrator = "http://orchestrator.test"
        self.fail = fail
        self.start_after = start_after
        self.started = threading.Event()
        self.loops = 0
        self.closed = False

    def run(self, stop: threading.Event | None = None, max_tasks: int | None = None) -> int:
        assert stop is not None
        if not stop.wait(self.start_after):
            self.started.set()
        while not stop.is_set():
            self.loops += 1
            log.info("loop %d of %s", self.loops, "50%")
            if self.fail:
                raise RuntimeError("a bug in this site's agent")
            stop.wait(0.01)
        return 0

    def close(self) -> None:
        self.closed = True


class Built:
    """``make_agent``: every agent built, by site; ``failing`` sites fail their first run."""

    def __init__(
        self,
        failing: set[str] = frozenset(),
        broken: set[str] = frozenset(),
        slow: set[str] = frozenset(),
    ) -> None:
        """``slow`` sites' agents start (``Agent.started``) after 0.7 s."""
        self.failing, self.broken, self.slow = set(failing), set(broken), set(slow)
        self.agents: dict[str, list[StandIn]] = {}

    def __call__(self, home: EdgeHome) -> Agent:
        site = home.root.name
        if site in self.broken:
            raise EdgeError(f"{home.root / 'credential'} is missing")
        fail = site in self.failing and not self.agents.get(site)
        agent = StandIn(home, fail=fail, start_after=0.7 if site in self.slow else 0.0)
        self.agents.setdefault(site, []).append(agent)
        return cast(Agent, agent)


def homes(tmp_path: Path, *names: str) -> list[EdgeHome]:
    for name in names:
        (tmp_path / name).mkdir()
    return [EdgeHome(tmp_path / name) for name in names]


def serve(host: EdgeHost, seconds: float) -> None:
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    host.run(stop)


def test_a_failing_agent_is_started_again_while_the_others_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    built = Built(failing={"b"})
    host = EdgeHost(homes(tmp_path, "a", "b"), make_agent=built, restart=(0.05, 0.1))
    with caplog.at_level(logging.INFO):
        serve(host, 0.6)
    [a], (b_first, b_again) = built.agents["a"], built.agents["b"]
    assert a.loops > 5 and a.closed  # never interrupted, closed when stopping
    assert b_first.loops == 1 and b_first.closed
    assert b_again.loops > 0 and b_again.closed
    failed = [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in failed] == [
        "site b: the agent stopped on an error; the other sites go on; starting it again in 0 s"
    ]


def test_the_host_settles_once_when_every_agent_has_started(tmp_path: Path) -> None:
    built, settled = Built(slow={"b"}), []
    host = EdgeHost(
        homes(tmp_path, "a", "b"),
        make_agent=built,
        settle=lambda: settled.append({a.site: a.started.is_set() for a in host.agents}),
    )
    serve(host, 1.0)
    assert settled == [{"a": True, "b": True}]  # once, when b had started too


def test_log_lines_begin_with_their_site(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    host = EdgeHost(homes(tmp_path, "a", "50%"), make_agent=Built())
    with caplog.at_level(logging.INFO):
        serve(host, 0.1)
        log.info("from the main thread")
    said = {r.getMessage() for r in caplog.records}
    assert {"site a: loop 1 of 50%", "site 50%: loop 1 of 50%", "from the main thread"} <= said
    assert logging.getLogRecordFactory() is logging.LogRecord  # put back


def test_nothing_starts_when_a_directory_cannot_be_served(tmp_path: Path) -> None:
    built = Built(broken={"b", "c"})
    host = EdgeHost(homes(tmp_path, "a", "b", "c"), make_agent=built)
    with pytest.raises(EdgeError) as raised:
        host.open()
    said = str(raised.value)
    assert said.startswith("2 of the 3 edge directories cannot be served; nothing started: ")
    assert f"{tmp_path / 'b'}: {tmp_path / 'b' / 'credential'} is missing" in said
    assert str(tmp_path / "c") in said and f"{tmp_path / 'a'}:" not in said
    assert built.agents["a"][0].closed


def test_an_unexpected_error_building_an_agent_is_named_too(tmp_path: Path) -> None:
    def build(home: EdgeHome) -> Agent:
        raise ValueError("odd")

    with pytest.raises(EdgeError, match=r"2 of the 2 .*/a: ValueError: odd; .*/b: ValueError"):
        EdgeHost(homes(tmp_path, "a", "b"), make_agent=build).open()


def test_two_directories_of_one_site_are_refused(tmp_path: Path) -> None:
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "a").mkdir()
    both = [*homes(tmp_path, "a"), EdgeHome(tmp_path / "copy" / "a")]
    with pytest.raises(EdgeError, match=r"copy/a: enrolled as site a, as .*/a is"):
        EdgeHost(both, make_agent=Built()).open()


def test_a_directory_given_twice_is_refused(tmp_path: Path) -> None:
    [a] = homes(tmp_path, "a")
    with pytest.raises(EdgeError, match=r"edge directory .*/a is given twice: give each site once"):
        distinct([a.root, a.root])
    with pytest.raises(EdgeError, match=r"given twice \(.*/a and .*/a/\.\.?/a\)"):
        distinct([a.root, a.root / ".." / "a"])
    assert distinct([a.root]) == [a.root]


def test_stopping_waits_for_no_agent_stuck_in_a_poll(tmp_path: Path) -> None:
    """An agent still in its long poll when asked to stop is left to the process's end."""

    class Stuck(StandIn):
        def run(self, stop: threading.Event | None = None, max_tasks: int | None = None) -> int:
            time.sleep(5)
            return 0

    host = EdgeHost(homes(tmp_path, "a"), make_agent=lambda h: cast(Agent, Stuck(h)), grace=0.2)
    began = time.monotonic()
    serve(host, 0.1)
    assert time.monotonic() - began < 2
