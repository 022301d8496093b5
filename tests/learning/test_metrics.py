"""Evaluation metrics against lifelines and brute-force definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from lifelines.datasets import load_gbsg2
from lifelines.utils import concordance_index as lifelines_c_index

from oncofed.learning.metrics import (
    accuracy,
    auc,
    binary_metrics,
    concordance_index,
    log_loss,
    survival_metrics,
    weighted_mean,
)


def _survival_data(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    event_time = rng.exponential(scale=np.exp(-0.8 * x))
    censor_time = rng.exponential(scale=1.5, size=n)
    time = np.minimum(event_time, censor_time)
    event = (event_time <= censor_time).astype(np.float64)
    risk = np.round(x + rng.normal(scale=0.5, size=n), 1)  # rounded: ties in risk too
    return time, event, risk


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_concordance_matches_lifelines_on_continuous_times(seed: int) -> None:
    time, event, risk = _survival_data(seed)
    assert np.unique(time).size == time.size
    assert np.unique(risk).size < risk.size
    ours = concordance_index(time, event, risk)
    assert 0.6 < ours < 0.9  # informative risk
    assert ours == pytest.approx(lifelines_c_index(time, -risk, event), abs=1e-12)


@pytest.fixture(scope="module")
def gbsg2() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = load_gbsg2()
    time = data["time"].to_numpy(dtype=np.float64)
    event = data["cens"].to_numpy(dtype=np.float64)
    risk = 0.1 * data["pnodes"].to_numpy() - 0.001 * data["progrec"].to_numpy()
    return time, event, risk.astype(np.float64)


def test_concordance_matches_lifelines_on_gbsg2_untied_subset(
    gbsg2: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    time, event, risk = gbsg2
    _, first, counts = np.unique(time, return_index=True, return_counts=True)
    rows = first[counts == 1]  # patients whose follow-up time nobody else shares
    time, event, risk = time[rows], event[rows], risk[rows]
    assert rows.size > 400
    expected = lifelines_c_index(time, -risk, event)
    assert concordance_index(time, event, risk) == pytest.approx(expected, abs=1e-12)


def test_concordance_matches_lifelines_on_gbsg2(
    gbsg2: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    time, event, risk = gbsg2
    expected = lifelines_c_index(time, -risk, event)
    assert concordance_index(time, event, risk) == pytest.approx(expected, abs=1e-12)


def test_concordance_event_tied_with_later_censoring() -> None:
    # pair (0, 1): event at 1, still at risk at 1 -> comparable, concordant (risk 1 > 0)
    # pair (0, 2): comparable, discordant (risk 1 < 2); so C = 1/2
    time = np.array([1.0, 1.0, 2.0])
    event = np.array([1.0, 0.0, 0.0])
    risk = np.array([1.0, 0.0, 2.0])
    assert concordance_index(time, event, risk) == pytest.approx(0.5)


def test_concordance_hand_examples() -> None:
    time = np.array([4.0, 1.0, 3.0, 2.0])
    event = np.array([1.0, 1.0, 0.0, 1.0])
    # risk decreasing in time: every comparable pair concordant
    assert concordance_index(time, event, -time) == 1.0
    assert concordance_index(time, event, time) == 0.0
    assert concordance_index(time, event, np.zeros(4)) == 0.5
    # comparable pairs (event at t_i < t_j): from t=1 three, from t=2 two -> 5 pairs
    risk = np.array([0.0, 3.0, 1.0, 2.0])  # t=1:3, t=2:2, t=3:1, t=4:0 -> all concordant
    assert concordance_index(time, event, risk) == 1.0
    risk = np.array([0.0, 3.0, 2.0, 1.0])  # pair (t=2 risk 1) vs (t=3 risk 2) discordant
    assert concordance_index(time, event, risk) == pytest.approx(4 / 5)
    # two events at the same time are not comparable with each other
    tied = np.array([1.0, 1.0])
    assert math.isnan(concordance_index(tied, np.ones(2), np.array([1.0, 2.0])))
    assert survival_metrics(time, event, risk) == {"c_index": pytest.approx(4 / 5)}


def test_concordance_without_comparable_pairs_is_nan() -> None:
    time = np.array([1.0, 2.0, 3.0])
    assert math.isnan(concordance_index(time, np.zeros(3), np.array([1.0, 2.0, 3.0])))


def _auc_brute_force(label: np.ndarray, score: np.ndarray) -> float:
    pos, neg = score[label == 1], score[label == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return float(wins / (pos.size * neg.size))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_auc_equals_pairwise_definition_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    label = (rng.random(80) < 0.35).astype(np.float64)
    score = np.round(label * 0.8 + rng.normal(size=80), 1)  # many ties
    assert np.unique(score).size < score.size
    expected = _auc_brute_force(label, score)
    assert 0.55 < expected < 1.0
    assert auc(label, score) == pytest.approx(expected, abs=1e-12)


def test_auc_hand_examples() -> None:
    label = np.array([0.0, 0.0, 1.0, 1.0])
    assert auc(label, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc(label, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert auc(label, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert auc(label, np.array([0.1, 0.6, 0.6, 0.9])) == pytest.approx(3.5 / 4)


def test_auc_with_one_class_is_nan() -> None:
    assert math.isnan(auc(np.ones(4), np.arange(4.0)))
    assert math.isnan(auc(np.zeros(4), np.arange(4.0)))


def test_log_loss_hand_examples() -> None:
    assert log_loss(np.array([1.0, 0.0]), np.zeros(2)) == pytest.approx(math.log(2))
    label = np.array([1.0, 0.0, 1.0])
    logit = np.array([2.0, -1.0, -3.0])
    expected = (
        -math.log(1 / (1 + math.exp(-2.0)))
        - math.log(1 - 1 / (1 + math.exp(1.0)))
        - math.log(1 / (1 + math.exp(3.0)))
    ) / 3
    assert log_loss(label, logit) == pytest.approx(expected, rel=1e-12)


def test_log_loss_is_stable_for_large_logits() -> None:
    assert log_loss(np.array([1.0]), np.array([1000.0])) == pytest.approx(0.0, abs=1e-12)
    assert log_loss(np.array([1.0]), np.array([-1000.0])) == pytest.approx(1000.0)
    assert log_loss(np.array([0.0]), np.array([1000.0])) == pytest.approx(1000.0)


def test_accuracy_hand_examples() -> None:
    label = np.array([1.0, 0.0, 1.0, 0.0])
    # predictions 1, 0, 0, 0 (a logit of exactly 0 predicts class 0)
    assert accuracy(label, np.array([2.0, -1.0, -0.5, 0.0])) == 0.75
    assert accuracy(label, np.array([1.0, -1.0, 1.0, -1.0])) == 1.0
    assert accuracy(label, np.array([-1.0, 1.0, -1.0, 1.0])) == 0.0


def test_binary_metrics_bundle() -> None:
    label = np.array([0.0, 1.0])
    logit = np.array([-1.0, 1.0])
    metrics = binary_metrics(label, logit)
    assert metrics["auc"] == 1.0
    assert metrics["accuracy"] == 1.0
    assert metrics["log_loss"] == pytest.approx(math.log(1 + math.exp(-1.0)))
    assert metrics["mean_probability"] == pytest.approx(0.5)


def test_weighted_mean_skips_nan_and_empty_sites() -> None:
    values = [(0.5, 10), (float("nan"), 100), (0.8, 30), (0.1, 0), (float("inf"), 5)]
    assert weighted_mean(values) == pytest.approx((0.5 * 10 + 0.8 * 30) / 40)
    assert weighted_mean([(float("nan"), 10)]) is None
    assert weighted_mean([]) is None
    assert weighted_mean([(0.3, 0)]) is None
