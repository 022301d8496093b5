"""Ring arithmetic against Python integers, seekable masks, and pairwise masks cancelling."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

from oncofed.privacy.secagg.crypto import pair_seed, pair_sign
from oncofed.privacy.secagg.layout import count, model, real
from oncofed.privacy.secagg.ring import accumulate, add_masks, chunks, keystream
from tests.privacy.secagg.support import CONTEXT

TOP = 2**64 - 1


def as_ints(limbs: np.ndarray) -> list[int]:
    return [sum(int(limb) << (64 * i) for i, limb in enumerate(row)) for row in limbs]


@pytest.mark.parametrize("limbs", [1, 2, 4])
@pytest.mark.parametrize("sign", [1, -1])
def test_limb_arithmetic_is_integer_arithmetic_modulo_the_ring(limbs: int, sign: int) -> None:
    rng = np.random.default_rng(limbs)
    low = [1] + [0] * (limbs - 1)
    top_limb = [TOP] + [0] * (limbs - 1)  # carries out of the first limb
    edges = np.array([[0] * limbs, [TOP] * limbs, low, top_limb], dtype=np.uint64)
    random_rows = rng.integers(0, TOP, size=(50, limbs), dtype=np.uint64, endpoint=True)
    a = np.concatenate([edges, edges, random_rows])
    b = np.concatenate([edges, edges[::-1], random_rows[::-1]])
    total = a.copy()
    accumulate(total, b, sign)
    modulus = 2 ** (64 * limbs)
    expected = [(x + sign * y) % modulus for x, y in zip(as_ints(a), as_ints(b), strict=True)]
    assert as_ints(total) == expected


def mask(seed: bytes, index: int, start: int, count: int, limbs: int = 1) -> np.ndarray:
    out = np.empty((count, limbs), dtype=np.uint64)
    keystream(seed, index, start, out)
    return out


def test_masks_are_seekable_and_the_same_bytes_for_any_limb_count() -> None:
    seed = os.urandom(32)
    whole = mask(seed, 3, 0, 1000)
    for start, size in [(0, 1), (7, 9), (8, 64), (13, 987), (999, 1)]:
        np.testing.assert_array_equal(mask(seed, 3, start, size), whole[start : start + size])
    np.testing.assert_array_equal(mask(seed, 3, 5, 20, 4).reshape(-1), whole[20:100].reshape(-1))
    assert not np.array_equal(mask(seed, 4, 0, 1000), whole)  # each segment its own stream
    assert not np.array_equal(mask(os.urandom(32), 3, 0, 1000), whole)
    big = mask(seed, 3, 0, (1 << 20) + 5)  # beyond the shared zero buffer
    np.testing.assert_array_equal(big[:1000], whole)


def test_chunks_cover_a_segment_once_in_bounded_pieces() -> None:
    for segment in (count(), real(3, 5), model((1 << 21,), 30), real(300_000)):
        pieces = list(chunks(segment))
        assert pieces[0][0] == 0 and pieces[-1][1] == segment.size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
        assert all((stop - start) * 8 * segment.limbs <= 1 << 23 for start, stop in pieces)


@pytest.mark.parametrize("limbs", [1, 4])
def test_pairwise_masks_cancel_in_the_sum(limbs: int) -> None:
    sites = ["a", "b", "c", "d"]
    secrets = {(u, v): os.urandom(32) for u in sites for v in sites if u < v}
    seeds = {
        (u, v): pair_seed(CONTEXT, u, v, secrets[min(u, v), max(u, v)])
        for u in sites
        for v in sites
        if u != v
    }
    assert seeds["a", "b"] == seeds["b", "a"]
    total = np.zeros((1000, limbs), dtype=np.uint64)
    for u in sites:
        masked = np.zeros_like(total)
        add_masks(masked, 2, 0, [(seeds[u, v], pair_sign(u, v)) for v in sites if v != u])
        assert masked.any()
        accumulate(total, masked, 1)
    assert not total.any()
