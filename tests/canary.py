"""Searching bytes for numbers: the canary tests plant or compute a site's own numbers and look
for them, in every encoding that could carry them, in what the orchestrator holds.

A number is looked for only where it is distinctive, so that a hit is a leak and no hit is a
real absence:

- a real (float64) number with at least ``DIGITS`` significant decimal digits that is not a
  ratio of integers below ``RATIO`` (a proportion such as 2/9 is many things), as its float64
  little-endian bytes (8 bytes: a chance match in a few MiB has odds of about 2**-40), as its
  decimal text (Python's and pydantic's shortest repr, of the float64 and of its float32
  rounding, and every rounding to ``DIGITS`` or more significant digits, as JSON would print
  a rounded value), and as two consecutive float32 values (8 bytes; one float32 alone is only
  4 bytes, which a few MiB of random bytes holds by chance with odds of about 1 in 1000);
- an integer count only within a run of ``RUN`` consecutive counts of at least ``MIN_COUNT``
  taking at least 2 distinct values (the at-risk counts of a survival curve), as text (any
  separators) and as int64 or float64 little-endian bytes: a single count such as 144, or a
  run of small ones such as events per bin, is in any table of counts by chance;
- a fixed-point encoding (the secure aggregation limbs) by its low 64-bit limb, when that limb
  has at least 16 bits set and 16 clear (the limb of an integer is 0).

Text is compared as numeric tokens: every run of digits with its decimal point and exponent,
sign dropped and exponent normalised (``1e-05`` and ``1E-5`` are the same token), so a number
is found whole and not as the tail of a longer one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

DIGITS = 9
"""Fewest significant decimal digits of a real number's text to look for."""
RUN = 8
"""Consecutive counts that make a distinctive run."""
RATIO = 1000
"""Largest denominator of a ratio that is no canary."""
MIN_COUNT = 10
"""Smallest count in a distinctive run: runs of small counts (events per bin, mostly 0 to 3)
are in any table of counts."""
_TOKEN = re.compile(rb"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_EXPONENT = re.compile(r"[eE]\+?(-?)0*(\d)")


def _canonical(token: str) -> str:
    """A number's text without sign, with a lower-case exponent without '+' or leading zeros."""
    return _EXPONENT.sub(r"e\1\2", token.lstrip("-+"))


def _digits(text: str) -> int:
    """Significant decimal digits of a number's text."""
    mantissa = text.lower().split("e")[0].replace(".", "").lstrip("-0")
    return len(mantissa.rstrip("0")) if "." in text.split("e")[0] else len(mantissa)


def texts(value: float) -> set[str]:
    """The distinctive decimal texts of ``value``: its shortest repr (float64 and float32
    rounding) and its roundings to ``DIGITS`` significant digits or more. None for a ratio of
    small integers (0.2222222222222222 is 2/9: any proportion of a few patients)."""
    if not math.isfinite(value) or float(Fraction(value).limit_denominator(RATIO)) == value:
        return set()
    single = np.float32(value)
    forms = {repr(value), repr(float(single)), str(single)}
    forms |= {f"{value:.{d}g}" for d in range(DIGITS, 18)}
    forms |= {repr(round(value, k)) for k in range(1, 16)}
    return {_canonical(f) for f in forms if _digits(f) >= DIGITS}


@dataclass
class Needles:
    """What to look for, each with a label saying whose number it is (the first given: a
    site's update in the first round from a zero model is also its difference from it)."""

    words: dict[int, str] = field(default_factory=dict)
    """8-byte patterns, as little-endian uint64."""
    tokens: dict[str, str] = field(default_factory=dict)
    """Canonical decimal texts."""
    runs: dict[tuple[str, ...], str] = field(default_factory=dict)
    """Runs of consecutive numeric tokens."""
    blocks: dict[bytes, str] = field(default_factory=dict)
    """Longer byte patterns (runs of counts)."""

    def __len__(self) -> int:
        return len(self.words) + len(self.tokens) + len(self.runs) + len(self.blocks)

    def add_reals(self, label: str, values: np.ndarray) -> None:
        """A float64 array: each distinctive element, and float32 pairs of them."""
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
        keep = [bool(texts(float(v))) for v in flat]
        for value, ok in zip(flat.tolist(), keep, strict=True):
            if ok:
                self.words.setdefault(_word(np.float64(value).tobytes()), label)
                for text in texts(value):
                    self.tokens.setdefault(text, label)
        self.add_singles(label, flat.astype(np.float32), keep)

    def add_singles(self, label: str, values: np.ndarray, keep: list[bool] | None = None) -> None:
        """A float32 array: each distinctive element's text, and pairs of them as bytes."""
        flat = np.asarray(values, dtype=np.float32).reshape(-1)
        ok = keep or [bool(texts(float(v))) for v in flat.tolist()]
        for i, value in enumerate(flat.tolist()):
            if ok[i]:
                for text in texts(value):
                    self.tokens.setdefault(text, label)
            if i + 1 < flat.size and ok[i] and ok[i + 1]:
                self.words.setdefault(_word(flat[i : i + 2].tobytes()), label)

    def add_counts(self, label: str, counts: np.ndarray) -> None:
        """Runs of ``RUN`` consecutive counts along the last axis, of at least 2 distinct
        values, each at least ``MIN_COUNT``."""
        rows = np.asarray(counts, dtype=np.int64).reshape(-1, np.shape(counts)[-1])
        for row in rows:
            for start in range(row.size - RUN + 1):
                run = row[start : start + RUN]
                if len(set(run.tolist())) < 2 or run.min() < MIN_COUNT:
                    continue
                self.runs.setdefault(tuple(str(v) for v in run.tolist()), label)
                self.blocks.setdefault(run.astype("<i8").tobytes(), label)
                self.blocks.setdefault(run.astype("<f8").tobytes(), label)

    def add_limbs(self, label: str, limbs: np.ndarray) -> None:
        """Fixed-point encodings, ``(..., limbs)`` uint64: each distinctive low limb."""
        low = np.asarray(limbs, dtype=np.uint64).reshape(-1, np.shape(limbs)[-1])[:, 0]
        for limb in low.tolist():
            ones = int(limb).bit_count()
            if 16 <= ones <= 48:
                self.words.setdefault(int(limb), label)

    def without(self, public: Needles) -> Needles:
        """These needles less those ``public`` holds: a site's number that equals a published
        one (a null model's log-loss of ln 2 at every site) cannot tell a leak."""
        return Needles(
            {k: v for k, v in self.words.items() if k not in public.words},
            {k: v for k, v in self.tokens.items() if k not in public.tokens},
            {k: v for k, v in self.runs.items() if k not in public.runs},
            {k: v for k, v in self.blocks.items() if k not in public.blocks},
        )


def _word(data: bytes) -> int:
    return int.from_bytes(data, "little")


@dataclass(frozen=True)
class Found:
    label: str
    where: str


class Haystack:
    """Named byte strings (files, responses), indexed once for every search."""

    def __init__(self, items: Mapping[str, bytes]) -> None:
        self.items = dict(items)
        self._words = {name: _words(data) for name, data in self.items.items()}
        self._tokens = {
            name: [_canonical(t.decode()) for t in _TOKEN.findall(data)]
            for name, data in self.items.items()
        }
        self._token_sets = {name: set(tokens) for name, tokens in self._tokens.items()}
        self._runs = {
            name: {tuple(tokens[i : i + RUN]) for i in range(len(tokens) - RUN + 1)}
            for name, tokens in self._tokens.items()
        }

    def __len__(self) -> int:
        return sum(len(data) for data in self.items.values())

    def search(self, needles: Needles) -> list[Found]:
        """Every needle found, with where."""
        found: list[Found] = []
        words = np.fromiter(needles.words, dtype=np.uint64, count=len(needles.words))
        for name, data in self.items.items():
            hits = words[np.isin(words, self._words[name])]
            found += [Found(needles.words[int(w)], f"{name} (bytes)") for w in hits.tolist()]
            tokens = self._token_sets[name]
            found += [Found(v, f"{name} (text {k})") for k, v in needles.tokens.items()
                      if k in tokens]  # fmt: skip
            runs = self._runs[name]
            found += [Found(v, f"{name} (run {k})") for k, v in needles.runs.items() if k in runs]
            found += [Found(v, f"{name} (bytes)") for k, v in needles.blocks.items() if k in data]
        return found


def _words(data: bytes) -> np.ndarray:
    """Every 8-byte window of ``data`` (at each of the 8 alignments) as sorted uint64."""
    windows = [
        np.frombuffer(data, dtype="<u8", offset=shift, count=(len(data) - shift) // 8)
        for shift in range(min(8, len(data)))
    ]
    return np.unique(np.concatenate(windows)) if windows else np.empty(0, dtype=np.uint64)


def labels(found: Iterable[Found]) -> set[str]:
    return {f.label for f in found}
