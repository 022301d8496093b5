"""A hostile orchestrator (or site) against the protocol: every trick is refused before any
secret leaves a site, or makes the sum fail instead of revealing a site's numbers."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from oncofed.privacy.secagg import (
    SITES,
    AuthenticationError,
    MaskedSum,
    ProtocolError,
    SumMismatch,
    ThresholdError,
    encode_masked,
    inbox_for,
    new_identity,
    public_bytes,
)
from oncofed.privacy.secagg.crypto import (
    advert_payload,
    agree,
    pair_seed,
    pair_sign,
    survivors_payload,
)
from oncofed.privacy.secagg.encoding import decode
from oncofed.privacy.secagg.ring import add_masks
from oncofed.privacy.secagg.shamir import combine
from oncofed.wire.secagg import Inbox, KeyAdvert, Roster, RoundContext, RoundId, Survivors
from tests.privacy.secagg.support import (
    CONTEXT,
    PinnedPeers,
    Refused,
    Round,
    masked_header,
    site_names,
    site_values,
)


def shared_round(n: int = 5) -> tuple[Round, Roster]:
    secure = Round(site_names(n))
    return secure, secure.roster()


def with_advert(roster: Roster, advert: KeyAdvert) -> Roster:
    adverts = [advert if a.site == advert.site else a for a in roster.adverts]
    return roster.model_copy(update={"adverts": adverts})


def test_a_substituted_mask_key_is_refused() -> None:
    secure, roster = shared_round()
    victim = roster.adverts[1]
    attacker_key = roster.adverts[2].mask_key[::-1]
    forged = with_advert(roster, victim.model_copy(update={"mask_key": attacker_key}))
    with pytest.raises(
        AuthenticationError, match=f"advert of site {victim.site!r} does not verify"
    ):
        secure.clients[secure.sites[0]].share(forged)


def test_an_advert_signed_by_another_key_is_refused() -> None:
    secure, roster = shared_round()
    victim = roster.adverts[1]
    impostor = new_identity()
    payload = advert_payload(CONTEXT, victim.site, victim.mask_key, victim.share_key)
    forged = with_advert(roster, victim.model_copy(update={"signature": impostor.sign(payload)}))
    with pytest.raises(AuthenticationError, match="forged, its keys substituted"):
        secure.clients[secure.sites[0]].share(forged)


def test_a_changed_identity_key_of_a_pinned_site_is_refused() -> None:
    secure = Round(site_names(5))
    site, victim = secure.sites[0], secure.sites[1]
    earlier = PinnedPeers({victim: public_bytes(new_identity())})  # pinned in an earlier round
    secure.clients[site] = secure.client(site, CONTEXT, earlier)
    with pytest.raises(Refused, match=f"identity key of {victim} changed"):
        secure.clients[site].share(secure.roster())


def test_a_roster_giving_the_site_another_identity_is_refused() -> None:
    secure, roster = shared_round()
    site = secure.sites[0]
    identities = dict(roster.identities) | {site: public_bytes(new_identity())}
    forged = roster.model_copy(update={"identities": identities})
    with pytest.raises(
        AuthenticationError, match="the roster gives site 'site-00' another identity key"
    ):
        secure.clients[site].share(forged)


def test_a_site_copying_another_sites_keys_is_refused() -> None:
    secure, roster = shared_round()
    copier, victim = roster.adverts[2], roster.adverts[1]
    payload = advert_payload(CONTEXT, copier.site, victim.mask_key, victim.share_key)
    copied = copier.model_copy(
        update={
            "mask_key": victim.mask_key,
            "share_key": victim.share_key,
            "signature": secure.identities[copier.site].sign(payload),
        }
    )
    with pytest.raises(ProtocolError, match="same key"):
        secure.clients[secure.sites[0]].share(with_advert(roster, copied))


def test_a_low_order_key_passed_on_by_the_orchestrator_is_refused_by_the_site() -> None:
    """A site signs the X25519 point 0 as its share key (every secret with it is zero) and the
    orchestrator puts it in the roster unchecked: a peer's agreement with it refuses it before
    the site sends any share."""
    secure, roster = shared_round(4)
    hostile = roster.adverts[3]
    low_order = bytes(32)
    payload = advert_payload(CONTEXT, hostile.site, hostile.mask_key, low_order)
    signed = hostile.model_copy(
        update={"share_key": low_order, "signature": secure.identities[hostile.site].sign(payload)}
    )
    with pytest.raises(AuthenticationError, match="'site-03' published an invalid X25519 key"):
        secure.clients["site-00"].share(with_advert(roster, signed))


def test_a_roster_without_the_sites_own_advert_is_refused() -> None:
    secure, roster = shared_round()
    own = secure.clients[secure.sites[0]]
    changed = with_advert(roster, roster.adverts[0].model_copy(update={"mask_key": bytes(32)}))
    with pytest.raises(ProtocolError, match="does not hold the advert of site 'site-00' unchanged"):
        own.share(changed)


def test_a_threshold_or_round_below_the_sites_policy_is_refused() -> None:
    secure, roster = shared_round(6)
    low = roster.model_copy(update={"threshold": 3})  # a majority of 6 is 4
    with pytest.raises(ThresholdError, match="threshold 3 of 6 sites is too low"):
        secure.clients[secure.sites[0]].share(low)
    few = Round(site_names(4), min_sites=5)
    with pytest.raises(ThresholdError, match="needs at least 5"):
        few.clients[few.sites[0]].share(few.roster())


def pipelined_sum(announced: dict[str, RoundContext]) -> dict[str, np.ndarray] | SumMismatch:
    """A round whose keys and shares were made before it opened (bound to the job and round
    only), then masked by each site with the contents it was announced."""
    secure = Round(site_names(4))
    for site in secure.sites:
        secure.clients[site] = secure.client(site, RoundId(job_id=CONTEXT.job_id, round=3))
    roster = secure.roster()
    bundles = secure.bundles(roster, secure.sites)
    total = MaskedSum(CONTEXT, secure.layout)
    rng = np.random.default_rng(3)
    for site in secure.sites:
        client = secure.clients[site]
        masked = client.mask(inbox_for(site, bundles), site_values(rng), secure.layout,
                             announced.get(site, CONTEXT))  # fmt: skip
        total.add(encode_masked(masked, secure.layout, masked_header(CONTEXT, site)))
    survivors = secure.survivors(roster, bundles, total)
    key = public_bytes(secure.orchestrator)
    replies = [secure.clients[site].unmask(survivors, key) for site in secure.sites
               if site not in announced]  # fmt: skip
    try:
        return total.unmask(roster, survivors, replies)
    except SumMismatch as exc:
        return exc


def test_a_site_sent_a_different_announcement_makes_the_sum_fail() -> None:
    """Every pair mask binds the announced hash: a site sent other round contents masks with
    seeds its peers do not share, and the sum fails instead of revealing anything."""
    honest = pipelined_sum({})
    assert isinstance(honest, dict) and honest[SITES].tolist() == 4
    odd = CONTEXT.model_copy(update={"announced": "cd" * 32})
    failed = pipelined_sum({"site-03": odd})
    assert isinstance(failed, SumMismatch) and "masks did not cancel" in str(failed)


def test_a_client_masks_only_for_its_own_round_as_announced_once() -> None:
    values = site_values(np.random.default_rng(4))
    for given, refusal in [
        (None, "announced contents were never given"),
        (CONTEXT.model_copy(update={"round": 4}), "round 4 of job job-1 is not this client's"),
    ]:
        secure = Round(site_names(3))
        ahead = secure.client("site-00", RoundId(job_id=CONTEXT.job_id, round=3))
        secure.clients["site-00"] = ahead
        bundles = secure.bundles(secure.roster(), secure.sites)
        with pytest.raises(ProtocolError, match=refusal):
            ahead.mask(inbox_for("site-00", bundles), values, secure.layout, given)


def test_a_tampered_or_redirected_share_is_refused() -> None:
    secure, roster = shared_round()
    bundles = secure.bundles(roster, secure.sites)
    inbox = inbox_for("site-00", bundles)
    first = inbox.shares[0]
    flipped = bytes([first.ciphertext[0], first.ciphertext[1] ^ 1]) + first.ciphertext[2:]
    tampered = Inbox(
        recipient="site-00",
        shares=[first.model_copy(update={"ciphertext": flipped}), *inbox.shares[1:]],
    )
    values = site_values(np.random.default_rng(0))
    with pytest.raises(AuthenticationError, match=f"shares from site {first.sender!r} do not open"):
        secure.clients["site-00"].mask(tampered, values, secure.layout)
    meant_for_other = next(s for s in bundles[1].shares if s.recipient == "site-02")
    redirected = Inbox(
        recipient="site-03",
        shares=[meant_for_other.model_copy(update={"recipient": "site-03"})],
    )
    with pytest.raises(AuthenticationError, match="do not open"):
        secure.clients["site-03"].mask(redirected, values, secure.layout)


def test_an_inconsistent_inbox_makes_the_sites_check_fail() -> None:
    """The orchestrator hides one site's shares from another: their pairwise mask no longer
    cancels, and the sum fails instead of revealing anything."""
    rng = np.random.default_rng(1)
    secure, roster = shared_round(6)
    bundles = secure.bundles(roster, secure.sites)
    victim, hidden = "site-00", "site-01"
    total = secure.masked(bundles, {})
    for site in secure.sites:
        inbox = inbox_for(site, bundles)
        if site == victim:
            inbox = Inbox(recipient=victim, shares=[s for s in inbox.shares if s.sender != hidden])
        masked = secure.clients[site].mask(inbox, site_values(rng), secure.layout)
        total.add(
            encode_masked(
                masked,
                secure.layout,
                masked_header(CONTEXT, site),
            )
        )
    survivors = secure.survivors(roster, bundles, total)
    key = public_bytes(secure.orchestrator)
    with pytest.raises(ProtocolError, match=r"survivors \['site-01'\] did not share keys"):
        secure.clients[victim].unmask(survivors, key)
    replies = [secure.clients[s].unmask(survivors, key) for s in survivors.survivors[1:]]
    with pytest.raises(SumMismatch, match="masks did not cancel"):
        total.unmask(roster, survivors, replies)


def run_to_survivors(secure: Round, senders: list[str]) -> Survivors:
    rng = np.random.default_rng(2)
    roster = secure.roster()
    bundles = secure.bundles(roster, secure.sites)
    total = secure.masked(bundles, {site: site_values(rng) for site in senders})
    return secure.survivors(roster, bundles, total)


def test_an_unsigned_or_wrongly_signed_survivor_list_releases_nothing() -> None:
    secure = Round(site_names(5))
    survivors = run_to_survivors(secure, secure.sites[:4])
    payload = survivors_payload(CONTEXT, survivors.survivors, survivors.dropped)
    forgeries = {
        "site-00": survivors.model_copy(update={"signature": bytes(64)}),
        "site-01": survivors.model_copy(update={"dropped": []}),  # altered after signing
        "site-02": survivors.model_copy(update={"signature": new_identity().sign(payload)}),
    }
    for site, forged in forgeries.items():
        with pytest.raises(AuthenticationError, match="not signed by the orchestrator's key"):
            secure.clients[site].unmask(forged, public_bytes(secure.orchestrator))
        assert secure.ledgers[site].released == {}


def test_a_survivor_list_that_contradicts_what_the_site_saw_is_refused() -> None:
    secure = Round(site_names(5))
    survivors = run_to_survivors(secure, secure.sites[:4])
    orchestrator, key = secure.orchestrator, public_bytes(secure.orchestrator)

    def signed(alive: list[str], dropped: list[str]) -> Survivors:
        signature = orchestrator.sign(survivors_payload(CONTEXT, alive, dropped))
        return Survivors(survivors=alive, dropped=dropped, signature=signature)

    with pytest.raises(ProtocolError, match="dropped sites"):
        secure.clients["site-00"].unmask(signed(survivors.survivors, []), key)
    with pytest.raises(ProtocolError, match="listed as dropped"):
        secure.clients["site-01"].unmask(signed(["site-00", *secure.sites[2:]], ["site-01"]), key)


def test_no_site_ever_releases_both_kinds_of_share_for_one_peer() -> None:
    """The orchestrator runs the round again (same job and round) and now calls a site that
    survived dropped, to get its mask key too: every site's ledger refuses."""
    rng = np.random.default_rng(3)
    first = Round(site_names(5))
    first.run({site: site_values(rng) for site in first.sites})
    again = Round(first.sites, identities=first.identities, ledgers=first.ledgers)
    survivors = run_to_survivors(again, again.sites[1:])
    assert survivors.dropped == ["site-00"]
    for site in survivors.survivors:
        with pytest.raises(Refused, match="both kinds of share for site-00"):
            again.clients[site].unmask(survivors, public_bytes(again.orchestrator))


def test_steps_run_once_and_in_order() -> None:
    secure, roster = shared_round()
    client = secure.clients["site-00"]
    with pytest.raises(ProtocolError, match="advertise is out of order"):
        client.advertise()
    values = site_values(np.random.default_rng(4))
    with pytest.raises(ProtocolError, match="mask is out of order"):
        client.mask(Inbox(recipient="site-00", shares=[]), values, secure.layout)
    bad = roster.model_copy(update={"threshold": 2})
    with pytest.raises(ThresholdError):
        client.share(bad)
    with pytest.raises(ProtocolError, match="at step 'ended'"):
        client.share(roster)  # a failed step ends the site's part in the round


def sign_list(secure: Round, alive: list[str], dropped: list[str]) -> Survivors:
    signature = secure.orchestrator.sign(survivors_payload(CONTEXT, alive, dropped))
    return Survivors(survivors=alive, dropped=dropped, signature=signature)


@pytest.mark.parametrize(("colluding", "unmasked"), [(3, False), (4, True)])
def test_an_equivocating_orchestrator_needs_2t_minus_n_colluding_sites(
    colluding: int, unmasked: bool
) -> None:
    """The bound the threshold buys. The orchestrator signs two survivor lists, "target
    survived" for some honest sites (they reveal its self-mask share) and "target dropped"
    for the others (they reveal its mask-key share); colluding sites reveal both. It needs t
    of each, so it unmasks the target's input exactly when colluding >= 2t - n: with 10 sites
    and t = 7 (threshold 2/3), 4 colluding sites suffice; 3 do not."""
    rng = np.random.default_rng(7)
    secure = Round(site_names(10))
    roster = secure.roster()
    t, n = roster.threshold, len(roster.adverts)
    assert 2 * t - n == 4
    bundles = secure.bundles(roster, secure.sites)
    values = {site: site_values(rng) for site in secure.sites}
    target, *others = secure.sites
    masked = {
        site: secure.clients[site].mask(inbox_for(site, bundles), values[site], secure.layout)
        for site in secure.sites
    }
    corrupt, honest = others[:colluding], others[colluding:]
    told_dropped, told_survived = honest[: t - colluding], [target, *honest[t - colluding :]]
    key = public_bytes(secure.orchestrator)
    survived = sign_list(secure, secure.sites, [])
    dropped = sign_list(secure, others, [target])
    self_mask = {roster.position(s): secure.clients[s]._held[target][0] for s in corrupt}
    mask_key = {roster.position(s): secure.clients[s]._held[target][1] for s in corrupt}
    for site in told_survived:
        share = secure.clients[site].unmask(survived, key).self_mask[target]
        self_mask[roster.position(site)] = int.from_bytes(share, "big")
    for site in told_dropped:
        share = secure.clients[site].unmask(dropped, key).mask_key[target]
        mask_key[roster.position(site)] = int.from_bytes(share, "big")
    if not unmasked:
        with pytest.raises(ThresholdError):
            combine(self_mask, t, "b")
        return
    seed = combine(self_mask, t, "b")
    private = X25519PrivateKey.from_private_bytes(combine(mask_key, t, "key"))
    masks = [(seed, -1)]
    for peer in others:
        secret = agree(private, roster.advert(peer).mask_key, peer)
        masks.append((pair_seed(CONTEXT, target, peer, secret), -pair_sign(target, peer)))
    for index, (name, segment) in enumerate(secure.layout.items()):
        limbs = masked[target][name].reshape(segment.size, segment.limbs).copy()
        add_masks(limbs, index, 0, masks)
        recovered = decode(name, segment, limbs).reshape(segment.shape)
        np.testing.assert_allclose(recovered, values[target][name], rtol=0, atol=1e-12)
