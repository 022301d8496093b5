"""bench/peers.py's memory sampler: one walk of the process table finds every process of the
trees it watches, and their peaks are the kernel's high-water marks."""

from __future__ import annotations

import importlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psutil
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def peers(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The benchmark module, imported as ``make bench-peers`` runs it (bench/ on the path)."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("peers")


@pytest.fixture
def trees() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two shells, each with two children that sleep."""
    shells = [subprocess.Popen(["bash", "-c", "sleep 30 & sleep 30 & wait"]) for _ in range(2)]
    try:
        deadline = time.monotonic() + 10
        while not all(_sleeping(shell.pid) for shell in shells):
            assert time.monotonic() < deadline, "the shells did not start their children"
            time.sleep(0.01)
        yield shells
    finally:
        for shell in shells:
            for child in psutil.Process(shell.pid).children(recursive=True):
                child.kill()
            shell.kill()
            shell.wait()


def _sleeping(pid: int) -> bool:
    """Both children of the shell ``pid`` run ``sleep`` (before its exec, a fork of the shell
    has the shell's peak, which the exec resets)."""
    children = psutil.Process(pid).children()
    return len(children) == 2 and all(c.name() == "sleep" for c in children)


def test_parents_are_the_kernels(peers: ModuleType, trees: list[subprocess.Popen[bytes]]) -> None:
    parents = peers.parents()
    for shell in trees:
        assert parents[shell.pid] == psutil.Process(shell.pid).ppid()
        for child in psutil.Process(shell.pid).children():
            assert parents[child.pid] == shell.pid


def test_sampler_finds_every_process_of_its_trees(
    peers: ModuleType, trees: list[subprocess.Popen[bytes]]
) -> None:
    sampler = peers.TreeSampler([shell.pid for shell in trees])
    sampler.sample()
    expected = set()
    for shell in trees:
        expected |= {shell.pid, *(c.pid for c in psutil.Process(shell.pid).children())}
    assert set(sampler.peaks) == expected  # the children too, and no other process
    for pid, peak in sampler.peaks.items():  # a high-water mark: the kernel's, then or since
        assert 0 < peak <= peers.proc_status_bytes(pid, "VmHWM")
