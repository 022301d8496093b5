"""The orchestrator's side of a round's key exchange: pure functions, no I/O. It checks and
routes what sites send, and signs the survivor list with its own Ed25519 key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oncofed.privacy.secagg.crypto import check_usable, survivors_payload, verify_advert
from oncofed.privacy.secagg.errors import AuthenticationError, ProtocolError, ThresholdError
from oncofed.privacy.secagg.shamir import share_value, threshold_for
from oncofed.wire.secagg import (
    Inbox,
    KeyAdvert,
    Roster,
    RoundContext,
    RoundId,
    ShareBundle,
    Survivors,
    UnmaskShares,
)


def build_roster(
    round_id: RoundId,
    adverts: Iterable[KeyAdvert],
    identities: Mapping[str, bytes],
    fraction: float,
) -> Roster:
    """Every advert checked against its site's registered identity key, sorted by site, with
    threshold t = floor(fraction * n) + 1 (at least a majority, at most n)."""
    by_site: dict[str, KeyAdvert] = {}
    for advert in adverts:
        if advert.site in by_site:
            raise ProtocolError(f"two key adverts from site {advert.site!r}")
        if advert.site not in identities:
            raise AuthenticationError(f"site {advert.site!r} has no registered identity key")
        verify_advert(round_id, advert, identities[advert.site])
        check_usable(advert)
        by_site[advert.site] = advert
    if len(by_site) < 2:
        raise ThresholdError(f"a secure round needs at least 2 sites; {len(by_site)} sent keys")
    sites = sorted(by_site)
    return Roster(
        adverts=[by_site[site] for site in sites],
        identities={site: identities[site] for site in sites},
        threshold=threshold_for(len(sites), fraction),
    )


def check_bundle(roster: Roster, bundle: ShareBundle) -> None:
    """A bundle comes from a site of the roster and holds one share for every other one."""
    sites = set(roster.sites)
    if bundle.sender not in sites:
        raise ProtocolError(f"shares from {bundle.sender!r}, which is not in the round's roster")
    recipients = {share.recipient for share in bundle.shares}
    expected = sites - {bundle.sender}
    if recipients != expected:
        raise ProtocolError(
            f"site {bundle.sender!r} sent shares for the wrong sites: missing "
            f"{sorted(expected - recipients)}, unexpected {sorted(recipients - expected)}"
        )


def check_unmask(survivors: Survivors, reply: UnmaskShares) -> None:
    """Unmasking shares hold a self-mask share for every survivor and a mask-key share for
    every dropped site, each an element of the field."""
    named = (sorted(reply.self_mask), sorted(reply.mask_key))
    if named != (survivors.survivors, survivors.dropped):
        raise ProtocolError(
            f"site {reply.sender!r} sent shares for other sites than the survivor list: "
            f"self-mask shares are for {survivors.survivors}, mask-key shares for "
            f"{survivors.dropped}"
        )
    for share in (*reply.self_mask.values(), *reply.mask_key.values()):
        share_value(share, reply.sender)


def inbox_for(site: str, bundles: Iterable[ShareBundle]) -> Inbox:
    """The shares addressed to ``site`` in the other sites' bundles."""
    shares = [
        share
        for bundle in bundles
        if bundle.sender != site
        for share in bundle.shares
        if share.recipient == site
    ]
    return Inbox(recipient=site, shares=shares)


def sign_survivors(
    context: RoundContext,
    roster: Roster,
    key: Ed25519PrivateKey,
    shared: Iterable[str],
    masked: Iterable[str],
) -> Survivors:
    """Survivors: the sites whose masked input arrived; dropped: those that shared keys but
    sent none. Signed over (context, survivors, dropped). ``ThresholdError`` when fewer than
    t survive: the round fails cleanly and no share is asked for."""
    shared_sites, survivors = set(shared), set(masked)
    if not shared_sites <= set(roster.sites):
        raise ProtocolError(
            f"sites {sorted(shared_sites - set(roster.sites))} are not in the roster"
        )
    if not survivors <= shared_sites:
        raise ProtocolError(
            f"masked input from {sorted(survivors - shared_sites)}, which did not share keys"
        )
    if len(survivors) < roster.threshold:
        raise ThresholdError(
            f"only {len(survivors)} of {len(roster.adverts)} sites sent their masked input and "
            f"the threshold is {roster.threshold}: the round fails"
        )
    alive, dropped = sorted(survivors), sorted(shared_sites - survivors)
    signature = key.sign(survivors_payload(context, alive, dropped))
    return Survivors(survivors=alive, dropped=dropped, signature=signature)
