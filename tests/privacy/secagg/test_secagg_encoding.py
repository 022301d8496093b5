"""Fixed-point encoding: exact where it must be, and nothing that could wrap gets in."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oncofed.privacy.secagg import (
    MIN_MODEL_FRACTION_BITS,
    NOISE_HEADROOM_BITS,
    EncodingError,
    Segment,
    SumMismatch,
    count,
    magnitude_bits,
    model,
    model_fraction_bits,
    real,
    threshold_for,
)
from oncofed.privacy.secagg.encoding import decode, encode, limbs_of
from oncofed.privacy.secagg.ring import accumulate


def summed(segment_values: list[np.ndarray], segment: Segment, sites: int) -> np.ndarray:
    total = np.zeros((segment.size, segment.limbs), dtype=np.uint64)
    for values in segment_values:
        accumulate(total, encode("x", segment, values, sites), 1)
    return decode("x", segment, total)


def test_counts_are_exact_int64() -> None:
    rng = np.random.default_rng(0)
    segment = count(6)
    values = [rng.integers(0, 2**40, size=6) for _ in range(5)]
    result = summed(values, segment, 5)
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result, np.sum(values, axis=0))
    assert summed([np.array([2.0, 0.0]), np.array([True, True])], count(2), 2).tolist() == [3, 1]


def test_reals_sum_to_the_correctly_rounded_exact_sum() -> None:
    rng = np.random.default_rng(1)
    values = [rng.normal(size=50) * 10.0 ** rng.integers(-8, 9, size=50) for _ in range(12)]
    values.append(-values[0])  # cancellation, where float64 summation goes wrong
    result = summed(values, real(50), 13)
    for i, got in enumerate(result):
        assert got == math.fsum(float(v[i]) for v in values)


def test_model_values_are_within_half_a_unit_of_the_last_fraction_bit() -> None:
    rng = np.random.default_rng(2)
    bits = 30
    values = [rng.uniform(-3, 3, size=(4, 4)) for _ in range(7)]
    result = summed(values, model((4, 4), bits), 7)
    assert np.abs(result.reshape(4, 4) - np.sum(values, axis=0)).max() <= 7 * 2.0 ** -(bits + 1)


@pytest.mark.parametrize(
    ("segment", "values", "message"),
    [
        (real(2), np.array([1.0, np.nan]), "NaN or infinite"),
        (model((2,), 30), np.array([np.inf, 0.0]), "NaN or infinite"),
        (count(2), np.array([1, -1]), "non-negative integers"),
        (count(2), np.array([1.5, 2.0]), "non-negative integers"),
        (count(1), np.array([2**60]), "could make the sum over the round's sites overflow"),
        (real(1), np.array([1e300]), "could make the sum over 32 sites wrap"),
        (model((1,), 40), np.array([2.0**15]), "could make the sum over 32 sites wrap"),
        (real(2), np.array([1.0, 2.0, 3.0]), r"shape \(3,\), the layout says \(2,\)"),
        (real(1), np.array(["1"]), "are not numbers"),
    ],
)
def test_values_that_cannot_be_encoded_safely_are_refused(
    segment: Segment, values: np.ndarray, message: str
) -> None:
    with pytest.raises(EncodingError, match=message) as raised:
        encode("stats", segment, values, 32)
    assert "segment 'stats'" in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_the_largest_allowed_values_of_every_site_sum_without_wrapping() -> None:
    for segment in (count(1), real(1), model((1,), 20)):
        for sites in (2, 3, 32, 33):
            bits = magnitude_bits(segment, sites)
            largest = math.ldexp(1.0, bits - segment.fraction_bits)
            sign = 1 if segment.fraction_bits == 0 else -1
            result = summed([np.array([sign * largest])] * sites, segment, sites)
            assert result[0] == sign * sites * largest
            ring_bits = 64 * segment.limbs - 1 - NOISE_HEADROOM_BITS
            assert sites * 2**bits <= 2**ring_bits  # the headroom for noise is untouched
            with pytest.raises(EncodingError):
                encode("x", segment, np.array([2 * largest]), sites)


def test_model_fraction_bits_leave_no_room_to_wrap() -> None:
    assert model_fraction_bits(32, 1.0, 1.0) == 53  # 63 - 4 headroom - 5 for 32 sites - 1
    assert model_fraction_bits(4, 1.0, 1.0) == 56
    assert model_fraction_bits(32, 1000.0, 1.0) == 43
    for sites, weight, clip in [(32, 1.0, 1.0), (10, 250.0, 0.3), (200, 7.0, 5.0)]:
        bits = model_fraction_bits(sites, weight, clip)
        assert 2 * weight * clip * 2.0**bits <= 2.0 ** magnitude_bits(model((1,), bits), sites)
        assert 2 * weight * clip * 2.0 ** (bits + 1) > 2.0 ** magnitude_bits(model((1,), 1), sites)
    with pytest.raises(EncodingError, match="no safe encoding for 32 sites"):
        model_fraction_bits(32, 1e9, 1.0)
    assert model_fraction_bits(32, 2.0**29, 1.0) == MIN_MODEL_FRACTION_BITS
    with pytest.raises(EncodingError, match="positive finite"):
        model_fraction_bits(3, 0.0, 1.0)


@pytest.mark.parametrize(
    ("sites", "fraction", "threshold"),
    [(3, 2 / 3, 3), (10, 2 / 3, 7), (32, 2 / 3, 22), (2, 0.5, 2), (4, 0.5, 3), (5, 1.0, 5)],
)
def test_threshold_is_above_the_fraction_and_a_majority(
    sites: int, fraction: float, threshold: int
) -> None:
    assert threshold_for(sites, fraction) == threshold


def test_a_count_sum_no_honest_sites_can_give_is_refused() -> None:
    """A site may skip the encoder and send anything: a count sum that is negative or beyond
    int64 is reported, never decoded as a number."""
    for high, low in [(0, 2**63), (1, 0)]:
        total = np.array([[low, high, 0, 0]], dtype=np.uint64)
        with pytest.raises(SumMismatch, match="segment 'n': a count sum outside"):
            decode("n", count(1), total)


def test_wide_limbs_are_the_twos_complement_of_each_whole_number() -> None:
    """The vectorised limbs equal Python's exact integers, for magnitudes from 0 to 2**180,
    signs, and the edges of a float64's 53 digits and of each 64-bit limb."""
    rng = np.random.default_rng(5)
    edges = [0.0, 1.0, 2.0**52, 2.0**53, 2.0**53 + 2, 2.0**63, 2.0**64, 2.0**127 + 2.0**80]
    drawn = np.rint(np.ldexp(rng.uniform(0.5, 1.0, 2000), rng.integers(0, 181, 2000)))
    whole = np.concatenate([edges, drawn])
    whole = np.concatenate([whole, -whole])
    limbs = limbs_of(whole, 4)
    exact = b"".join(int(q).to_bytes(32, "little", signed=True) for q in whole.tolist())
    assert limbs.tobytes() == exact
