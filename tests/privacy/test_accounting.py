"""The one accountant: Renyi DP curves that compose by adding, checked against Opacus's own
accountant and the mechanisms' closed forms."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from oncofed.privacy import accounting


def test_dpsgd_matches_opacus_accountant_on_its_own_orders() -> None:
    reference = RDPAccountant()
    for _ in range(120):
        reference.step(noise_multiplier=1.1, sample_rate=0.05)
    ours = accounting.epsilon(accounting.dpsgd_rdp(0.05, 1.1, 120), 1e-5)
    theirs = reference.get_epsilon(delta=1e-5)
    assert ours <= theirs + 1e-9  # a wider grid can only tighten the bound
    assert ours == pytest.approx(theirs, rel=0.02)


def test_gaussian_curve_is_the_closed_form_and_composition_adds() -> None:
    curve = accounting.gaussian_rdp(2.0, 4.0)
    assert curve == pytest.approx(np.array(accounting.ORDERS) * 4.0 / 32.0)
    once, twice = accounting.epsilon(curve, 1e-6), accounting.epsilon(2 * curve, 1e-6)
    assert once < twice < 2 * once  # composing in RDP is tighter than adding epsilons
    assert accounting.epsilon(accounting.zero(), 1e-6) == 0.0


def test_skellam_costs_a_little_more_than_gaussian_and_converges_to_it() -> None:
    for variance in (4.0, 100.0, 10_000.0):
        sigma = math.sqrt(variance)
        gaussian = accounting.epsilon(accounting.gaussian_rdp(1.0, sigma), 1e-5)
        skellam = accounting.epsilon(accounting.skellam_rdp(variance, 1.0, 1.0), 1e-5)
        assert gaussian <= skellam <= gaussian * (1 + 2 / variance) + 1e-12
    assert np.isinf(accounting.skellam_rdp(10.0, 1.0, 1.0)[0])  # order 1.1: not covered


@pytest.mark.parametrize(("target", "rate", "steps"), [(1.0, 0.1, 100), (8.0, 0.02, 2000)])
def test_calibration_meets_the_target_without_wasting_it(
    target: float, rate: float, steps: int
) -> None:
    sigma = accounting.calibrate_dpsgd(target, 1e-5, rate, steps)
    spent = accounting.epsilon(accounting.dpsgd_rdp(rate, sigma, steps), 1e-5)
    assert 0.95 * target < spent <= target


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="orders"):
        accounting.epsilon(np.zeros(3), 1e-5)
    with pytest.raises(ValueError, match="delta"):
        accounting.epsilon(accounting.zero(), 1.5)
    with pytest.raises(ValueError, match="noise_multiplier"):
        accounting.dpsgd_rdp(0.1, 0.0, 10)
    assert accounting.epsilon(accounting.gaussian_rdp(1.0, 1e-6), 1e-5) == accounting.MAX_EPSILON


def test_the_conversion_is_opacus_own_and_needs_no_opacus() -> None:
    from opacus.accountants.analysis.rdp import get_privacy_spent

    assert list(accounting.ORDERS[: len(RDPAccountant.DEFAULT_ALPHAS)]) == [
        float(a) for a in RDPAccountant.DEFAULT_ALPHAS
    ]
    for curve in (accounting.dpsgd_rdp(0.02, 0.9, 500), accounting.gaussian_rdp(1.0, 3.0)):
        theirs, _ = get_privacy_spent(orders=list(accounting.ORDERS), rdp=curve, delta=1e-6)
        assert accounting.epsilon(curve, 1e-6) == pytest.approx(float(theirs), rel=1e-12)
    code = (
        "import sys, oncofed.privacy.accounting as a, oncofed.analytics.secure_close; "
        "a.epsilon(a.skellam_rdp(10.0, 1.0, 1.0), 1e-5); "
        "sys.exit(int('opacus' in sys.modules or 'torch' in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize(("target", "rounds"), [(0.5, 1), (4.0, 5)])
def test_skellam_calibration_meets_the_target_over_its_rounds(target: float, rounds: int) -> None:
    variance = accounting.calibrate_skellam(target, 1e-5, 30.0, 5.0, rounds)
    spent = accounting.epsilon(rounds * accounting.skellam_rdp(variance, 30.0, 5.0), 1e-5)
    assert 0.97 * target < spent <= target
    with pytest.raises(ValueError, match="rounds >= 1"):
        accounting.calibrate_skellam(target, 1e-5, 1.0, 1.0, 0)
