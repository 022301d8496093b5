"""A site's logistic log-likelihood and derivatives against statsmodels' Logit on GBSG2."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from lifelines.datasets import load_gbsg2

from oncofed.analytics.logistic import logistic_derivatives
from oncofed.wire.analysis import Derivatives


def arrays(d: Derivatives) -> tuple[float, np.ndarray, np.ndarray]:
    return d.loglik, np.asarray(d.gradient), np.asarray(d.hessian)


def recurrence_in_five_years() -> tuple[np.ndarray, np.ndarray]:
    """Intercept, age, tumour size, positive nodes, hormonal therapy; recurrence by 5 years
    among patients followed that long or recurred earlier."""
    d = load_gbsg2()
    d = d[(d["cens"] == 1) | (d["time"] >= 1825)]
    x = np.column_stack(
        [np.ones(len(d)), d["age"], d["tsize"], d["pnodes"], d["horTh"] == "yes"]
    ).astype(float)
    y = ((d["cens"] == 1) & (d["time"] <= 1825)).to_numpy(float)
    return x, y


BETA = np.array([-1.0, -0.01, 0.02, 0.08, -0.4])


def test_sites_add_up_to_statsmodels_logit_on_the_pooled_rows() -> None:
    x, y = recurrence_in_five_years()
    site = np.random.default_rng(3).choice(3, size=len(y), p=[0.6, 0.3, 0.1])
    shares = [arrays(logistic_derivatives(x[site == k], y[site == k], BETA)) for k in range(3)]
    loglik, gradient, hessian = (sum(parts) for parts in zip(*shares, strict=True))
    model = sm.Logit(y, x)
    assert loglik == pytest.approx(model.loglike(BETA), rel=1e-12)
    np.testing.assert_allclose(gradient, model.score(BETA), rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(hessian, model.hessian(BETA), rtol=1e-10)


def test_stable_for_any_linear_predictor() -> None:
    x = np.array([[1.0, 800.0], [1.0, -800.0], [1.0, 30.0]])
    y = np.array([1.0, 1.0, 0.0])
    loglik, gradient, hessian = arrays(logistic_derivatives(x, y, np.array([0.0, 1.0])))
    # log p of each row: log expit(800) = -e^-800 (0), log expit(-800) = -800,
    # log(1 - expit(30)) = -30 - log1p(e^-30)
    assert loglik == pytest.approx(-800.0 - 30.0 - np.log1p(np.exp(-30.0)), rel=1e-15)
    # sum of x (y - p): 0 + [1, -800] - expit(30) [1, 30]
    np.testing.assert_allclose(gradient, [0.0, -830.0], rtol=1e-12, atol=1e-12)
    weight = np.exp(-30.0) / (1 + np.exp(-30.0)) ** 2  # p (1 - p) at 30, not 0 from 1 - p
    np.testing.assert_allclose(hessian, -weight * np.outer(x[2], x[2]), rtol=1e-12)
