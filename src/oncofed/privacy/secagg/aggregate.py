"""The orchestrator's running sum of masked inputs, and its unmasking (Bonawitz et al. 2017,
section 4, round 4): no I/O, bounded memory.

Sum over survivors u of y_u = sum x_u + sum_u PRG(b_u) + sum over survivors u and dropped d of
sign(u, d) PRG(s_ud), since the pairwise masks between survivors cancel. The shares rebuild
each b_u and each dropped site's mask key (hence s_ud); the masks are regenerated chunk by
chunk and subtracted, and each chunk decoded in place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from oncofed.privacy.secagg.codec import MaskedFile
from oncofed.privacy.secagg.crypto import agree, pair_seed, pair_sign
from oncofed.privacy.secagg.encoding import decode
from oncofed.privacy.secagg.errors import ProtocolError, ReconstructionError, SumMismatch
from oncofed.privacy.secagg.layout import SITES, Layout, check_layout
from oncofed.privacy.secagg.ring import LIMB, accumulate, add_masks, chunks
from oncofed.privacy.secagg.shamir import combine, share_value
from oncofed.wire.secagg import MaskedHeader, Roster, RoundContext, Survivors, UnmaskShares

Masks = list[tuple[bytes, int]]


class MaskedSum:
    """The sum of a round's masked inputs modulo each segment's ring, one segment held once.

    ``add`` folds in one site's masked input a chunk at a time; ``unmask`` removes the masks
    and returns the decoded sum, after which the object is spent. An input that fails
    part-way leaves the sum unusable; rebuild it from the stored inputs.
    """

    def __init__(self, context: RoundContext, layout: Layout) -> None:
        check_layout(layout)
        self.context, self.layout = context, layout
        self.sites: list[str] = []
        self._totals = {
            name: np.zeros((segment.size, segment.limbs), dtype=LIMB)
            for name, segment in layout.items()
        }
        self._state = "open"

    def add(self, source: Path | bytes) -> MaskedHeader:
        """Fold in one masked input (a file or payload); its header, for the caller to check
        the site against the sender."""
        self._require_open()
        with MaskedFile(source, self.layout) as masked:
            header = masked.header
            if header.context != self.context:
                raise ProtocolError(
                    f"the masked input of site {header.site!r} is for another round"
                )
            if header.site in self.sites:
                raise ProtocolError(f"site {header.site!r} sent a second masked input")
            try:
                for name, start, piece in masked.pieces():
                    accumulate(self._totals[name][start : start + len(piece)], piece, 1)
            except BaseException:
                self._state = "broken"
                raise
        self.sites.append(header.site)
        return header

    def unmask(
        self, roster: Roster, survivors: Survivors, replies: Iterable[UnmaskShares]
    ) -> dict[str, np.ndarray]:
        """The decoded sum over the survivors: int64 counts, float64 reals and model tensors,
        each of its segment's shape. Nothing changes until every mask is recovered, so after
        a ``ThresholdError`` it may be called again once more replies came in."""
        self._require_open()
        if sorted(self.sites) != survivors.survivors:
            raise ProtocolError(
                f"the sum holds the inputs of {sorted(self.sites)}, but the survivor list "
                f"names {survivors.survivors}"
            )
        masks = removal_masks(self.context, roster, survivors, replies)
        self._state = "spent"
        expected = len(survivors.survivors)
        indices = {name: index for index, name in enumerate(self.layout)}
        try:
            counted: np.ndarray | None = self._unmask_segment(SITES, indices[SITES], masks)
        except SumMismatch:  # a count out of any range: the masks did not cancel
            counted = None
        if counted is None or counted.item() != expected:
            found = "out of range" if counted is None else counted.item()
            raise SumMismatch(
                f"the {SITES!r} count of the sum is {found}, not the {expected} survivors: the "
                "masks did not cancel (sites were sent different round contents or shares, or "
                "a site sent a wrong share); the round's sum is discarded"
            )
        return {
            name: counted if name == SITES else self._unmask_segment(name, index, masks)
            for name, index in indices.items()
        }

    def _unmask_segment(self, name: str, index: int, masks: Masks) -> np.ndarray:
        segment, total = self.layout[name], self._totals.pop(name)
        integer = segment.fraction_bits == 0
        if segment.limbs == 1:  # decoded in place: the segment is never held twice
            out = total.reshape(-1).view(np.int64 if integer else np.float64)
        else:
            out = np.empty(segment.size, dtype=np.int64 if integer else np.float64)
        for start, stop in chunks(segment):
            piece = total[start:stop]
            add_masks(piece, index, start, masks)
            out[start:stop] = decode(name, segment, piece)
        return out.reshape(segment.shape)

    def _require_open(self) -> None:
        if self._state != "open":
            raise ProtocolError(f"this sum is {self._state}; build a new one from the inputs")


def removal_masks(
    context: RoundContext, roster: Roster, survivors: Survivors, replies: Iterable[UnmaskShares]
) -> Masks:
    """(seed, sign) of every mask left in the survivors' sum, negated: -PRG(b_u) for each
    survivor u, -sign(u, d) PRG(s_ud) for each survivor u and dropped site d."""
    replies = _checked(roster, survivors, replies)

    def rebuild(site: str, kind: Callable[[UnmaskShares], dict[str, bytes]], what: str) -> bytes:
        shares = {
            roster.position(reply.sender): share_value(kind(reply)[site], reply.sender)
            for reply in replies
        }
        return combine(shares, roster.threshold, what)

    masks = [
        (rebuild(site, _self_masks, f"site {site!r}'s self-mask seed"), -1)
        for site in survivors.survivors
    ]
    for dropped in survivors.dropped:
        what = f"site {dropped!r}'s mask key"
        key = X25519PrivateKey.from_private_bytes(rebuild(dropped, _mask_keys, what))
        if key.public_key().public_bytes_raw() != roster.advert(dropped).mask_key:
            raise ReconstructionError(
                f"the shares of {what} rebuild another key than it published: at least one "
                "site sent a wrong share; the round's sum cannot be unmasked"
            )
        for site in survivors.survivors:
            secret = agree(key, roster.advert(site).mask_key, site)
            masks.append((pair_seed(context, site, dropped, secret), -pair_sign(site, dropped)))
    return masks


def _self_masks(reply: UnmaskShares) -> dict[str, bytes]:
    return reply.self_mask


def _mask_keys(reply: UnmaskShares) -> dict[str, bytes]:
    return reply.mask_key


def _checked(
    roster: Roster, survivors: Survivors, replies: Iterable[UnmaskShares]
) -> list[UnmaskShares]:
    unknown = sorted(set(survivors.survivors + survivors.dropped) - set(roster.sites))
    if unknown:
        raise ProtocolError(f"the survivor list names sites outside the roster: {unknown}")
    checked: dict[str, UnmaskShares] = {}
    for reply in replies:
        if reply.sender not in survivors.survivors or reply.sender in checked:
            raise ProtocolError(f"unexpected or repeated unmask shares from {reply.sender!r}")
        if (
            sorted(reply.self_mask) != survivors.survivors
            or sorted(reply.mask_key) != survivors.dropped
        ):
            raise ProtocolError(
                f"site {reply.sender!r} sent shares for other sites than the survivor list names"
            )
        checked[reply.sender] = reply
    return list(checked.values())
