"""Local training and prediction in PyTorch: seeded, deterministic on CPU."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from oncofed.learning.data import Cohort
from oncofed.learning.metrics import binary_evaluation, binary_metrics, survival_metrics
from oncofed.learning.registry import TASKS
from oncofed.learning.torch_model import module_weights, one_at_a_time, reused_module
from oncofed.wire.base import Evaluation
from oncofed.wire.spec import JobSpec, LocalTraining, ModelSpec
from oncofed.wire.tensors import Weights


def cox_partial_likelihood(
    risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor
) -> torch.Tensor:
    """Negative Cox partial log-likelihood per event, Breslow's method for ties.

    ``-(1/D) sum_{i: d_i=1} [ r_i - log sum_{j: t_j >= t_i} exp(r_j) ]``.
    """
    order = torch.argsort(time, descending=True, stable=True)
    risk, time, event = risk[order], time[order], event[order]
    log_risk_set = torch.logcumsumexp(risk, dim=0)
    ascending = -time  # sorted ascending; the risk set of a tie ends at its last member
    last_tied = torch.searchsorted(ascending, ascending, right=True) - 1
    n_events = event.sum().clamp(min=1.0)
    return -((risk - log_risk_set[last_tied]) * event).sum() / n_events


@dataclass(frozen=True)
class LocalFit:
    weights: Weights
    loss: float  # mean training loss over the last epoch


def _loss_fn(spec: JobSpec) -> nn.Module | None:
    return nn.BCEWithLogitsLoss() if TASKS[spec.model.type] == "binary" else None


def local_optimizer(local: LocalTraining, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The spec's optimizer (Adam or SGD, learning rate, weight decay) over ``params``."""
    if local.optimizer == "adam":
        return torch.optim.Adam(params, lr=local.lr, weight_decay=local.weight_decay)
    return torch.optim.SGD(params, lr=local.lr, weight_decay=local.weight_decay)


class PlainSGD:
    """``torch.optim.SGD`` without momentum, step for step the same arithmetic on the same
    tensors, without what ``Optimizer.step`` adds around it (hooks, a profiler range, the
    compiler's guard): a third of a step of a small model's batch (``test_train.py``)."""

    def __init__(self, params: list[nn.Parameter], lr: float, weight_decay: float) -> None:
        self._params, self._lr, self._decay = params, lr, weight_decay

    def zero_grad(self) -> None:
        for param in self._params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for param in self._params:
            grad = param.grad
            if grad is None:
                continue
            if self._decay:
                grad = grad.add(param, alpha=self._decay)
            param.add_(grad, alpha=-self._lr)


def _optimizer(
    local: LocalTraining, params: list[nn.Parameter]
) -> PlainSGD | torch.optim.Optimizer:
    """``local_optimizer``, with SGD as ``PlainSGD``."""
    if local.optimizer == "sgd":
        return PlainSGD(params, local.lr, local.weight_decay)
    return local_optimizer(local, params)


def warm_up() -> None:
    """Pay now what a process's first training would: the first setting of torch's
    deterministic mode and the first optimizer step import its compiler stack (a second or
    more)."""
    torch.use_deterministic_algorithms(True)
    layer = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(torch.zeros(1, 1)).sum().backward()
    optimizer.step()


@one_at_a_time
def train(
    spec: JobSpec,
    weights: Mapping[str, np.ndarray],
    x: np.ndarray,
    cohort: Cohort,
    *,
    seed: int,
    epochs: int | None = None,
    proximal_mu: float = 0.0,
) -> LocalFit:
    """Train from ``weights`` on ``x`` for ``epochs`` (default: the spec's local epochs)."""
    torch.use_deterministic_algorithms(True)
    generator = torch.Generator().manual_seed(seed)
    torch.default_generator.manual_seed(seed)  # dropout masks (CPU only: no CUDA lazy-init)
    module = reused_module(spec.model, x.shape[1], weights)
    params = list(module.parameters())
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    local = spec.local
    optimizer = _optimizer(local, params)
    inputs = torch.from_numpy(x)
    label = torch.from_numpy(cohort.label.astype(np.float32))
    time = None if cohort.time is None else torch.from_numpy(cohort.time.astype(np.float32))
    bce = _loss_fn(spec)
    n = inputs.shape[0]
    epoch_loss = float("nan")
    module.train()
    for _ in range(epochs or local.epochs):
        total, seen = 0.0, 0
        for batch in torch.randperm(n, generator=generator).split(local.batch_size):
            out = module(inputs[batch])
            if bce is not None:
                loss = bce(out, label[batch])
            else:
                assert time is not None
                loss = cox_partial_likelihood(out, time[batch], label[batch])
            objective = loss
            if proximal_mu > 0:
                drift = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
                objective = loss + proximal_mu / 2 * drift
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            seen += len(batch)
        epoch_loss = total / seen
    return LocalFit(module_weights(module), epoch_loss)


def predict(spec: JobSpec, weights: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Logits (binary models) or log relative risks (survival models)."""
    return scores(spec.model, weights, x)


@one_at_a_time
def scores(model: ModelSpec, weights: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """``model``'s outputs for the design ``x``: logits or log relative risks."""
    module = reused_module(model, x.shape[1], weights)
    module.eval()
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy().astype(np.float64)


def evaluate(
    spec: JobSpec, weights: Mapping[str, np.ndarray], x: np.ndarray, cohort: Cohort
) -> dict[str, float]:
    """The job's metrics for ``weights`` on ``cohort``."""
    score = predict(spec, weights, x)
    if cohort.time is None:
        return binary_metrics(cohort.label, score)
    return survival_metrics(cohort.time, cohort.label, score)


def held_out_evaluation(
    spec: JobSpec,
    weights: Mapping[str, np.ndarray],
    x: np.ndarray,
    cohort: Cohort,
    threshold: int | None,
) -> Evaluation:
    """What a site sends of ``weights`` on its held-out rows: a survival model's finite
    metrics, a binary model's ``metrics.binary_evaluation`` (its sums and score histogram in
    the cells ``threshold`` allows, the finest grid for None)."""
    score = predict(spec, weights, x)
    if cohort.time is not None:
        metrics = survival_metrics(cohort.time, cohort.label, score)
        finite = {k: v for k, v in metrics.items() if np.isfinite(v)}
        return Evaluation(n_eval=len(cohort), metrics=finite)
    return binary_evaluation(cohort.label, score, threshold)
