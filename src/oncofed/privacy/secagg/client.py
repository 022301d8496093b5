"""A site's part in one secure aggregation round (Bonawitz et al. 2017, CCS, section 4), as a
state machine: ``advertise``, ``share``, ``mask``, ``unmask``, each once and in that order.

A client may be made for a round before it opens (``RoundId``: its keys and shares are made
while the job's previous round finishes); the round's contents are bound into its masks when
it masks (``RoundContext``), and its survivor list must be signed for those same contents.

The site trusts nothing the orchestrator sends without checking it: every peer's keys are
signed with an identity key it pinned, the threshold and number of sites meet its policy, the
survivor list is signed by the orchestrator, and it never releases both kinds of share for
one peer. Errors raised by the edge's ``peers.pin`` and ``releases.record`` propagate as they
are. A step that raises ends the site's part in the round.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from oncofed.privacy.secagg.crypto import (
    SEED_BYTES,
    advert_payload,
    agree,
    pair_seed,
    pair_sign,
    seal,
    share_key,
    unseal,
    verify_advert,
    verify_survivors,
)
from oncofed.privacy.secagg.encoding import encode
from oncofed.privacy.secagg.errors import (
    AuthenticationError,
    EncodingError,
    ProtocolError,
    ThresholdError,
)
from oncofed.privacy.secagg.identity import public_bytes
from oncofed.privacy.secagg.layout import SITES, Layout, check_layout
from oncofed.privacy.secagg.ring import add_masks, chunks
from oncofed.privacy.secagg.shamir import share_bytes, share_value, split, threshold_for
from oncofed.wire.secagg import (
    SHARE_BYTES,
    Inbox,
    KeyAdvert,
    Roster,
    RoundContext,
    RoundId,
    SealedShare,
    ShareBundle,
    Survivors,
    UnmaskShares,
)

ShareKind = Literal["self_mask", "mask_key"]
Step = Literal["advertise", "share", "mask", "unmask", "done", "ended"]


class Peers(Protocol):
    """The edge's pinned identity keys of other sites."""

    def pin(self, keys: Mapping[str, bytes]) -> None:
        """Accept each key (raw Ed25519) as its site's identity key, or raise to refuse them
        all."""


class Releases(Protocol):
    """The edge's persistent record of the shares it released."""

    def record(self, job_id: str, round: int, releases: Mapping[str, ShareKind]) -> None:
        """Note that this site releases, for each peer, the share of the kind given, in this
        round; raise (recording none) if the other kind was ever released for one of them."""


@dataclass
class _Secrets:
    """The round's private keys and self-mask seed: never leave the site in the clear, and are
    dropped once the masked input is made."""

    mask_key: X25519PrivateKey
    share_key: X25519PrivateKey
    self_seed: bytes = b""


class SecAggClient:
    """One site, one round. ``min_sites`` and ``min_fraction`` are the site's policy: the
    fewest sites in a sum, and the fraction of them the threshold must exceed."""

    def __init__(
        self,
        round_id: RoundId,
        site: str,
        identity: Ed25519PrivateKey,
        *,
        peers: Peers,
        releases: Releases,
        min_sites: int,
        min_fraction: float,
    ) -> None:
        self.round_id, self.site = round_id, site
        self.context = round_id if isinstance(round_id, RoundContext) else None
        self._identity, self._peers, self._releases = identity, peers, releases
        self._min_sites, self._min_fraction = min_sites, min_fraction
        self._step: Step = "advertise"
        self._secrets: _Secrets | None = _Secrets(
            X25519PrivateKey.generate(), X25519PrivateKey.generate()
        )
        self._advert: KeyAdvert | None = None
        self._roster: Roster | None = None
        self._held: dict[str, tuple[int, int]] = {}  # sender -> (self-mask, mask-key) share

    def advertise(self) -> KeyAdvert:
        """Two fresh X25519 public keys, signed with the site's identity key."""
        self._begin("advertise")
        secrets = self._live_secrets()
        mask_key = secrets.mask_key.public_key().public_bytes_raw()
        share = secrets.share_key.public_key().public_bytes_raw()
        signature = self._identity.sign(advert_payload(self.round_id, self.site, mask_key, share))
        self._advert = KeyAdvert(
            site=self.site, mask_key=mask_key, share_key=share, signature=signature
        )
        self._step = "share"
        return self._advert

    def share(self, roster: Roster) -> ShareBundle:
        """Check the roster, then Shamir-share a fresh self-mask seed and the mask key, sealing
        each peer's pair of shares for it alone."""
        self._begin("share")
        secrets = self._live_secrets()
        self._check_roster(roster)
        secrets.self_seed = os.urandom(SEED_BYTES)
        positions = range(1, len(roster.adverts) + 1)
        seeds = split(secrets.self_seed, roster.threshold, positions)
        keys = split(secrets.mask_key.private_bytes_raw(), roster.threshold, positions)
        sealed = []
        for position, advert in enumerate(roster.adverts, start=1):
            if advert.site == self.site:
                self._held[self.site] = (seeds[position], keys[position])
                continue
            box = self._box_key(secrets, advert)
            plain = share_bytes(seeds[position]) + share_bytes(keys[position])
            ciphertext = seal(box, self.round_id, self.site, advert.site, plain)
            sealed.append(
                SealedShare(sender=self.site, recipient=advert.site, ciphertext=ciphertext)
            )
        self._roster = roster
        self._step = "mask"
        return ShareBundle(sender=self.site, shares=sealed)

    def mask(
        self,
        inbox: Inbox,
        values: Mapping[str, np.ndarray],
        layout: Layout,
        context: RoundContext | None = None,
    ) -> dict[str, np.ndarray]:
        """y = encode(x) + PRG(b) + sum over the other sites v that shared keys of
        sign(u, v) PRG(s_uv), per segment modulo its ring; uint64 arrays of shape
        ``segment.shape + (limbs,)``. ``context`` is the round as opened (the one the client
        was made with, when omitted): s_uv binds what it announced."""
        self._begin("mask")
        context = self._bind(context)
        secrets, roster = self._live_secrets(), self._ready_roster()
        if inbox.recipient != self.site:
            raise ProtocolError(f"an inbox for site {inbox.recipient!r} was sent to {self.site!r}")
        for sealed in inbox.shares:
            if sealed.sender not in roster.sites:
                raise ProtocolError(f"a share from {sealed.sender!r}, which is not in the round")
            box = self._box_key(secrets, roster.advert(sealed.sender))
            plain = unseal(box, self.round_id, sealed.sender, self.site, sealed.ciphertext)
            self._held[sealed.sender] = (
                share_value(plain[:SHARE_BYTES], sealed.sender),
                share_value(plain[SHARE_BYTES:], sealed.sender),
            )
        self._enough(len(self._held), roster, "shared their keys")
        encoded = self._encode(values, layout, len(roster.adverts))
        masks = [(secrets.self_seed, 1)]
        for peer in sorted(self._held):
            if peer != self.site:
                secret = agree(secrets.mask_key, roster.advert(peer).mask_key, peer)
                seed = pair_seed(context, self.site, peer, secret)
                masks.append((seed, pair_sign(self.site, peer)))
        masked = {}
        for index, (name, segment) in enumerate(layout.items()):
            for start, stop in chunks(segment):
                add_masks(encoded[name][start:stop], index, start, masks)
            masked[name] = encoded[name].reshape(*segment.shape, segment.limbs)
        self._secrets = None  # the shares held by the peers are all that is left of them
        self._step = "unmask"
        return masked

    def unmask(self, survivors: Survivors, orchestrator_key: bytes) -> UnmaskShares:
        """For each survivor the share of its self-mask seed, for each dropped site the share of
        its mask key; only when the orchestrator signed the list and it fits what this site
        saw. Each release is recorded before it is made."""
        self._begin("unmask")
        roster = self._ready_roster()
        verify_survivors(self._bind(None), survivors, orchestrator_key)
        shared, alive = set(self._held), set(survivors.survivors)
        if not alive <= shared:
            raise ProtocolError(
                f"survivors {sorted(alive - shared)} did not share keys with this site"
            )
        if set(survivors.dropped) != shared - alive:
            raise ProtocolError(
                f"the dropped sites {survivors.dropped} are not those that shared keys with "
                f"this site but are not survivors, {sorted(shared - alive)}"
            )
        if self.site not in alive:
            raise ProtocolError(
                f"site {self.site!r} sent its masked input, yet is listed as dropped"
            )
        self._enough(len(alive), roster, "survive")
        releases: dict[str, ShareKind] = dict.fromkeys(survivors.survivors, "self_mask")
        releases |= dict.fromkeys(survivors.dropped, "mask_key")
        self._releases.record(self.round_id.job_id, self.round_id.round, releases)
        self._step = "done"
        return UnmaskShares(
            sender=self.site,
            self_mask={peer: share_bytes(self._held[peer][0]) for peer in survivors.survivors},
            mask_key={peer: share_bytes(self._held[peer][1]) for peer in survivors.dropped},
        )

    def _begin(self, step: Step) -> None:
        if self._step != step:
            raise ProtocolError(
                f"{step} is out of order: site {self.site!r} is at step {self._step!r} of round "
                f"{self.round_id.round} of job {self.round_id.job_id}"
            )
        self._step = "ended"  # until the step succeeds

    def _bind(self, context: RoundContext | None) -> RoundContext:
        """The round's context: ``context`` when given (it must be this client's round and
        never change once bound), else the one bound before."""
        if context is None:
            if self.context is None:
                raise ProtocolError("the round's announced contents were never given")
            return self.context
        if (context.job_id, context.round) != (self.round_id.job_id, self.round_id.round):
            raise ProtocolError(
                f"round {context.round} of job {context.job_id} is not this client's round"
            )
        if self.context is not None and self.context != context:
            raise ProtocolError("the round's announced contents changed")
        self.context = context
        return context

    def _live_secrets(self) -> _Secrets:
        if self._secrets is None:
            raise ProtocolError("this site's round secrets are gone")
        return self._secrets

    def _ready_roster(self) -> Roster:
        if self._roster is None:
            raise ProtocolError("no roster was accepted")
        return self._roster

    def _check_roster(self, roster: Roster) -> None:
        sites = roster.sites
        if self.site not in sites or roster.advert(self.site) != self._advert:
            raise ProtocolError(
                f"the roster does not hold the advert of site {self.site!r} unchanged"
            )
        if roster.identities[self.site] != public_bytes(self._identity):
            raise AuthenticationError(f"the roster gives site {self.site!r} another identity key")
        if len(sites) < self._min_sites:
            raise ThresholdError(
                f"the round has {len(sites)} sites; this site's policy needs at least "
                f"{self._min_sites} (min_secure_sites)"
            )
        needed = threshold_for(len(sites), self._min_fraction)
        if roster.threshold < needed:
            raise ThresholdError(
                f"threshold {roster.threshold} of {len(sites)} sites is too low: this site's "
                f"policy needs at least {needed} (min_secure_threshold {self._min_fraction})"
            )
        keys = [key for advert in roster.adverts for key in (advert.mask_key, advert.share_key)]
        if len(set(keys)) != len(keys):
            raise ProtocolError("two adverts of the roster carry the same key: one was copied")
        peers = [advert for advert in roster.adverts if advert.site != self.site]
        self._peers.pin({advert.site: roster.identities[advert.site] for advert in peers})
        for advert in peers:
            verify_advert(self.round_id, advert, roster.identities[advert.site])

    def _box_key(self, secrets: _Secrets, peer: KeyAdvert) -> bytes:
        secret = agree(secrets.share_key, peer.share_key, peer.site)
        return share_key(self.round_id, self.site, peer.site, secret)

    def _enough(self, count: int, roster: Roster, what: str) -> None:
        needed = max(roster.threshold, self._min_sites)
        if count < needed:
            raise ThresholdError(
                f"only {count} of the round's {len(roster.adverts)} sites {what}; "
                f"{needed} are needed (threshold {roster.threshold}, this site's minimum "
                f"{self._min_sites}); the round cannot complete"
            )

    def _encode(
        self, values: Mapping[str, np.ndarray], layout: Layout, sites: int
    ) -> dict[str, np.ndarray]:
        check_layout(layout)
        missing, extra = sorted(set(layout) - set(values)), sorted(set(values) - set(layout))
        if missing or extra:
            raise EncodingError(
                f"values do not fit the layout: missing {missing}, unexpected {extra}"
            )
        if np.asarray(values[SITES]).tolist() != 1:
            raise EncodingError(f"segment {SITES!r} must hold 1: each site counts itself once")
        return {
            name: encode(name, segment, values[name], sites) for name, segment in layout.items()
        }
