"""Rows of integers from counts and sums over half-spaces: the core of the Newton and the
over-budget training attacks.

An oracle answers, for a threshold t, the count of patients with s = a'x > t and the sum of
their rows x (exact integers), for a fixed integer direction a. Patients' s are integers, so a
threshold at a half-integer never touches one. An interval (lo, hi] of s holds
``above(lo) - above(hi)``: when that count is 1, the sum is the patient's row. An interval of
c >= 2 patients is cut at floor(m) + 1/2, m the mean of s inside it (a' sum / c, known exactly):
unless all its patients share one s, both sides are non-empty, so every cut separates
patients and about n - 1 cuts isolate n distinct rows. Patients sharing s are told apart from
none: c of them with s = m are reported as c copies of sum / c (right when the rows are equal,
which a random direction makes the only likely case).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tests.attacks.support import Row

Vector = tuple[int, ...]
"""(count, sum of column 1, ...) over a set of patients, exact."""


@dataclass(frozen=True)
class _Interval:
    lo: float
    hi: float


class HalfSpaceSearch:
    """Chooses thresholds along ``direction`` and turns the oracle's answers into rows.

    ``total`` is (n, column sums) over all patients: ``above(-inf)``."""

    def __init__(self, direction: np.ndarray, total: Vector) -> None:
        self._a = [int(v) for v in direction]
        self._above: dict[float, Vector] = {-math.inf: total, math.inf: (0,) * len(total)}
        self._open = [_Interval(-math.inf, math.inf)]
        self._cutting: dict[float, _Interval] = {}
        self.rows: list[Row] = []
        self._settle(self._open.pop())

    @property
    def done(self) -> bool:
        return not self._open and not self._cutting

    def cut(self) -> float | None:
        """The next threshold to ask about, or None when no interval is left to cut."""
        if not self._open:
            return None
        interval = self._open.pop(0)
        count, *sums = self._content(interval)
        t = self._dot(sums) // count + 0.5
        self._cutting[t] = interval
        return t

    def share_above(self, t: float) -> float:
        """A guess, before asking, of the fraction of all patients above ``t`` (a threshold
        ``cut`` gave): that of the middle of its interval."""
        interval = self._cutting[t]
        low, high = self._above[interval.lo][0], self._above[interval.hi][0]
        return (low + high) / 2 / self._above[-math.inf][0]

    def record(self, t: float, above: Vector) -> None:
        """The oracle's (count, sums) above threshold ``t``, asked for by ``cut``."""
        interval = self._cutting.pop(t)
        self._above[t] = above
        parts = (_Interval(interval.lo, t), _Interval(t, interval.hi))
        counts = [self._content(part)[0] for part in parts]
        if min(counts) < 0 or 0 in counts:  # inconsistent, or shared s: nothing to cut
            self._settle(interval, stuck=True)
            return
        for part in parts:
            self._settle(part)

    def _settle(self, interval: _Interval, stuck: bool = False) -> None:
        """Report a single patient or patients sharing one s; keep the others for cutting."""
        count, *sums = self._content(interval)
        if count <= 0:
            return
        if count == 1:
            self.rows.append(tuple(float(v) for v in sums))
            return
        mean, spread = divmod(self._dot(sums), count)
        shared = spread == 0 and (interval.hi == mean + 0.5 or interval.lo == mean - 0.5)
        if shared or stuck:
            if all(v % count == 0 for v in sums):
                self.rows.extend([tuple(float(v // count) for v in sums)] * count)
            return
        self._open.append(interval)

    def _content(self, interval: _Interval) -> Vector:
        low, high = self._above[interval.lo], self._above[interval.hi]
        return tuple(a - b for a, b in zip(low, high, strict=True))

    def _dot(self, sums: list[int]) -> int:
        return sum(a * v for a, v in zip(self._a, sums, strict=True))
