"""Fixed-point encoding of a segment's values as integers modulo 2**(64 L).

A value x becomes q = round(x * 2**F), stored modulo 2**(64 L) (negative q as two's
complement); a sum decodes to its signed representative over 2**F. With n sites, each site's
|q| <= 2**m, m = 64 L - 1 - NOISE_HEADROOM_BITS - ceil(log2 n), so the sum stays below
2**(64 L - 1 - NOISE_HEADROOM_BITS) and never wraps, with room left for the noise shares
differential privacy will add. Counts (F = 0) are exact, and their sums fit int64.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from oncofed.privacy.secagg.errors import EncodingError, SumMismatch
from oncofed.privacy.secagg.layout import NARROW_LIMBS, Segment
from oncofed.privacy.secagg.ring import LIMB

NOISE_HEADROOM_BITS = 4
"""Bits of every ring kept free for differential privacy's noise."""
MIN_MODEL_FRACTION_BITS = 24
"""Fewest fraction bits of a model segment: float32's own precision."""
COUNT_BITS = 62
"""Sums of counts stay below 2**62, so they decode to int64."""


def _site_bits(bits: int, sites: int) -> int:
    return bits - (sites - 1).bit_length()  # ceil(log2 n) bits for the sum over n sites


def magnitude_bits(segment: Segment, sites: int) -> int:
    """m: each of ``sites`` sites may encode integers of magnitude up to 2**m."""
    bits = 64 * segment.limbs - 1 - NOISE_HEADROOM_BITS
    if segment.fraction_bits == 0:
        bits = min(bits, COUNT_BITS)
    return _site_bits(bits, sites)


def model_fraction_bits(sites: int, max_weight: float, clip_norm: float) -> int:
    """The narrow ring's scale F for a job: the largest F with 2 * B * 2**F <= 2**m, where
    B = max_weight * clip_norm bounds each site's weighted update element (the factor 2 leaves
    room for rounding at the bound). ``EncodingError`` when F < 24: no safe encoding exists."""
    bound = max_weight * clip_norm
    if not (math.isfinite(bound) and bound > 0):
        raise EncodingError("max_weight * clip_norm must be a positive finite number")
    ring = _site_bits(64 * NARROW_LIMBS - 1 - NOISE_HEADROOM_BITS, sites)
    mantissa, exponent = math.frexp(bound)  # bound = mantissa * 2**exponent, 0.5 <= mantissa < 1
    bits = ring - exponent - 1 + (mantissa == 0.5)
    if bits < MIN_MODEL_FRACTION_BITS:
        raise EncodingError(
            f"no safe encoding for {sites} sites with updates up to {bound:g} per element: "
            f"only {bits} fraction bits remain, {MIN_MODEL_FRACTION_BITS} are needed; use fewer "
            "sites, smaller weights or a smaller clip norm"
        )
    return bits


def encode(name: str, segment: Segment, values: npt.ArrayLike, sites: int) -> np.ndarray:
    """``values`` as ``(size, limbs)`` uint64 limbs; ``EncodingError`` naming the segment for a
    wrong shape, a value that is not finite, a count that is not a non-negative integer, or a
    magnitude whose sum over ``sites`` sites could wrap."""
    array = np.asarray(values)
    if array.shape != segment.shape:
        raise EncodingError(
            f"segment {name!r}: shape {array.shape}, the layout says {segment.shape}"
        )
    if array.dtype.kind not in "biuf":
        raise EncodingError(f"segment {name!r}: {array.dtype} values are not numbers")
    flat = array.reshape(-1)
    bits = magnitude_bits(segment, sites)
    if segment.fraction_bits == 0:
        out = np.zeros((segment.size, segment.limbs), dtype=LIMB)
        out[:, 0] = _counts(name, flat, bits)
        return out
    real = flat.astype(np.float64)
    if not np.isfinite(real).all():
        raise EncodingError(f"segment {name!r}: contains NaN or infinite values")
    limit = math.ldexp(1.0, bits - segment.fraction_bits)  # so |round(x 2**F)| <= 2**m
    largest = float(np.abs(real).max()) if real.size else 0.0
    if largest > limit:
        raise EncodingError(
            f"segment {name!r}: a value of magnitude {largest:g} could make the sum over "
            f"{sites} sites wrap (the limit is {limit:g})"
        )
    scaled = np.rint(np.ldexp(real, segment.fraction_bits))
    if segment.limbs == 1:
        return scaled.astype(np.int64).view(LIMB).reshape(-1, 1)
    return limbs_of(scaled, segment.limbs)


def limbs_of(whole: np.ndarray, limbs: int) -> np.ndarray:
    """Whole float64 numbers (|q| < 2**(64 L - 1)) as two's complement ``(m, L)`` limbs: a
    float64 is a 53-bit integer times a power of two, so it lands in at most two limbs."""
    mantissa, exponent = np.frexp(np.abs(whole))  # |q| = mantissa * 2**exponent
    digits = np.ldexp(mantissa, 53).astype(np.uint64)  # |q| = digits * 2**(exponent - 53)
    shift = exponent.astype(np.int64) - 53
    out = np.zeros((whole.size, limbs), dtype=LIMB)
    rows = np.arange(whole.size)
    low = shift <= 0  # |q| < 2**53: whole, so exactly digits >> -shift
    out[low, 0] = digits[low] >> (-shift[low]).astype(np.uint64)
    high = ~low
    limb, offset = np.divmod(shift[high], 64)
    part = digits[high]
    out[rows[high], limb] = part << offset.astype(np.uint64)
    spill = (offset > 11) & (limb + 1 < limbs)  # the 53 digits cross into the next limb
    out[rows[high][spill], limb[spill] + 1] = part[spill] >> (64 - offset[spill]).astype(np.uint64)
    negative = whole < 0
    if negative.any():
        out[negative] = _negated(out[negative])
    return out


def _negated(limbs: np.ndarray) -> np.ndarray:
    """``-x`` modulo 2**(64 L) of ``(m, L)`` limbs: the complement plus one."""
    out = ~limbs
    carry = np.ones(out.shape[0], dtype=bool)
    for limb in range(out.shape[1]):
        out[:, limb] += carry
        carry &= out[:, limb] == 0
    return out


def _counts(name: str, flat: np.ndarray, bits: int) -> np.ndarray:
    if flat.dtype.kind == "f":
        integral = np.isfinite(flat).all() and (np.floor(flat) == flat).all()
        if not integral or (flat < 0).any():
            raise EncodingError(f"segment {name!r}: counts must be non-negative integers")
    elif flat.dtype.kind == "i" and (flat < 0).any():
        raise EncodingError(f"segment {name!r}: counts must be non-negative integers")
    if (flat > 2**bits).any():
        raise EncodingError(
            f"segment {name!r}: a count above 2**{bits} could make the sum over the round's "
            "sites overflow"
        )
    return flat.astype(LIMB)


def decode(name: str, segment: Segment, total: np.ndarray) -> np.ndarray:
    """Flat values of ``(m, limbs)`` summed limbs: int64 counts, float64 reals (the exact sums,
    correctly rounded). ``SumMismatch`` for a count sum no honest sites can give."""
    fraction = segment.fraction_bits
    if fraction == 0:
        low = total[:, 0]
        if total[:, 1:].any() or (low >> 63).any():
            raise SumMismatch(
                f"segment {name!r}: a count sum outside what the round's sites can add up to; "
                "a site sent values outside the encoding's bounds"
            )
        return low.astype(np.int64)
    if segment.limbs == 1:
        return np.ldexp(total[:, 0].view(np.int64).astype(np.float64), -fraction)
    # exact integers, divided with one correct rounding (once per round, at the orchestrator)
    width, data, scale = 8 * segment.limbs, total.tobytes(), 1 << fraction
    sums = (
        int.from_bytes(data[at : at + width], "little", signed=True)
        for at in range(0, len(data), width)
    )
    return np.array([value / scale for value in sums], dtype=np.float64)
