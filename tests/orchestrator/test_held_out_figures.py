"""The pooled held-out figures a job's rounds show (issue 14): those of the pooled rows, from
the sites' score histograms and sums, never the sample-weighted mean of the sites' own; and a
hostile site's held-out figures refused with a clear error (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from oncofed.learning.metrics import SiteScores, histogram_auc
from tests.orchestrator.test_hostile_numbers import (
    job_view,
    post,
    refused,
    submit,
    task_of,
    train_through,
)
from tests.orchestrator.test_rounds import held_out
from tests.support import State, make_spec

BINS = 2048


def evaluation(
    n: int, positive: list[int], negative: list[int], edges: list[int], auc: float
) -> dict[str, Any]:
    correct = sum(negative[: len(negative) // 2]) + sum(positive[len(positive) // 2 :])
    return {
        "evaluation": {
            "n_eval": n,
            "metrics": {"auc": auc, "accuracy": correct / n, "log_loss": 0.6},
            "sums": {"correct": correct, "log_loss": 0.6 * n, "probability": 0.4 * n},
            "scores": {"edges": edges, "positive": positive, "negative": negative},
        },
        "compute_seconds": 0,
    }


def evaluate_round(api: TestClient, state: State) -> tuple[str, dict[str, Any], dict[str, Any]]:
    job_id = submit(api, state, make_spec(rounds=1).model_dump(mode="json"))
    train_through(state, job_id, {"alpha": 30, "beta": 10})
    alpha, beta = task_of(api, state, "alpha"), task_of(api, state, "beta")
    assert alpha["kind"] == beta["kind"] == "evaluate"
    return job_id, alpha, beta


def test_the_round_shows_the_auc_of_the_pooled_rows(api: TestClient, state: State) -> None:
    """Each site's own ranking is perfect (AUC 1), but beta's rows all score above alpha's:
    the old view showed 1.0; the pooled rows' AUC is below, from the histograms, with the
    held-out rows behind it and accuracy from the summed counts."""
    job_id, alpha, beta = evaluate_round(api, state)
    n_alpha, n_beta = held_out(30), held_out(10)
    assert (n_alpha, n_beta) == (10, 3)
    # alpha: 5 negatives in bin 100, 5 positives in bin 200; beta: 1 negative in bin 300,
    # 2 positives in bin 400 (each site's own threshold allows it: a policy of 1)
    a = ([0, 0, 0, 5, 0], [0, 5, 0, 0, 0], [0, 100, 101, 200, 201, BINS])
    b = ([0, 0, 0, 2, 0], [0, 1, 0, 0, 0], [0, 300, 301, 400, 401, BINS])
    ok = post(api, state, "alpha", alpha["task_id"], evaluation(n_alpha, a[0], a[1], a[2], 1.0))
    assert ok.status_code == 200, ok.text
    ok = post(api, state, "beta", beta["task_id"], evaluation(n_beta, b[0], b[1], b[2], 1.0))
    assert ok.status_code == 200, ok.text
    view = job_view(api, state, job_id)
    assert view["status"] == "completed"
    final = view["rounds"][-1]
    # pairs: alpha's 5 positives above alpha's 5 negatives (25), below beta's negative (0 of 5);
    # beta's 2 positives above all 6 negatives (12): 37 of 7 x 6 = 42
    assert final["metrics"]["auc"] == pytest.approx(37 / 42)
    assert final["metrics"]["auc_lower"] == final["metrics"]["auc_upper"] == pytest.approx(37 / 42)
    assert final["metrics"]["accuracy"] == pytest.approx((10 + 3) / 13)
    assert final["metric_rows"]["auc"] == final["metric_rows"]["accuracy"] == 13
    assert any(note.startswith("auc: of the pooled held-out rows") for note in final["notes"])
    expected = histogram_auc(
        [SiteScores(np.array(p), np.array(q), np.array(e)) for p, q, e in (a, b)]
    )
    assert expected is not None and expected.auc == pytest.approx(37 / 42)


def test_a_site_without_a_histogram_is_named_as_left_out(api: TestClient, state: State) -> None:
    """A site whose held-out rows hold a small count of a label sends no histogram: the AUC is
    of the other site's rows, and the round says whose rows it leaves out."""
    job_id, alpha, beta = evaluate_round(api, state)
    a = ([0, 5, 0], [5, 0, 0], [0, 100, 200, BINS])
    assert post(api, state, "alpha", alpha["task_id"], evaluation(10, *a, 1.0)).status_code == 200
    lone = {"evaluation": {"n_eval": 3, "metrics": {"auc": 0.5}}, "compute_seconds": 0}
    assert post(api, state, "beta", beta["task_id"], lone).status_code == 200
    final = job_view(api, state, job_id)["rounds"][-1]
    assert final["metrics"]["auc"] == pytest.approx(1.0)
    assert final["metric_rows"]["auc"] == 10 and final["metric_rows"]["accuracy"] == 10
    left = [note for note in final["notes"] if "leaves out 3 held-out rows of beta" in note]
    assert len(left) == 2  # the AUC (no histogram) and the sums (none either)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"metrics": {"auc": 1.5}}, ("auc", "outside 0 to 1")),
        ({"metrics": {"log_loss": -0.1}}, ("log_loss", "below 0")),
        ({"metrics": {"auc": 0.0}}, ("auc 0", "histogram allows")),  # every positive is above
        ({"sums": {"correct": 11, "log_loss": 1.0, "probability": 1.0}}, ("more rows",)),
        (
            {"scores": {"edges": [0, 100, BINS], "positive": [5, 0], "negative": [4, 0]}},
            ("9 rows",),
        ),
        ({"scores": {"edges": [0, 100], "positive": [5], "negative": [5]}}, ("edges",)),
        (
            {"scores": {"edges": [0, 100, BINS], "positive": [5, -1], "negative": [5, 1]}},
            ("greater",),
        ),
    ],
)
def test_hostile_held_out_figures_are_refused(
    api: TestClient, state: State, change: dict[str, Any], words: tuple[str, ...]
) -> None:
    job_id, alpha, beta = evaluate_round(api, state)
    body = evaluation(10, [0, 5, 0], [5, 0, 0], [0, 100, 200, BINS], 1.0)
    body["evaluation"].update(change)
    refused(post(api, state, "alpha", alpha["task_id"], body), *words)
    good = evaluation(3, [0, 2], [1, 0], [0, 300, BINS], 1.0)
    assert post(api, state, "beta", beta["task_id"], good).status_code == 200
    view = job_view(api, state, job_id)
    assert view["status"] == "completed"
    assert view["rounds"][-1]["metric_rows"]["auc"] == 3  # beta's rows only
