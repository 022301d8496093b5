"""Messages of a secure aggregation round (Bonawitz et al. 2017), as JSON validated by pydantic.

Binary fields are standard base64 text without newlines, each of one exact size. A round's
phases, as the orchestrator sends them to a site in a ``SecureStep``:

======== ============================ =========================================
phase    the orchestrator sends       the site answers
======== ============================ =========================================
keys     (nothing)                    ``KeyAdvert``
shares   ``Roster``                   ``ShareBundle``
masked   ``Inbox``                    masked input (safetensors of uint64), its
                                      header carrying the next round's advert
unmask   ``Survivors``, next roster   ``UnmaskShares`` with the next round's
                                      ``ShareBundle``
======== ============================ =========================================

The next round's keys and shares ride on this round's last two phases, so once a job's first
secure round is through, each later round opens in its ``masked`` phase: two exchanges per
round instead of four. Keys and shares are bound to the job and round (``RoundId``); the
masks, to what the round announced as well (``RoundContext``), which is known only once the
round opens.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Literal

from pydantic import (
    ConfigDict,
    Field,
    model_validator,
)

from oncofed.wire.analysis import OwnEstimate
from oncofed.wire.base import Epsilon, Message, Sha256, base64_bytes
from oncofed.wire.spec import Name

KEY_BYTES = 32
"""X25519 and Ed25519 public keys."""
SIGNATURE_BYTES = 64
"""Ed25519 signatures."""
SHARE_BYTES = 66
"""One Shamir share: an element of the field of integers modulo 2**521 - 1, big-endian."""
NONCE_BYTES = 12
TAG_BYTES = 16
SEALED_BYTES = NONCE_BYTES + 2 * SHARE_BYTES + TAG_BYTES
"""A ChaCha20-Poly1305 box holding a site's two shares for one peer, nonce first."""
MAX_SITES = 256
"""Most sites in one round: a full mesh costs every site one mask per peer."""

Phase = Literal["keys", "shares", "masked", "unmask"]
SiteName = Name


Key = Annotated[bytes, *base64_bytes(size=KEY_BYTES)]
Signature = Annotated[bytes, *base64_bytes(size=SIGNATURE_BYTES)]
Share = Annotated[bytes, *base64_bytes(size=SHARE_BYTES)]
Sealed = Annotated[bytes, *base64_bytes(size=SEALED_BYTES)]
Sites = Annotated[list[SiteName], Field(max_length=MAX_SITES)]
SharesBySite = Annotated[dict[SiteName, Share], Field(max_length=MAX_SITES)]


class _Frozen(Message):
    """Immutable once validated: what was checked is what is used."""

    model_config = ConfigDict(frozen=True)


def _strictly_sorted(names: list[str], what: str) -> None:
    if any(a >= b for a, b in pairwise(names)):
        raise ValueError(f"{what} must be sorted by site name, each once")


class RoundId(_Frozen):
    """A round of a job: what its key adverts and sealed shares are bound to (they may be
    made before the round's contents are known)."""

    job_id: Name
    round: Annotated[int, Field(ge=0, le=1_000_000)]

    def following(self) -> RoundId:
        """The job's next round."""
        return RoundId(job_id=self.job_id, round=self.round + 1)


class RoundContext(RoundId):
    """A round once open: its masks and survivor list are bound to its contents as well."""

    announced: Sha256 = Field(
        description="SHA-256 of what the round announced (spec, round kind, model, "
        "standardisation and pooled totals, Newton parameters): a site sent something "
        "different cannot take part."
    )


class KeyAdvert(_Frozen):
    """A site's two fresh X25519 public keys for one round, signed with its identity key."""

    site: SiteName
    mask_key: Key
    share_key: Key
    signature: Signature


class Roster(_Frozen):
    """Every advert of the round, the identity keys they were checked with, the threshold."""

    adverts: Annotated[list[KeyAdvert], Field(min_length=2, max_length=MAX_SITES)]
    identities: Annotated[dict[SiteName, Key], Field(max_length=MAX_SITES)]
    threshold: Annotated[int, Field(ge=2)]

    @model_validator(mode="after")
    def _consistent(self) -> Roster:
        sites = [advert.site for advert in self.adverts]
        _strictly_sorted(sites, "adverts")
        if set(self.identities) != set(sites):
            raise ValueError("identities must name exactly the sites of the adverts")
        if self.threshold > len(sites):
            raise ValueError("threshold is larger than the number of sites")
        return self

    @property
    def sites(self) -> list[str]:
        return [advert.site for advert in self.adverts]

    def advert(self, site: str) -> KeyAdvert:
        return self.adverts[self.sites.index(site)]

    def position(self, site: str) -> int:
        """The site's x-coordinate for Shamir shares: its 1-based place in the roster."""
        return self.sites.index(site) + 1


class SealedShare(_Frozen):
    """A sender's shares for one recipient, encrypted for it alone."""

    sender: SiteName
    recipient: SiteName
    ciphertext: Sealed


class ShareBundle(_Frozen):
    """What a site sends in the shares phase: one sealed share for every other site."""

    sender: SiteName
    shares: Annotated[list[SealedShare], Field(max_length=MAX_SITES)]

    @model_validator(mode="after")
    def _from_sender(self) -> ShareBundle:
        if any(share.sender != self.sender for share in self.shares):
            raise ValueError("every share must come from the bundle's sender")
        recipients = [share.recipient for share in self.shares]
        if self.sender in recipients or len(set(recipients)) != len(recipients):
            raise ValueError("recipients must be other sites, each once")
        return self


class Inbox(_Frozen):
    """The sealed shares addressed to one site, one per sender."""

    recipient: SiteName
    shares: Annotated[list[SealedShare], Field(max_length=MAX_SITES)]

    @model_validator(mode="after")
    def _to_recipient(self) -> Inbox:
        if any(share.recipient != self.recipient for share in self.shares):
            raise ValueError("every share must be addressed to the inbox's recipient")
        senders = [share.sender for share in self.shares]
        if self.recipient in senders or len(set(senders)) != len(senders):
            raise ValueError("senders must be other sites, each once")
        return self


class Survivors(_Frozen):
    """Sites whose masked input is in the sum, and those that shared keys but sent none;
    signed by the orchestrator."""

    survivors: Annotated[Sites, Field(min_length=1)]
    dropped: Sites
    signature: Signature

    @model_validator(mode="after")
    def _disjoint(self) -> Survivors:
        _strictly_sorted(self.survivors, "survivors")
        _strictly_sorted(self.dropped, "dropped")
        if set(self.survivors) & set(self.dropped):
            raise ValueError("a site cannot both survive and drop")
        return self


class UnmaskShares(_Frozen):
    """A site's answer to the survivor list: its share of each survivor's self-mask seed and
    of each dropped site's mask key; never both for one site. With them, its sealed shares
    for the job's next round, when it was sent that round's roster."""

    sender: SiteName
    self_mask: SharesBySite
    mask_key: SharesBySite
    next: ShareBundle | None = None

    @model_validator(mode="after")
    def _never_both(self) -> UnmaskShares:
        if set(self.self_mask) & set(self.mask_key):
            raise ValueError("both kinds of share for one site")
        if self.next is not None and self.next.sender != self.sender:
            raise ValueError("the next round's shares must come from the same site")
        return self


class ClearPart(_Frozen):
    """What a site sends in the clear beside its masked input: nothing that a sum over sites
    less the others' clear parts could turn into its own numbers."""

    threshold: Annotated[int, Field(ge=1, le=1000)]
    """Its small-cell threshold: the pooled result is released under the largest of them."""
    compute_seconds: Annotated[int, Field(ge=0, le=10**7)] = 0
    """Its time to compute its contribution, in whole seconds: the time grows with its rows,
    but the orchestrator can time the site's key advert (sent once its contribution is
    computed) about as well, so only coarse operational figures are given."""
    epsilon: Epsilon | None = None
    """Under differential privacy, what the job spent at this site so far, this round included,
    rounded up to a tenth (the exact figure would tell the site's number of rows)."""
    noise: Annotated[float, Field(ge=0.0, le=1e30, allow_inf_nan=False)] | None = None
    """Under differential privacy in an analysis, the variance of the noise share it added to
    each number (it follows from the spec and the site's policy, not from its rows)."""
    own: OwnEstimate | None = None
    """In the first round of a Newton loop, its own model fitted on its rows alone, or why it
    keeps it (``OwnEstimate``); None otherwise. A training round sends no per-site metrics."""


class MaskedHeader(_Frozen):
    """The ``oncofed`` header entry of a site's masked input."""

    context: RoundContext
    site: SiteName
    clear: ClearPart
    next: KeyAdvert | None = None
    """The site's signed key advert for the job's next round."""

    @model_validator(mode="after")
    def _own_advert(self) -> MaskedHeader:
        if self.next is not None and self.next.site != self.site:
            raise ValueError("the next round's advert must be the site's own")
        return self


class SecureStep(_Frozen):
    """One phase of a secure round, as sent to a site; carries what that phase needs."""

    phase: Phase
    context: RoundContext
    roster: Roster | None = None
    inbox: Inbox | None = None
    survivors: Survivors | None = None
    next_roster: Roster | None = None
    """With the survivor list: the job's next round's roster, built from the adverts that came
    with this round's masked inputs."""

    @model_validator(mode="after")
    def _carries_its_phase(self) -> SecureStep:
        if self.next_roster is not None and self.phase != "unmask":
            raise ValueError("only an 'unmask' step carries the next round's roster")
        given = {
            "shares": self.roster is not None,
            "masked": self.inbox is not None,
            "unmask": self.survivors is not None,
        }
        wrong = [name for name, present in given.items() if present != (name == self.phase)]
        if wrong:
            raise ValueError(
                f"a {self.phase!r} step carries exactly what its phase needs "
                "(shares: roster, masked: inbox, unmask: survivors)"
            )
        return self
