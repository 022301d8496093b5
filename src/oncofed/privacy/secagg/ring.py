"""Arithmetic modulo 2**(64 L) on arrays of L little-endian uint64 limbs, and the masks: a
ChaCha20 keystream (RFC 8439) from a 32-byte seed, seekable to any element.

An element of a segment with L limbs is 8 L bytes of keystream, read as L little-endian
uint64 limbs (least significant first): element e of segment k under seed s is bytes
8 L e .. 8 L (e + 1) of ChaCha20(key = s, nonce = k as 12 bytes little-endian, counter 0).
The 32-bit block counter bounds a segment's mask to 256 GiB (the library refuses beyond).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from oncofed.privacy.secagg.layout import Segment

LIMB = np.dtype("<u8")
BLOCK = 64
"""Bytes per ChaCha20 block."""
CHUNK_BYTES = 1 << 23
"""Elements are masked, summed and decoded 8 MiB at a time."""
_ZEROS = bytes(CHUNK_BYTES)


def chunks(segment: Segment) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` element ranges covering ``segment`` in pieces of ~8 MiB."""
    step = max(1, CHUNK_BYTES // (8 * segment.limbs))
    for start in range(0, segment.size, step):
        yield start, min(start + step, segment.size)


def keystream(seed: bytes, index: int, start: int, out: np.ndarray) -> None:
    """Fill ``out`` (shape ``(m, L)``, C-contiguous) with mask elements ``start .. start + m``
    of segment ``index``: ChaCha20 encrypting zeros gives the keystream itself."""
    block, skip = divmod(start * 8 * out.shape[1], BLOCK)
    nonce = block.to_bytes(4, "little") + index.to_bytes(12, "little")
    encryptor = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor()
    encryptor.update(_zeros(skip))  # from the block's start to the first element
    encryptor.update_into(_zeros(out.nbytes), out.data.cast("B"))


def _zeros(length: int) -> memoryview:
    return memoryview(_ZEROS)[:length] if length <= len(_ZEROS) else memoryview(bytes(length))


def accumulate(total: np.ndarray, term: np.ndarray, sign: int) -> None:
    """``total += sign * term`` modulo 2**(64 L), in place, for ``(m, L)`` limb arrays."""
    if total.shape[1] == 1:  # numpy's uint64 arithmetic already wraps modulo 2**64
        if sign > 0:
            np.add(total, term, out=total)
        else:
            np.subtract(total, term, out=total)
        return
    carry = np.zeros(total.shape[0], dtype=bool)
    for limb in range(total.shape[1]):
        old, other = total[:, limb], term[:, limb]
        if sign > 0:
            new = old + other
            wrapped = new < old
            new += carry
            wrapped |= carry & (new == 0)
        else:
            new = old - other
            wrapped = new > old
            wrapped |= carry & (new == 0)
            new -= carry
        total[:, limb] = new
        carry = wrapped


def add_masks(
    total: np.ndarray, index: int, start: int, masks: Iterable[tuple[bytes, int]]
) -> None:
    """Add ``sign * PRG(seed)`` for every ``(seed, sign)`` to elements ``start ..`` of
    segment ``index``, held in ``total`` (shape ``(m, L)``)."""
    scratch = np.empty_like(total)
    for seed, sign in masks:
        keystream(seed, index, start, scratch)
        accumulate(total, scratch, sign)
