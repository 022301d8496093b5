"""The garbage collector settled for a long-running process: what exists at start is frozen
(never scanned again) and, at the orchestrator, the youngest generation is collected less
often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from oncofed._memory import YOUNG_COLLECTION, frozen_at_start, settle_collector


@pytest.fixture
def collector() -> Iterator[tuple[int, int, int]]:
    """Thresholds set for the test (the older generations' not Python's defaults, so that a
    change of them shows), nothing frozen; the collector's state is restored afterwards
    (what the session froze, ``tests/conftest.py``, frozen again)."""
    original, frozen = gc.get_threshold(), gc.get_freeze_count()
    gc.unfreeze()
    try:
        gc.set_threshold(700, 17, 23)
        yield gc.get_threshold()
    finally:
        gc.unfreeze()
        gc.set_threshold(*original)
        if frozen:
            gc.freeze()


def tracked(obj: object) -> bool:
    """Whether ``obj`` is in a generation the collector scans (frozen ones are not)."""
    return any(o is obj for o in gc.get_objects())


def test_settling_freezes_the_objects_that_exist(collector: tuple[int, int, int]) -> None:
    resident: list[object] = [object()]
    assert gc.get_freeze_count() == 0 and tracked(resident)
    settle_collector()
    assert gc.get_freeze_count() > 0
    assert not tracked(resident)
    later: list[object] = [object()]
    assert tracked(later)  # what is made afterwards is collected as before


def test_settling_raises_the_young_threshold_and_keeps_the_others(
    collector: tuple[int, int, int],
) -> None:
    _, middle, old = collector
    settle_collector()
    assert gc.get_threshold() == (YOUNG_COLLECTION, middle, old)
    settle_collector(young=1234)
    assert gc.get_threshold() == (1234, middle, old)
    assert YOUNG_COLLECTION > 700  # Python's default, which it is meant to raise


def test_an_edge_freezes_what_exists_and_keeps_the_thresholds(
    collector: tuple[int, int, int],
) -> None:
    resident: list[object] = [object()]
    frozen_at_start()
    assert not tracked(resident)
    assert gc.get_threshold() == collector
