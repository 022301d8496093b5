"""The statistics rehearsal ``oncofed edge run`` plays before its sites poll: whole tasks
answered by a scratch site, nothing leaving the process or staying on disk, and a failure that
never stops the edge."""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from oncofed.edge import rehearsal
from oncofed.edge.rehearsal import TASKS, rehearse


def test_the_scratch_site_answers_each_task_with_statistics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert rehearse() == TASKS
    assert rehearse(tasks=1) == 1
    assert list(tmp_path.iterdir()) == []  # its directory, ledger and egress log gone


def test_nothing_leaves_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection refused: the rehearsal still answers, so it opened none."""
    dialled: list[object] = []

    def refuse(_self: socket.socket, address: object) -> None:
        dialled.append(address)
        raise ConnectionRefusedError("no network in a rehearsal")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    assert rehearse() == TASKS
    assert dialled == []


def test_a_failure_is_logged_and_the_edge_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_root: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(rehearsal, "scratch_site", broken)
    with caplog.at_level(logging.WARNING, logger="oncofed.edge.rehearsal"):
        assert rehearse() == 0
    [record] = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None  # no traceback
    assert "the statistics rehearsal failed (disk full)" in record.getMessage()


def test_a_declined_task_is_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer patients than the policy's minimum cohort: declined, so none rehearsed the
    statistics (the count says what was played, not what was asked)."""
    monkeypatch.setattr(rehearsal, "PATIENTS", 12)
    assert rehearse() == 0


Respond = Callable[[httpx.Request, httpx.Response], httpx.Response]


def rehearsed_within(monkeypatch: pytest.MonkeyPatch, respond: Respond, seconds: float) -> int:
    """``rehearse()`` with the scratch orchestrator's answers passed through ``respond``; its
    count, asserting that it ended within ``seconds`` (in a thread: a loop fails the test,
    not the suite)."""
    answer = rehearsal._Orchestrator.__call__

    def changed(self: rehearsal._Orchestrator, request: httpx.Request) -> httpx.Response:
        return respond(request, answer(self, request))

    monkeypatch.setattr(rehearsal._Orchestrator, "__call__", changed)
    counted: list[int] = []
    thread = threading.Thread(target=lambda: counted.append(rehearse()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the rehearsal still runs after {seconds} s"
    return counted[0]


def test_tasks_the_agent_cannot_read_end_the_rehearsal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every task unreadable (none counts as done): the orchestrator runs out and stops the
    agent, rather than the agent polling forever before the site's real start."""

    def garbled(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path.endswith("/tasks/next") and response.status_code == 200:
            return httpx.Response(200, json={"not": "a task"})
        return response

    assert rehearsed_within(monkeypatch, garbled, 30) == 0


def test_an_orchestrator_refusing_everything_ends_the_rehearsal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every request refused (a route the agent no longer matches, say): its requests are
    bounded, and the edge starts."""

    def refused(_request: httpx.Request, _response: httpx.Response) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Not Found"})

    assert rehearsed_within(monkeypatch, refused, 30) == 0
