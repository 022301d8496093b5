"""The whole protocol in process: exact sums on every segment kind, dropouts, thresholds."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest

from oncofed.privacy.secagg import (
    SITES,
    ReconstructionError,
    SumMismatch,
    ThresholdError,
    count,
    model,
    model_fraction_bits,
    public_bytes,
)
from oncofed.privacy.secagg.crypto import survivors_payload
from oncofed.wire.secagg import Survivors
from tests.privacy.secagg.support import FRACTION_BITS, Round, site_names, site_values

Values = Mapping[str, Mapping[str, np.ndarray]]


def assert_exact_sum(result: Mapping[str, np.ndarray], values: Values) -> None:
    """Counts exactly; reals equal to math.fsum of the inputs (the encoding's error, n 2**-97,
    is far below half an ulp, so the decoded float is the correctly rounded sum); model
    tensors within the rounding of n values to 2**-F."""
    sites = list(values.values())
    assert result[SITES].dtype == np.int64 and result[SITES] == len(sites)
    expected_events = sum(np.asarray(site["events"], dtype=np.int64) for site in sites)
    assert result["events"].dtype == np.int64
    np.testing.assert_array_equal(result["events"], expected_events)
    for i, got in enumerate(result["gradient"]):
        assert got == math.fsum(float(site["gradient"][i]) for site in sites)
    for name in ("weight", "bias"):
        exact = sum(np.asarray(site[name], dtype=np.float64) for site in sites)
        assert result[name].shape == exact.shape
        assert np.abs(result[name] - exact).max() <= len(sites) * 2.0 ** -(FRACTION_BITS + 1)


@pytest.mark.parametrize("n", [3, 10, 32])
def test_the_sum_over_sites_is_exact(n: int) -> None:
    rng = np.random.default_rng(n)
    secure = Round(site_names(n))
    values = {site: site_values(rng) for site in secure.sites}
    for site in values.values():  # float64 model values, so that rounding to 2**-F shows
        site["weight"] = rng.uniform(-1, 1, size=(3, 5))
    assert_exact_sum(secure.run(values), values)


def test_a_site_dropping_before_its_masked_input_is_left_out_exactly() -> None:
    rng = np.random.default_rng(1)
    secure = Round(site_names(10))
    values = {site: site_values(rng) for site in secure.sites[:8]}  # two never send
    result = secure.run(values)
    assert_exact_sum(result, values)


def test_a_site_dropping_before_sharing_keys_takes_no_part() -> None:
    rng = np.random.default_rng(2)
    secure = Round(site_names(6))
    roster = secure.roster()
    bundles = secure.bundles(roster, secure.sites[1:])
    values = {site: site_values(rng) for site in secure.sites[1:]}
    total = secure.masked(bundles, values)
    survivors = secure.survivors(roster, bundles, total)
    assert survivors.dropped == []
    key = public_bytes(secure.orchestrator)
    replies = [secure.clients[site].unmask(survivors, key) for site in survivors.survivors]
    assert_exact_sum(total.unmask(roster, survivors, replies), values)


def test_a_site_dropping_after_its_masked_input_is_included() -> None:
    rng = np.random.default_rng(3)
    secure = Round(site_names(10))
    values = {site: site_values(rng) for site in secure.sites}
    result = secure.run(values, silent=secure.sites[:3])  # no unmask shares from three
    assert_exact_sum(result, values)


def test_fewer_survivors_than_the_threshold_fail_cleanly() -> None:
    rng = np.random.default_rng(4)
    secure = Round(site_names(6))  # t = 5
    roster = secure.roster()
    assert roster.threshold == 5
    bundles = secure.bundles(roster, secure.sites)
    total = secure.masked(bundles, {site: site_values(rng) for site in secure.sites[:4]})
    with pytest.raises(ThresholdError, match="only 4 of 6 sites sent their masked input"):
        secure.survivors(roster, bundles, total)
    # a list the orchestrator signs anyway is refused by every site
    alive, dropped = total.sites, secure.sites[4:]
    signature = secure.orchestrator.sign(survivors_payload(secure.context, alive, dropped))
    survivors = Survivors(survivors=alive, dropped=dropped, signature=signature)
    with pytest.raises(ThresholdError, match="only 4 of the round's 6 sites survive"):
        secure.clients[alive[0]].unmask(survivors, public_bytes(secure.orchestrator))
    assert secure.ledgers[alive[0]].released == {}


def test_too_few_unmask_replies_leave_the_sum_intact_for_a_retry() -> None:
    rng = np.random.default_rng(5)
    secure = Round(site_names(6))
    roster = secure.roster()
    bundles = secure.bundles(roster, secure.sites)
    values = {site: site_values(rng) for site in secure.sites[:5]}
    total = secure.masked(bundles, values)
    survivors = secure.survivors(roster, bundles, total)
    key = public_bytes(secure.orchestrator)
    replies = [secure.clients[site].unmask(survivors, key) for site in survivors.survivors]
    with pytest.raises(ThresholdError, match="only 4 shares of site 'site-00'"):
        total.unmask(roster, survivors, replies[:4])
    assert_exact_sum(total.unmask(roster, survivors, replies), values)


@pytest.mark.parametrize(
    ("kind", "replies", "error"),
    [
        ("self_mask", 6, ReconstructionError),  # more than t: two t-subsets disagree
        ("self_mask", 5, SumMismatch),  # exactly t fit any secret: the sites check fails
        ("mask_key", 6, ReconstructionError),  # the key does not match its public key
        ("mask_key", 5, ReconstructionError),
    ],
)
def test_a_wrong_share_makes_unmasking_fail_loudly(
    kind: str, replies: int, error: type[Exception]
) -> None:
    rng = np.random.default_rng(6)
    secure = Round(site_names(7))  # t = 5
    roster = secure.roster()
    bundles = secure.bundles(roster, secure.sites)
    total = secure.masked(bundles, {site: site_values(rng) for site in secure.sites[:6]})
    survivors = secure.survivors(roster, bundles, total)
    key = public_bytes(secure.orchestrator)
    answers = [secure.clients[site].unmask(survivors, key) for site in survivors.survivors]
    target = survivors.survivors[0] if kind == "self_mask" else survivors.dropped[0]
    liar = answers[1]
    wrong = dict(getattr(liar, kind))
    wrong[target] = (int.from_bytes(wrong[target], "big") + 1).to_bytes(66, "big")
    answers[1] = liar.model_copy(update={kind: wrong})
    with pytest.raises(error, match="wrong share"):
        total.unmask(roster, survivors, answers[:replies])


def test_a_model_segment_at_its_bound_sums_without_wrapping() -> None:
    """32 sites at +-(max weight * clip norm), with the job's fraction bits, decode exactly."""
    n = 32
    bits = model_fraction_bits(n, max_weight=1.0, clip_norm=1.0)
    layout = {SITES: count(), "update": model((4,), bits)}
    secure = Round(site_names(n), layout=layout)
    extreme = np.array([1.0, -1.0, 1.0, -1.0])
    values = {site: {SITES: np.array(1), "update": extreme} for site in secure.sites}
    np.testing.assert_array_equal(secure.run(values)["update"], n * extreme)
