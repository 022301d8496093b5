"""The orchestrator's side: roster, routing, survivors, and the masked-input codec and sum."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from oncofed.privacy.secagg import (
    SITES,
    AuthenticationError,
    EncodingError,
    MaskedSum,
    ProtocolError,
    ThresholdError,
    build_roster,
    check_bundle,
    check_masked,
    count,
    encode_masked,
    inbox_for,
    new_identity,
    public_bytes,
    real,
    sign_survivors,
)
from oncofed.privacy.secagg.codec import MaskedFile
from oncofed.privacy.secagg.crypto import advert_payload
from oncofed.wire.errors import BadTensorPayload
from oncofed.wire.secagg import ShareBundle
from tests.privacy.secagg.support import (
    CONTEXT,
    LAYOUT,
    Round,
    masked_header,
    site_names,
    site_values,
)


def test_the_roster_is_sorted_checked_and_has_a_majority_threshold() -> None:
    secure = Round(site_names(5))
    adverts = [secure.clients[site].advertise() for site in reversed(secure.sites)]
    roster = build_roster(CONTEXT, adverts, secure.registered, 2 / 3)
    assert roster.sites == secure.sites and roster.threshold == 4
    assert roster.identities == secure.registered
    with pytest.raises(ProtocolError, match="two key adverts from site 'site-04'"):
        build_roster(CONTEXT, [*adverts, adverts[0]], secure.registered, 2 / 3)
    unknown = {s: k for s, k in secure.registered.items() if s != "site-04"}
    with pytest.raises(AuthenticationError, match="'site-04' has no registered identity key"):
        build_roster(CONTEXT, adverts, unknown, 2 / 3)
    wrong = secure.registered | {"site-04": public_bytes(new_identity())}
    with pytest.raises(AuthenticationError, match="advert of site 'site-04' does not verify"):
        build_roster(CONTEXT, adverts, wrong, 2 / 3)
    with pytest.raises(ThresholdError, match="at least 2 sites; 1 sent keys"):
        build_roster(CONTEXT, adverts[:1], secure.registered, 2 / 3)
    low_order = bytes(32)  # the X25519 point 0: every secret with it is zero
    payload = advert_payload(CONTEXT, "site-04", low_order, adverts[0].share_key)
    signed = adverts[0].model_copy(
        update={"mask_key": low_order, "signature": secure.identities["site-04"].sign(payload)}
    )
    with pytest.raises(AuthenticationError, match="'site-04' published an invalid X25519 key"):
        build_roster(CONTEXT, [signed, *adverts[1:]], secure.registered, 2 / 3)


def test_bundles_are_checked_and_routed() -> None:
    secure = Round(site_names(4))
    roster = secure.roster()
    bundles = secure.bundles(roster, secure.sites)
    inbox = inbox_for("site-02", bundles)
    assert sorted(share.sender for share in inbox.shares) == ["site-00", "site-01", "site-03"]
    short = ShareBundle(sender="site-00", shares=bundles[0].shares[1:])
    with pytest.raises(ProtocolError, match=r"wrong sites: missing \['site-01'\]"):
        check_bundle(roster, short)
    with pytest.raises(ProtocolError, match="'site-99', which is not in the round's roster"):
        check_bundle(roster, ShareBundle(sender="site-99", shares=[]))


def test_survivors_are_signed_only_for_a_consistent_round() -> None:
    secure = Round(site_names(4))
    roster = secure.roster()
    key = new_identity()
    survivors = sign_survivors(CONTEXT, roster, key, secure.sites, secure.sites[1:])
    assert survivors.survivors == secure.sites[1:] and survivors.dropped == ["site-00"]
    with pytest.raises(
        ProtocolError, match=r"masked input from \['site-03'\], which did not share"
    ):
        sign_survivors(CONTEXT, roster, key, secure.sites[:3], secure.sites[1:])
    with pytest.raises(ProtocolError, match=r"\['site-99'\] are not in the roster"):
        sign_survivors(CONTEXT, roster, key, [*secure.sites, "site-99"], secure.sites)


def masked_payload(site: str = "site-00") -> bytes:
    masked = {
        name: np.arange(segment.size * segment.limbs, dtype=np.uint64).reshape(
            *segment.shape, segment.limbs
        )
        for name, segment in LAYOUT.items()
    }
    return encode_masked(masked, LAYOUT, masked_header(CONTEXT, site))


def test_a_masked_input_is_uint64_safetensors_with_its_header(tmp_path: Path) -> None:
    payload = masked_payload()
    loaded = safetensors.numpy.load(payload)
    assert loaded["weight"].dtype == np.uint64 and loaded["weight"].shape == (3, 5, 1)
    assert loaded["gradient"].shape == (4, 4) and loaded[SITES].shape == (4,)
    path = tmp_path / "masked.safetensors"
    path.write_bytes(payload)
    for source in (payload, path):
        assert check_masked(source, LAYOUT) == masked_header(CONTEXT, "site-00")


def test_masked_inputs_of_another_shape_or_round_are_refused(tmp_path: Path) -> None:
    payload = masked_payload()
    with pytest.raises(BadTensorPayload, match="names differ"):
        check_masked(payload, {**LAYOUT, "extra": real(2)})
    with pytest.raises(BadTensorPayload, match=r"gradient: shape \(4, 4\), expected \(5, 4\)"):
        check_masked(payload, {**LAYOUT, "gradient": real(5)})
    floats = safetensors.numpy.save({name: np.zeros((4,), np.float32) for name in (SITES,)})
    with pytest.raises(BadTensorPayload, match="dtype F32, expected uint64"):
        check_masked(floats, {SITES: count()})
    total = MaskedSum(CONTEXT, LAYOUT)
    total.add(payload)
    with pytest.raises(ProtocolError, match="site 'site-00' sent a second masked input"):
        total.add(payload)
    later = CONTEXT.model_copy(update={"round": 4})
    with pytest.raises(ProtocolError, match="is for another round"):
        MaskedSum(later, LAYOUT).add(payload)
    with pytest.raises(EncodingError, match="needs a 'sites' segment"):
        MaskedSum(CONTEXT, {"x": real(1)})


def test_a_refused_masked_input_leaves_the_sum_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "masked.safetensors"
    path.write_bytes(masked_payload())
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size - 8)
    total = MaskedSum(CONTEXT, LAYOUT)
    with pytest.raises(BadTensorPayload, match="data section does not match the header"):
        total.add(path)
    total.add(masked_payload("site-01"))
    assert total.sites == ["site-01"]


def test_a_masked_input_failing_part_way_leaves_the_sum_unusable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def truncated(self: MaskedFile) -> Iterator[tuple[str, int, np.ndarray]]:
        yield SITES, 0, np.ones((1, 4), dtype=np.uint64)
        raise BadTensorPayload("sites: file is truncated")

    total = MaskedSum(CONTEXT, LAYOUT)
    monkeypatch.setattr(MaskedFile, "pieces", truncated)
    with pytest.raises(BadTensorPayload, match="truncated"):
        total.add(masked_payload())
    with pytest.raises(ProtocolError, match="this sum is broken; build a new one"):
        total.add(masked_payload("site-01"))


def test_the_sum_is_unmasked_once() -> None:
    secure = Round(site_names(3))
    rng = np.random.default_rng(0)
    roster = secure.roster()
    bundles = secure.bundles(roster, secure.sites)
    total = secure.masked(bundles, {site: site_values(rng) for site in secure.sites})
    survivors = secure.survivors(roster, bundles, total)
    key = public_bytes(secure.orchestrator)
    replies = [secure.clients[site].unmask(survivors, key) for site in secure.sites]
    with pytest.raises(ProtocolError, match="unexpected or repeated unmask shares"):
        total.unmask(roster, survivors, [*replies, replies[0]])
    total.unmask(roster, survivors, replies)
    with pytest.raises(ProtocolError, match="this sum is spent"):
        total.unmask(roster, survivors, replies)
