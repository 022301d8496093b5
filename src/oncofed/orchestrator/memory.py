"""Keep the orchestrator's resident memory close to what it really holds.

glibc's malloc raises its mmap threshold after large blocks are freed and gives every thread
its own arena, so upload buffers freed by one worker thread linger in its arena and resident
memory creeps up with concurrency. Fixing the threshold (large blocks are mapped and returned
on free) and capping the arenas keeps peak memory predictable. Elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

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
