"""A site's held-out figures on the wire: a score histogram on the fixed grid and sums that fit
its rows, or a clear validation error (never a crash, never a figure pooled from nonsense)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from oncofed.wire.base import SCORE_LEVELS, Evaluation
from oncofed.wire.messages import EvaluateResult

BINS = 1 << SCORE_LEVELS


def _body(**changes: Any) -> dict[str, Any]:
    evaluation: dict[str, Any] = {
        "n_eval": 30,
        "metrics": {"auc": 0.7, "accuracy": 0.6, "log_loss": 0.6, "mean_probability": 0.4},
        "sums": {"correct": 18, "log_loss": 18.0, "probability": 12.0},
        "scores": {"edges": [0, 1000, 1100, BINS], "positive": [0, 12, 0], "negative": [0, 18, 0]},
    }
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        target = evaluation
        for key in parents:
            target = target[key]
        target[leaf] = value
    return {"evaluation": evaluation, "compute_seconds": 1.0}


def test_a_sound_evaluation_validates() -> None:
    result = EvaluateResult.model_validate(_body())
    assert result.evaluation.scores is not None and result.evaluation.scores.rows == 30
    assert Evaluation(n_eval=3, metrics={}).scores is None  # a survival model's, or an old one


def test_the_whole_grid_validates_and_one_edge_out_of_order_anywhere_is_refused() -> None:
    """A site whose every bin may stand alone sends all 2,048 of them (checked in C: about
    0.05 ms of the orchestrator's CPU an answer less than a Python loop's over the pairs)."""
    edges = list(range(BINS + 1))
    whole = {"scores.edges": edges, "scores.positive": [0] * (BINS - 12) + [1] * 12,
             "scores.negative": [1] * 18 + [0] * (BINS - 18)}  # fmt: skip
    assert EvaluateResult.model_validate(_body(**whole)).evaluation.scores is not None
    for at in (1, BINS // 2, BINS - 2):  # the first and last edges stay 0 and 2048
        swapped = [*edges]
        swapped[at], swapped[at + 1] = swapped[at + 1], swapped[at]
        with pytest.raises(ValidationError, match="edges must increase"):
            EvaluateResult.model_validate(_body(**{**whole, "scores.edges": swapped}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scores.edges": [0, 1000, 1100]}, "edges must run from 0"),
        ({"scores.edges": [1, 1000, 1100, BINS]}, "edges must run from 0"),
        ({"scores.edges": [0, 1100, 1000, BINS]}, "edges must increase"),
        ({"scores.edges": [0, 1000, 1000, BINS]}, "edges must increase"),
        ({"scores.edges": [0, 1000, 1100, BINS + 1]}, "less than or equal"),
        ({"scores.positive": [12, 0]}, "one count per cell"),
        ({"scores.negative": [0, 18, 0, 0]}, "one count per cell"),
        ({"scores.positive": [0, -12, 0]}, "greater than or equal to 0"),
        ({"scores.positive": [0, 12.5, 0]}, "valid integer"),
        ({"scores.positive": [0, 13, 0]}, "holds 31 rows, not n_eval 30"),
        ({"scores.positive": [0, 0, 0]}, "holds 18 rows, not n_eval 30"),
        ({"sums.correct": 31}, "more rows classified correctly"),
        ({"sums.log_loss": -1.0}, "greater than or equal to 0"),
        ({"sums.log_loss": float("nan")}, "finite"),
        ({"sums.probability": 30.5}, "probabilities above n_eval"),
        ({"sums.probability": float("inf")}, "finite"),
        ({"scores.edges": list(range(BINS + 2))}, "at most"),
    ],
)
def test_a_hostile_evaluation_is_a_clear_error(change: dict[str, Any], message: str) -> None:
    body = json.dumps(_body(**change), allow_nan=True)
    with pytest.raises(ValidationError, match=message):
        EvaluateResult.model_validate_json(body)
