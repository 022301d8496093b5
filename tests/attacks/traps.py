"""Trap weights for an MLP: a first layer whose neurons each see a few patients, so that one
SGD step writes single patients' rows into the update, labels included.

The hidden layer is ``groups`` random unit directions u_g, each with ``thresholds`` cuts c_k
and two neurons per cut, relu(u_g'x - c_k), with output weights +1 and -1. The twins cancel, so
every patient's logit is 0, p_i = 1/2 and its error e_i = 1/2 - y_i is +-1/2. One full-batch SGD
step changes a neuron's weights by -lr/n sum e_i x_i and its bias by -lr/n sum e_i, over the
patients above its cut. Between consecutive cuts the differences isolate the patients in one
bin: when that is one patient, the weight difference over the bias difference is the patient's
standardised row, which the announced standardisation undoes, and the bias difference's sign
is the label (positive: y = 1). Clipping an update scales all of its bins alike, and a sum of
several sites' updates is the sum of their bins: a bin holding one patient of any site still
gives that row.

Whether a bin holds one patient is judged without its size (clipping makes it differ from site
to site): its row must read as a patient (whole numbers, 0/1 dummies, one level per
categorical), and two directions must isolate the same one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from oncofed.wire.messages import Standardization
from oncofed.wire.spec import JobSpec
from oncofed.wire.tensors import Weights
from tests.attacks.support import Row

WALK = 0.99
"""Each step towards the trap, as a fraction of the clip norm (room for float32 rounding)."""
EMPTY = 1e-3
"""A bin whose bias difference is below this fraction of the largest holds nobody (rounding)."""
SPREAD = 1.5
"""Cuts at normal quantiles of this standard deviation: projections of standardised rows."""


@dataclass(frozen=True)
class Trap:
    weights: Weights
    groups: int
    thresholds: int


def hidden_width(groups: int, thresholds: int) -> int:
    """The hidden layer a trap needs: two neurons per cut."""
    return 2 * groups * thresholds


def trap_model(spec: JobSpec, groups: int, thresholds: int, seed: int) -> Trap:
    """The trap for ``spec`` (an MLP of ``hidden_width`` neurons): per group a unit direction
    and cuts around where its projections should lie (numeric inputs are standardised;
    dummies are taken as 1/2 on average)."""
    rng = np.random.default_rng(seed)
    width, numeric = spec.n_inputs, len(spec.numeric_names)
    hidden = hidden_width(groups, thresholds)
    weight = np.zeros((hidden, width), np.float32)
    bias = np.zeros(hidden, np.float32)
    quantiles = norm.ppf((np.arange(thresholds) + 0.5) / thresholds) * SPREAD
    for g in range(groups):
        direction = rng.normal(size=width)
        direction /= np.linalg.norm(direction)
        block = slice(2 * g * thresholds, 2 * (g + 1) * thresholds)
        weight[block] = direction
        bias[block] = -np.repeat(quantiles + direction[numeric:].sum() / 2, 2)
    output = np.tile(np.array([1.0, -1.0], np.float32), groups * thresholds)
    weights = {
        "layers.0.weight": weight,
        "layers.0.bias": bias,
        "layers.1.weight": output[None, :],
        "layers.1.bias": np.zeros(1, np.float32),
    }
    return Trap(weights, groups, thresholds)


def walk(start: Weights, end: Weights, clip_norm: float) -> list[Weights]:
    """Models from ``start`` to ``end`` on a straight line, each within one clip norm of the one
    before (what a site that bounds each round's step lets through); the last is ``end``."""
    distance = math.sqrt(sum(((end[k].astype(np.float64) - start[k]) ** 2).sum() for k in end))
    steps = max(1, math.ceil(distance / (WALK * clip_norm)))
    return [
        {k: (start[k] + i / steps * (end[k] - start[k].astype(np.float64))).astype(np.float32)
         for k in end}
        for i in range(1, steps)
    ] + [end]  # fmt: skip


def read_trap(spec: JobSpec, trap: Trap, step: Weights, scaling: Standardization) -> list[Row]:
    """The rows a trap's update (``step``: returned model minus trap, float64; or a sum of
    such) gives away: the numeric and dummy inputs, then the label."""
    numeric = len(spec.numeric_names)
    mean, sd = np.asarray(scaling.mean), np.asarray(scaling.std)
    twins = (step["layers.0.weight"][0::2] - step["layers.0.weight"][1::2]) / 2
    twin_bias = (step["layers.0.bias"][0::2] - step["layers.0.bias"][1::2]) / 2
    blocks = [slice(g * trap.thresholds, (g + 1) * trap.thresholds) for g in range(trap.groups)]
    floor = EMPTY * np.abs(twin_bias).max()
    seen: dict[Row, set[int]] = {}
    for g, block in enumerate(blocks):
        for dw, db in zip(_bins(twins[block]), _bins(twin_bias[block]), strict=True):
            if abs(db) < floor:
                continue
            x = dw / db
            raw = np.concatenate([x[:numeric] * sd + mean, x[numeric:]])
            row = np.rint(raw)
            if np.abs(raw - row).max() > 0.1 or not _plausible(spec, row):
                continue
            seen.setdefault((*map(float, row + 0.0), 1.0 if db > 0 else 0.0), set()).add(g)
    return [row for row, found_by in seen.items() if len(found_by) >= 2]


def columns(spec: JobSpec) -> list[str]:
    """The names of a recovered row's values."""
    dummies = [f"{f.name}[{level}]" for f in spec.features if f.levels for level in f.levels[1:]]
    return [*spec.numeric_names, *dummies, "label"]


def _bins(cumulative: np.ndarray) -> np.ndarray:
    """Per bin between consecutive cuts, from values summed over everyone above each cut."""
    return cumulative - np.concatenate([cumulative[1:], np.zeros_like(cumulative[:1])])


def _plausible(spec: JobSpec, row: np.ndarray) -> bool:
    """No negative clinical value; dummies 0/1 with at most one level per categorical."""
    numeric = len(spec.numeric_names)
    if (row[:numeric] < 0).any():
        return False
    start = numeric
    for feature in spec.features:
        if feature.levels is not None:
            block = row[start : start + feature.width]
            if not np.isin(block, (0.0, 1.0)).all() or block.sum() > 1:
                return False
            start += feature.width
    return True
