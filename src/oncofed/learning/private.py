"""Differentially private local training: DP-SGD (Abadi et al. 2016) with Opacus.

Each step trains on a Poisson sample of the rows (each row in with probability
``batch_size / n``), clips every patient's gradient to ``max_grad_norm`` and adds Gaussian
noise of standard deviation ``noise_multiplier * max_grad_norm`` to their sum, so one patient
moves a step by a bounded, noise-masked amount. ``dpsgd_schedule`` gives the sample rate and
number of steps the accountant (``oncofed.privacy.accounting.dpsgd_rdp``) charges.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler

from oncofed.learning.data import Cohort
from oncofed.learning.torch_model import build_module, module_weights, one_at_a_time
from oncofed.learning.train import LocalFit, _loss_fn, local_optimizer
from oncofed.wire.spec import JobSpec


def dpsgd_schedule(n: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """The sample rate and number of steps of ``epochs`` epochs of DP-SGD over ``n`` rows:
    each row is in a step's sample with probability ``min(1, batch_size / n)``, and an epoch is
    ``ceil(n / batch_size)`` steps (as many as plain training takes)."""
    if n < 1 or batch_size < 1 or epochs < 1:
        raise ValueError("DP-SGD needs at least one row, a batch size and an epoch")
    return min(1.0, batch_size / n), epochs * math.ceil(n / batch_size)


@one_at_a_time
def train_private(
    spec: JobSpec,
    weights: Mapping[str, np.ndarray],
    x: np.ndarray,
    cohort: Cohort,
    *,
    seed: int,
    noise_multiplier: float,
    max_grad_norm: float,
    epochs: int | None = None,
) -> LocalFit:
    """Train from ``weights`` on ``x`` with DP-SGD for ``epochs`` (default: the spec's local
    epochs); the spec's optimizer runs on the noisy gradients (post-processing).

    The same ``seed`` gives the same weights: it seeds the sampler, the noise and dropout.
    Whoever knows it can regenerate the noise and the samples, so a site's seed must be its
    own secret, never derived from the job alone. The returned loss is NaN: it would be
    computed from the patients' rows without noise, outside the guarantee.
    """
    bce = _loss_fn(spec)
    if bce is None:
        raise ValueError(
            f"differential privacy trains binary models only, and {spec.model.type!r} is a "
            "survival model: a Cox partial likelihood couples the patients of a batch (each "
            "one's risk set holds the others), so clipping each patient's gradient does not "
            "bound what one patient changes"
        )
    if not (noise_multiplier >= 0.0 and max_grad_norm > 0.0):
        raise ValueError("DP-SGD needs a noise multiplier >= 0 and a clip norm > 0")
    n = x.shape[0]
    sample_rate, steps = dpsgd_schedule(n, spec.local.batch_size, epochs or spec.local.epochs)
    sampling, noise = (
        torch.Generator().manual_seed(int(s.generate_state(1, np.uint64)[0]))
        for s in np.random.SeedSequence(seed).spawn(2)
    )
    torch.use_deterministic_algorithms(True)
    torch.default_generator.manual_seed(seed)  # dropout masks (CPU only: no CUDA lazy-init)
    module = build_module(spec.model, x.shape[1], weights)
    per_sample = GradSampleModule(module)  # per-sample gradients of the mean loss, rescaled
    optimizer = DPOptimizer(
        local_optimizer(spec.local, list(module.parameters())),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=sample_rate * n,  # the noisy sum is divided by this, not the draw
        generator=noise,
    )
    sampler = UniformWithReplacementSampler(
        num_samples=n, sample_rate=sample_rate, generator=sampling, steps=steps
    )
    inputs = torch.from_numpy(x)
    label = torch.from_numpy(cohort.label.astype(np.float32))
    module.train()
    with warnings.catch_warnings():
        # Opacus's per-sample hooks sit on the first layer too, whose input needs no gradient:
        # torch then says the hook fires on the layer's output gradient, which is what Opacus
        # uses (a UserWarning, an error in our tests).
        warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
        for rows in sampler:
            batch = torch.tensor(rows, dtype=torch.long)  # may be empty: the step is noise only
            loss = bce(per_sample(inputs[batch]), label[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    per_sample.cleanup()
    return LocalFit(module_weights(module), float("nan"))
