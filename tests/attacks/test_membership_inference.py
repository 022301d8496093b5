"""Membership inference, bench/membership.py at a small scale: the loss-threshold attack and
LiRA tell the members of an over-fitting MLP trained without DP from the non-members, and
barely better than a guess once it is trained with DP-SGD at the default epsilon.

Each setting trains ``MODELS`` MLPs on random halves of GBSG2 (the demo's 5-year recurrence
job); each in turn is the target, the others its shadow models."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow
BENCH = Path(__file__).resolve().parents[2] / "bench"
MODELS = 6
SEED = 11


@pytest.fixture(scope="module")
def membership() -> Iterator[ModuleType]:
    """The benchmark module, imported as ``make bench`` runs it (bench/ on the path)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCH))
        yield importlib.import_module("membership")


@pytest.fixture(scope="module")
def results(membership: ModuleType) -> Iterator[dict[float | None, Any]]:
    """The MLP without DP and at the default epsilon, on the same splits (one torch thread:
    the models are tiny, and threads would only contend)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        chosen = [membership.Setting("mlp", e) for e in (None, membership.DEFAULT_EPSILON)]
        yield {r.epsilon: r for r in membership.study(MODELS, SEED, chosen)}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def chance(membership: ModuleType, results: dict[float | None, Any]) -> float:
    n = len(membership.population(membership.recipe("mlp")[0]).cohort)
    return float(membership.chance_advantage(membership.halves(MODELS, n, SEED), SEED))


def test_the_attacks_find_the_members_of_a_model_trained_without_dp(
    results: dict[float | None, Any], chance: float
) -> None:
    plain = results[None]
    assert chance < 0.05
    for attack in (plain.loss, plain.lira):
        assert attack.advantage > max(0.2, 5 * chance)
        assert attack.auc > 0.62
    assert plain.lira.tpr_at_low_fpr > 0.015  # above the 1% a guess gets at 1% FPR


def test_dp_at_the_default_epsilon_leaves_them_near_chance(
    membership: ModuleType, results: dict[float | None, Any], chance: float
) -> None:
    plain, private = results[None], results[membership.DEFAULT_EPSILON]
    assert private.noise_multiplier > 1.0 and private.delta == membership.DELTA
    for dp, exact in ((private.loss, plain.loss), (private.lira, plain.lira)):
        assert dp.advantage < exact.advantage / 2
        assert dp.advantage < chance + 0.07
        assert dp.auc < 0.56
    # and the private model still predicts recurrence (it over-fits less than the plain one)
    assert private.test_auc > 0.62
    assert private.auc_lost == pytest.approx(plain.test_auc - private.test_auc)


def test_attack_figures_on_known_scores(membership: ModuleType) -> None:
    member = np.array([True] * 100 + [False] * 100)
    perfect = membership.attack_figures(member.astype(float), member)
    assert (perfect.advantage, perfect.auc, perfect.tpr_at_low_fpr) == (1.0, 1.0, 1.0)
    inverted = membership.attack_figures(-member.astype(float), member)
    assert (inverted.advantage, inverted.auc, inverted.tpr_at_low_fpr) == (0.0, 0.0, 0.0)
    # half of the members score above every non-member, the rest tie with them
    scores = np.r_[np.full(50, 2.0), np.zeros(150)]
    half = membership.attack_figures(scores, member)
    assert (half.advantage, half.auc, half.tpr_at_low_fpr) == (0.5, 0.75, 0.5)


def test_lira_scores_a_patient_by_which_shadow_models_trained_on_them(
    membership: ModuleType,
) -> None:
    """Shadow models trained on a patient are confident (3 +- 1), the others not (0 +- 1): a
    target as confident as the first is called a member, one like the second is not."""
    rng = np.random.default_rng(0)
    keep = np.array([rng.permutation(200) < 100 for _ in range(9)])
    confidence = np.where(keep, 3.0, 0.0) + rng.normal(size=keep.shape)
    scores = membership.lira_scores(confidence, keep, target=0)
    assert membership.attack_figures(scores, keep[0]).auc > 0.95  # Phi(3 / sqrt 2) = 0.983
    # a patient none of the shadow models trained on gives no evidence
    keep[1:, 5] = False
    assert membership.lira_scores(confidence, keep, target=0)[5] == 0.0
