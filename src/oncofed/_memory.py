"""Keep a long-running process's resident memory close to what it really holds (the
orchestrator), and its garbage collector off the hot path (the orchestrator and the edge).

glibc's malloc raises its mmap threshold after large blocks are freed and gives every thread
its own arena, so upload buffers freed by one worker thread linger in its arena and resident
memory creeps up with concurrency. Fixing the threshold (large blocks are mapped and returned
on free) and capping the arenas keeps peak memory predictable. Elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def bound_allocator(mmap_threshold: int = 1 << 20, arenas: int = 2) -> bool:
    """Apply the settings through ``mallopt``; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_ARENA_MAX, arenas))


YOUNG_COLLECTION = 50_000
"""Allocations (net) between two collections of the youngest generation (Python's default:
700)."""


def settle_collector(young: int = YOUNG_COLLECTION) -> None:
    """For the orchestrator, once it is set up: ``frozen_at_start``, and the youngest
    generation collected every ``young`` allocations instead of every 700. With 500 sites
    answering at once the collector took about a tenth of the orchestrator's CPU, most of it
    in full collections walking objects that live as long as the process."""
    frozen_at_start()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)


def frozen_at_start() -> None:
    """For a long-running process, once it is set up: what exists now (modules, the app, its
    caches; torch at an edge that trains) is never scanned again (``gc.freeze``).

    An edge process serving 25 sites of a 50-site job held about 480,000 such objects: each
    full collection (one every few seconds of work) walked them all, holding the interpreter,
    and so every site of the process, for about a quarter of a second. Edges keep the
    youngest generation's threshold: a higher one held about 28 MB more garbage per process."""
    gc.freeze()
