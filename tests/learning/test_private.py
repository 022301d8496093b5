"""DP-SGD local training: determinism, per-patient clipping, the noise's scale, empty Poisson
samples, survival models refused, and a private model that still learns GBSG2."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from lifelines.datasets import load_gbsg2

from oncofed.demo.data import demo_specs
from oncofed.learning.data import Cohort, build_cohort, split_cohort, standardization
from oncofed.learning.private import dpsgd_schedule, train_private
from oncofed.learning.registry import initial_weights
from oncofed.learning.train import evaluate, train
from oncofed.privacy.accounting import calibrate_dpsgd, dpsgd_rdp, epsilon
from oncofed.wire.spec import JobSpec
from oncofed.wire.tensors import Weights
from tests.analytics.federated import gbsg2
from tests.learning.test_train import _spec as train_spec


def _spec(**changes: Any) -> JobSpec:
    """``test_train``'s job, trained in one full-batch SGD step an epoch by default."""
    local = {"epochs": 1, "batch_size": 1000, "lr": 0.5, "optimizer": "sgd"}
    return train_spec(**{"local": local, **changes})


def _data(n: int, seed: int = 5) -> tuple[np.ndarray, Cohort]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = (rng.random(n) < 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.5 * x[:, 1])))).astype(np.float64)
    return x.astype(np.float32), Cohort(numeric=x, dummies=np.empty((n, 0)), label=y, time=None)


def _flat(weights: Weights) -> np.ndarray:
    return np.concatenate([weights[k].astype(np.float64).ravel() for k in sorted(weights)])


def _summed_gradient(spec: JobSpec, start: Weights, end: Weights, batch: float) -> np.ndarray:
    """What one full-batch SGD step added up (w1 = w0 - lr * sum / batch), from its weights."""
    return -(_flat(end) - _flat(start)) * batch / spec.local.lr


def test_schedule_is_poisson_rate_and_plain_step_count() -> None:
    assert dpsgd_schedule(100, 32, 3) == (0.32, 12)  # ceil(100 / 32) = 4 steps an epoch
    assert dpsgd_schedule(20, 64, 5) == (1.0, 5)  # a batch larger than the rows: all of them
    with pytest.raises(ValueError, match="at least one row"):
        dpsgd_schedule(0, 32, 1)


def test_same_seed_same_weights_and_the_loss_is_not_released() -> None:
    x, cohort = _data(120)
    spec = _spec(
        model={"type": "mlp", "hidden": [8], "dropout": 0.3},
        local={"epochs": 3, "batch_size": 16, "lr": 0.05, "optimizer": "adam"},
    )
    start = initial_weights(spec.model, 4, seed=0)
    runs = [
        train_private(spec, start, x, cohort, seed=seed, noise_multiplier=1.0, max_grad_norm=1.0)
        for seed in (1, 1, 2)
    ]
    first, again, other = (_flat(r.weights) for r in runs)
    np.testing.assert_array_equal(first, again)
    assert np.linalg.norm(first - other) > 1e-3
    assert np.linalg.norm(first - _flat(start)) > 1e-3
    assert {k: v.dtype for k, v in runs[0].weights.items()} == {k: np.float32 for k in start}
    assert np.isnan(runs[0].loss)  # computed from the rows without noise: never sent


def test_without_noise_a_step_is_the_mean_of_clipped_patient_gradients() -> None:
    x, cohort = _data(60)
    spec = _spec()
    rng = np.random.default_rng(1)
    start = {
        "layers.0.weight": rng.normal(size=(1, 4)).astype(np.float32),
        "layers.0.bias": np.array([0.3], dtype=np.float32),
    }
    clip = 0.6
    fit = train_private(spec, start, x, cohort, seed=0, noise_multiplier=0.0, max_grad_norm=clip)
    # by hand: logistic gradient (p - y) [x, 1] per patient, scaled to at most ``clip``
    design = np.hstack([x.astype(np.float64), np.ones((60, 1))])
    coefficients = np.r_[start["layers.0.weight"][0], start["layers.0.bias"]].astype(np.float64)
    p = 1 / (1 + np.exp(-(design @ coefficients)))
    gradients = (p - cohort.label)[:, None] * design
    norms = np.linalg.norm(gradients, axis=1)
    assert (norms > clip).sum() > 5 and (norms < clip).sum() > 5  # clipping matters here
    clipped = gradients * np.minimum(1.0, clip / (norms + 1e-6))[:, None]
    expected = coefficients - spec.local.lr * clipped.mean(axis=0)
    got = np.r_[fit.weights["layers.0.weight"][0], fit.weights["layers.0.bias"]]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_one_patient_changes_a_step_by_at_most_the_clip_norm() -> None:
    x, cohort = _data(50)
    extreme = np.full((1, 4), 1e3)  # far outside the others, with the unexpected label
    x_with = np.vstack([x, extreme]).astype(np.float32)
    with_one = Cohort(
        numeric=np.vstack([cohort.numeric, extreme]),
        dummies=np.empty((51, 0)),
        label=np.r_[cohort.label, 0.0],
        time=None,
    )
    spec = _spec(model={"type": "mlp", "hidden": [8]})
    start = initial_weights(spec.model, 4, seed=3)
    start["layers.1.weight"] = np.full_like(start["layers.1.weight"], 0.5)  # gradients reach all
    clip = 1.0

    def influence(fit: Any, fit_with: Any) -> float:
        """The extreme patient's share of the summed gradient of one full-batch step."""
        alone = _summed_gradient(spec, start, fit.weights, 50)
        return float(np.linalg.norm(_summed_gradient(spec, start, fit_with.weights, 51) - alone))

    private = influence(
        *(
            train_private(spec, start, xs, c, seed=0, noise_multiplier=0.0, max_grad_norm=clip)
            for xs, c in ((x, cohort), (x_with, with_one))
        )
    )
    assert 0.99 * clip < private < clip * (1 + 1e-3)  # clipped to the norm, not dropped
    plain = influence(
        *(train(spec, start, xs, c, seed=0) for xs, c in ((x, cohort), (x_with, with_one)))
    )
    assert plain > 100 * clip  # without clipping the same patient moves the step far more


def test_noise_has_the_calibrated_scale_and_depends_on_the_seed() -> None:
    x, cohort = _data(40)
    spec = _spec(
        model={"type": "mlp", "hidden": [64]},
        local={"batch_size": 40, "lr": 1.0, "optimizer": "sgd"},
    )
    start = initial_weights(spec.model, 4, seed=0)
    sigma, clip = 2.0, 0.5

    def step(multiplier: float, seed: int) -> np.ndarray:
        fit = train_private(
            spec, start, x, cohort, seed=seed, noise_multiplier=multiplier, max_grad_norm=clip
        )
        return _summed_gradient(spec, start, fit.weights, 40)

    noise = step(sigma, 7) - step(0.0, 7)  # one full-batch step: the same patients in both
    assert noise.size == 4 * 64 + 64 + 64 + 1
    assert np.std(noise) == pytest.approx(sigma * clip, rel=0.15)
    assert abs(np.mean(noise)) < 4 * sigma * clip / np.sqrt(noise.size)
    assert np.linalg.norm(step(sigma, 8) - step(sigma, 7)) > sigma * clip


def test_empty_poisson_samples_are_noise_only_steps() -> None:
    x, cohort = _data(3)
    # 3 rows at rate 1/3 for 30 steps: a step draws nobody with probability (2/3)^3, so some
    # steps of this run are empty (all 30 draw someone with probability 3e-5)
    spec = _spec(local={"epochs": 10, "batch_size": 1, "lr": 0.1, "optimizer": "adam"})
    assert dpsgd_schedule(3, 1, 10) == (1 / 3, 30)
    start = initial_weights(spec.model, 4, seed=0)
    fits = [
        train_private(spec, start, x, cohort, seed=4, noise_multiplier=1.0, max_grad_norm=1.0)
        for _ in range(2)
    ]
    weights = _flat(fits[0].weights)
    assert np.all(np.isfinite(weights)) and np.linalg.norm(weights - _flat(start)) > 0.1
    np.testing.assert_array_equal(weights, _flat(fits[1].weights))


def test_survival_models_are_refused() -> None:
    x, cohort = _data(30)
    spec = _spec(
        outcome={"type": "survival", "time": "rfs_days", "event": "rfs_event"},
        model={"type": "cox"},
    )
    survival = Cohort(cohort.numeric, cohort.dummies, cohort.label, np.arange(30.0))
    start = initial_weights(spec.model, 4, seed=0)
    with pytest.raises(ValueError, match="partial likelihood couples the patients"):
        train_private(spec, start, x, survival, seed=0, noise_multiplier=1.0, max_grad_norm=1.0)


def test_a_private_model_still_learns_gbsg2_recurrence() -> None:
    """The demo's logistic job at epsilon 3 (delta 1e-5): clearly better than chance on the
    held-out quarter, not far from the model trained without DP."""
    [spec] = [s for s in demo_specs() if s.name == "gbsg2-recurrence-5y"]
    table = gbsg2() | {"biomarker.ER.value": load_gbsg2()["estrec"].to_numpy(float)}
    fitted, held_out = split_cohort(spec, build_cohort(spec, table))
    scaling = standardization(fitted.stats())
    x, x_out = fitted.design(scaling), held_out.design(scaling)
    epochs = spec.rounds * spec.local.epochs
    rate, steps = dpsgd_schedule(len(fitted), spec.local.batch_size, epochs)
    sigma = calibrate_dpsgd(3.0, 1e-5, rate, steps)
    assert sigma > 1.0 and epsilon(dpsgd_rdp(rate, sigma, steps), 1e-5) <= 3.0
    start = initial_weights(spec.model, spec.n_inputs, spec.seed)
    private = train_private(
        spec, start, x, fitted, seed=1, noise_multiplier=sigma, max_grad_norm=1.0, epochs=epochs
    )
    plain = train(spec, start, x, fitted, seed=1, epochs=epochs)
    auc = evaluate(spec, private.weights, x_out, held_out)["auc"]
    assert auc > 0.68
    assert auc > evaluate(spec, plain.weights, x_out, held_out)["auc"] - 0.05
