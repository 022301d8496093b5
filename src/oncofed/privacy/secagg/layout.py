"""What a site's securely aggregated message holds: named segments of numbers, each with the
ring and fixed-point scale it is encoded in. Both sides derive a layout from the spec alone,
never from a site's data, so its shape tells nothing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from oncofed.privacy.secagg.errors import EncodingError

WIDE_LIMBS = 4
"""Analyses and small vectors: integers modulo 2**256."""
WIDE_FRACTION_BITS = 96
"""Fixed-point bits of a real number in the wide ring (absolute resolution 1.3e-29)."""
NARROW_LIMBS = 1
"""Model updates: integers modulo 2**64, so a masked update is twice a float32 one."""


@dataclass(frozen=True)
class Segment:
    """One named block of a site's message: ``shape`` numbers, encoded modulo
    ``2 ** (64 * limbs)`` with ``fraction_bits`` binary digits after the point (0: exact
    integers, such as counts)."""

    shape: tuple[int, ...]
    limbs: int = WIDE_LIMBS
    fraction_bits: int = WIDE_FRACTION_BITS

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def count(*shape: int) -> Segment:
    """Exact non-negative integers (counts), in the wide ring."""
    return Segment(tuple(shape), WIDE_LIMBS, 0)


def real(*shape: int) -> Segment:
    """Real numbers in the wide ring: sums of them are exact to 1e-28 for any magnitude a
    float64 statistic of patients can reach."""
    return Segment(tuple(shape), WIDE_LIMBS, WIDE_FRACTION_BITS)


def model(shape: tuple[int, ...], fraction_bits: int) -> Segment:
    """A model tensor's weighted update in the narrow ring, with the job's scale."""
    return Segment(tuple(shape), NARROW_LIMBS, fraction_bits)


Layout = Mapping[str, Segment]
"""Segments by name, in the order they are encoded and masked."""

SITES = "sites"
"""The count segment of every layout: each site puts 1 there, so the unmasked sum must equal
the number of survivors, which tells whether the masks cancelled."""


def check_layout(layout: Layout) -> None:
    """``EncodingError`` unless ``layout`` holds ``sites`` as a single count."""
    if layout.get(SITES) != count():
        raise EncodingError(f"a secure layout needs a {SITES!r} segment that is count()")
