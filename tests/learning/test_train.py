"""Local training: the Cox loss against lifelines and numpy, determinism, progress, FedProx,
the plain SGD step against PyTorch's."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter

from oncofed.learning.data import Cohort
from oncofed.learning.metrics import log_loss
from oncofed.learning.registry import initial_weights
from oncofed.learning.torch_model import build_module, module_weights
from oncofed.learning.train import (
    PlainSGD,
    cox_partial_likelihood,
    evaluate,
    held_out_evaluation,
    predict,
    train,
)
from oncofed.wire.spec import JobSpec
from oncofed.wire.tensors import Weights


def _survival(seed: int, n: int, *, tied: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    event_time = rng.exponential(scale=np.exp(-(x @ np.array([0.7, -0.4, 0.2]))))
    censor_time = rng.exponential(scale=1.5, size=n)
    time = np.minimum(event_time, censor_time)
    event = (event_time <= censor_time).astype(np.float64)
    if tied:
        time = np.ceil(time * 4)  # a handful of distinct times
    return x, time, event


def _loss(risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    return float(
        cox_partial_likelihood(
            torch.from_numpy(risk), torch.from_numpy(time), torch.from_numpy(event)
        )
    )


def _breslow(risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """-(1/D) sum over events of [r_i - log sum_{t_j >= t_i} exp(r_j)], written naively."""
    total = 0.0
    for i in np.flatnonzero(event == 1):
        total += risk[i] - np.log(np.sum(np.exp(risk[time >= time[i]])))
    return -total / max(event.sum(), 1.0)


def test_cox_loss_matches_lifelines_without_ties() -> None:
    x, time, event = _survival(0, 200, tied=False)
    assert np.unique(time).size == time.size
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(T=time, E=event)
    fitted = CoxPHFitter().fit(frame, duration_col="T", event_col="E")
    params = fitted.params_[["a", "b", "c"]].to_numpy()
    risk = torch.from_numpy(x) @ torch.from_numpy(params)
    loss = cox_partial_likelihood(risk, torch.from_numpy(time), torch.from_numpy(event))
    assert loss.dtype == torch.float64
    n_events = event.sum()
    assert -loss.item() * n_events == pytest.approx(fitted.log_likelihood_, abs=1e-6)
    # and the fitted coefficients are a minimum: moving away increases the loss
    assert _loss(x @ (params * 1.2), time, event) > loss.item()


def test_cox_loss_with_ties_is_breslow() -> None:
    x, time, event = _survival(1, 120, tied=True)
    assert np.unique(time).size < 20
    risk = x @ np.array([0.5, -0.3, 0.1])
    expected = _breslow(risk, time, event)
    assert _loss(risk, time, event) == pytest.approx(expected, rel=1e-12)
    # row order does not matter
    order = np.random.default_rng(2).permutation(time.size)
    assert _loss(risk[order], time[order], event[order]) == pytest.approx(expected, rel=1e-12)


def test_cox_loss_small_hand_example() -> None:
    # times 1, 2, 2, 3 with events at 1, 2 and 2; the 2s share the risk set {2, 2, 3}
    risk = np.array([0.3, -0.2, 0.5, 0.1])
    time = np.array([2.0, 1.0, 2.0, 3.0])
    event = np.array([1.0, 1.0, 1.0, 0.0])
    log_all = np.log(np.exp(risk).sum())
    log_from_2 = np.log(np.exp(risk[[0, 2, 3]]).sum())
    expected = -((-0.2 - log_all) + (0.3 - log_from_2) + (0.5 - log_from_2)) / 3
    assert _loss(risk, time, event) == pytest.approx(expected, rel=1e-12)


def test_cox_loss_without_events_is_zero() -> None:
    assert _loss(np.array([1.0, 2.0]), np.array([1.0, 2.0]), np.zeros(2)) == 0.0


# -- train() ------------------------------------------------------------------------------


def _spec(**changes: Any) -> JobSpec:
    data: dict[str, Any] = {
        "name": "job",
        "dataset": "data",
        "features": ["ext.x0", "ext.x1", "ext.x2", "ext.x3"],
        "outcome": {"type": "binary", "label": "ext.y"},
        "model": {"type": "logistic"},
        "local": {"epochs": 2, "batch_size": 16, "lr": 0.05, "optimizer": "adam"},
    }
    data.update(changes)
    return JobSpec.model_validate(data)


@pytest.fixture
def binary_data() -> tuple[np.ndarray, Cohort]:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(120, 4))
    logit = 2.0 * x[:, 0] - 1.5 * x[:, 1] + 0.5
    y = (rng.random(120) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    cohort = Cohort(numeric=x, dummies=np.empty((120, 0)), label=y, time=None)
    return x.astype(np.float32), cohort


def _distance(a: Weights, b: Weights) -> float:
    return float(np.sqrt(sum(np.sum((a[k] - b[k]) ** 2) for k in a)))


def test_training_is_deterministic_per_seed(binary_data: tuple[np.ndarray, Cohort]) -> None:
    x, cohort = binary_data
    spec = _spec(model={"type": "mlp", "hidden": [8], "dropout": 0.3})
    start = initial_weights(spec.model, 4, seed=0)
    first = train(spec, start, x, cohort, seed=1)
    second = train(spec, start, x, cohort, seed=1)
    other = train(spec, start, x, cohort, seed=2)
    assert set(first.weights) == set(start)
    for k in start:
        assert first.weights[k].dtype == np.float32
        np.testing.assert_array_equal(first.weights[k], second.weights[k])
    assert first.loss == second.loss
    assert _distance(first.weights, start) > 0
    assert _distance(first.weights, other.weights) > 1e-4


def test_sites_training_at_once_in_threads_get_what_each_gets_alone(
    binary_data: tuple[np.ndarray, Cohort],
) -> None:
    """The sites of one edge process train in threads; their dropout masks come from torch's
    one default generator, which each training seeds: they train in turn, so each site's
    result is the one it gets alone."""
    x, cohort = binary_data
    spec = _spec(
        model={"type": "mlp", "hidden": [16], "dropout": 0.5},
        local={"epochs": 3, "batch_size": 4, "lr": 0.05, "optimizer": "sgd"},
    )
    start = initial_weights(spec.model, 4, seed=0)
    alone = {seed: train(spec, start, x, cohort, seed=seed).weights for seed in range(4)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        fits = pool.map(lambda seed: train(spec, start, x, cohort, seed=seed), alone)
        together = dict(zip(alone, fits, strict=True))
    for seed, weights in alone.items():
        for k in start:
            np.testing.assert_array_equal(together[seed].weights[k], weights[k])


def test_shuffling_alone_depends_on_seed(binary_data: tuple[np.ndarray, Cohort]) -> None:
    x, cohort = binary_data
    spec = _spec(local={"epochs": 2, "batch_size": 10, "lr": 0.1, "optimizer": "sgd"})
    start = initial_weights(spec.model, 4, seed=0)
    a = train(spec, start, x, cohort, seed=3)
    b = train(spec, start, x, cohort, seed=3)
    c = train(spec, start, x, cohort, seed=4)
    for k in start:
        np.testing.assert_array_equal(a.weights[k], b.weights[k])
    assert _distance(a.weights, c.weights) > 1e-4


def test_train_does_not_modify_the_given_weights(binary_data: tuple[np.ndarray, Cohort]) -> None:
    x, cohort = binary_data
    spec = _spec(model={"type": "mlp", "hidden": [4]})
    start = initial_weights(spec.model, 4, seed=0)
    copy = {k: v.copy() for k, v in start.items()}
    train(spec, start, x, cohort, seed=0)
    for k in start:
        np.testing.assert_array_equal(start[k], copy[k])


def test_a_module_holds_exactly_the_weights_it_is_given_or_refuses_them() -> None:
    """``build_module`` copies the weights in (later changes to the arrays do not reach it); a
    missing, unexpected or misshapen tensor is refused, as ``load_state_dict`` refuses it."""
    spec = _spec(model={"type": "mlp", "hidden": [4]})
    weights = initial_weights(spec.model, 4, seed=0)
    module = build_module(spec.model, 4, weights)
    held = module_weights(module)
    assert held.keys() == weights.keys()
    for name, values in weights.items():
        np.testing.assert_array_equal(held[name], values)
        values += 1.0
        np.testing.assert_array_equal(module_weights(module)[name], held[name])
    name = "layers.0.weight"
    for wrong in (
        {k: v for k, v in weights.items() if k != name},
        weights | {"layers.9.weight": weights[name]},
        weights | {name: weights[name][:, :3]},
    ):
        with pytest.raises(RuntimeError):
            build_module(spec.model, 4, wrong)


def test_logistic_training_improves_log_loss(binary_data: tuple[np.ndarray, Cohort]) -> None:
    x, cohort = binary_data
    spec = _spec()
    start = initial_weights(spec.model, 4, seed=0)
    before = log_loss(cohort.label, predict(spec, start, x))
    assert before == pytest.approx(np.log(2))  # zero-initialised: every probability 1/2
    fit = train(spec, start, x, cohort, seed=0, epochs=30)
    after = log_loss(cohort.label, predict(spec, fit.weights, x))
    assert after < before - 0.15
    assert fit.loss == pytest.approx(after, abs=0.1)  # last epoch's mean loss
    metrics = evaluate(spec, fit.weights, x, cohort)
    assert metrics["log_loss"] == pytest.approx(after)
    assert metrics["auc"] > 0.8


def test_cox_training_improves_partial_likelihood() -> None:
    x, time, event = _survival(3, 150, tied=False)
    spec = _spec(
        features=["ext.a", "ext.b", "ext.c"],
        outcome={"type": "survival", "time": "rfs_days", "event": "rfs_event"},
        model={"type": "cox"},
        local={"epochs": 1, "batch_size": 150, "lr": 0.05, "optimizer": "adam"},
    )
    cohort = Cohort(numeric=x, dummies=np.empty((150, 0)), label=event, time=time)
    x32 = x.astype(np.float32)
    start = initial_weights(spec.model, 3, seed=0)
    before = _loss(predict(spec, start, x32), time, event)
    fit = train(spec, start, x32, cohort, seed=0, epochs=60)
    after = _loss(predict(spec, fit.weights, x32), time, event)
    assert after < before - 0.05
    assert evaluate(spec, fit.weights, x32, cohort)["c_index"] > 0.6


def test_proximal_term_keeps_weights_near_the_start(
    binary_data: tuple[np.ndarray, Cohort],
) -> None:
    x, cohort = binary_data
    spec = _spec(model={"type": "mlp", "hidden": [8]})
    start = initial_weights(spec.model, 4, seed=0)
    free = train(spec, start, x, cohort, seed=0, epochs=10, proximal_mu=0.0)
    held = train(spec, start, x, cohort, seed=0, epochs=10, proximal_mu=5.0)
    assert _distance(held.weights, start) < 0.8 * _distance(free.weights, start)


def test_the_held_out_evaluation_sends_sums_and_a_histogram_without_small_cells(
    binary_data: tuple[np.ndarray, Cohort],
) -> None:
    """What a site sends of a binary model: its metrics, the sums that pool exactly, and a
    score histogram in cells that hold no label's rows from 1 to the threshold - 1 (on the
    finest grid under secure aggregation, where only the sum over sites is seen)."""
    x, cohort = binary_data
    spec = _spec()
    fit = train(spec, initial_weights(spec.model, 4, seed=0), x, cohort, seed=0, epochs=10)
    plain = held_out_evaluation(spec, fit.weights, x, cohort, 11)
    assert plain.metrics == evaluate(spec, fit.weights, x, cohort)
    assert plain.sums is not None and plain.scores is not None
    assert plain.sums.correct == round(plain.metrics["accuracy"] * 120)
    assert plain.sums.log_loss == pytest.approx(plain.metrics["log_loss"] * 120)
    counts = np.array([plain.scores.positive, plain.scores.negative])
    assert counts.sum() == 120 and not np.any((counts > 0) & (counts < 11))
    assert 2 < len(plain.scores.edges) - 1 < 2048
    secure = held_out_evaluation(spec, fit.weights, x, cohort, None)
    assert secure.scores is not None and len(secure.scores.positive) == 2048
    few = Cohort(
        numeric=cohort.numeric[:15],
        dummies=cohort.dummies[:15],
        label=np.array([1.0] * 3 + [0.0] * 12),
        time=None,
    )
    assert held_out_evaluation(spec, fit.weights, x[:15], few, 11).scores is None  # 3 positives
    survival = _spec(
        outcome={"type": "survival", "time": "rfs_days", "event": "rfs_event"},
        model={"type": "cox"},
    )
    _, time, event = _survival(1, 120, tied=False)
    timed = Cohort(numeric=cohort.numeric, dummies=cohort.dummies, label=event, time=time)
    start = initial_weights(survival.model, 4, seed=0)
    shown = held_out_evaluation(survival, start, x, timed, 11)
    assert shown.scores is None and shown.sums is None and set(shown.metrics) == {"c_index"}


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_plain_sgd_takes_pytorchs_sgd_steps_to_the_bit(weight_decay: float) -> None:
    """Two copies of an MLP trained on the same batches, one by ``torch.optim.SGD``, one by
    ``PlainSGD``, hold the same bits after every step (and they moved)."""
    model = _spec(model={"type": "mlp", "hidden": [8]}).model
    start = initial_weights(model, 4, seed=3)
    ours, theirs = build_module(model, 4, start), build_module(model, 4, start)
    generator = torch.Generator().manual_seed(3)
    x, y = torch.randn(64, 4, generator=generator), torch.rand(64, generator=generator)
    loss = torch.nn.BCEWithLogitsLoss()
    steppers = [
        (ours, PlainSGD(list(ours.parameters()), 0.05, weight_decay)),
        (theirs, torch.optim.SGD(theirs.parameters(), lr=0.05, weight_decay=weight_decay)),
    ]
    for batch in torch.arange(64).split(16):
        for module, optimizer in steppers:
            optimizer.zero_grad()
            loss(module(x[batch]), y[batch]).backward()
            optimizer.step()
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert torch.equal(a, b)
    assert _distance(module_weights(ours), start) > 0.01
