"""The statistics rehearsal ``oncofed edge run`` plays before its sites poll: whole tasks
answered by a scratch site, nothing leaving the process or staying on disk, and a failure that
never stops the edge."""

from __future__ import annotations

import logging
import socket
import tempfile
from pathlib import Path

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
