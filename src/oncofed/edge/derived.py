"""What the edge derives from a task's spec, made once for the tasks that share the spec object
(a job's: ``wire.messages.SPECS_SEEN`` gives them one) rather than for each."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from oncofed.wire.analysis import AnySpec

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class PerSpec(Generic[K, V]):
    """``make(spec, key)``, kept by spec object and key (the spec with it, so that its id is
    never reused while kept), the ``kept`` most recent."""

    def __init__(self, make: Callable[[AnySpec, K], V], kept: int = 64) -> None:
        self._make, self._kept = make, kept
        self._values: OrderedDict[tuple[int, K], tuple[AnySpec, V]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, spec: AnySpec, key: K) -> V:
        with self._lock:
            found = self._values.get((id(spec), key))
            if found is not None and found[0] is spec:
                self._values.move_to_end((id(spec), key))
                return found[1]
        value = self._make(spec, key)
        with self._lock:
            self._values[id(spec), key] = (spec, value)
            if len(self._values) > self._kept:
                self._values.popitem(last=False)
        return value
