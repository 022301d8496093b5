"""Logistic regression: a site's share of the pooled log-likelihood and its derivatives. The
log-likelihood is a sum over patients, so the sites' shares add up to the pooled one."""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from oncofed.wire.analysis import Derivatives


def logistic_derivatives(x: np.ndarray, y: np.ndarray, beta: np.ndarray) -> Derivatives:
    """Log-likelihood, gradient and Hessian at ``beta`` of labels ``y`` (0/1) given ``x``
    (intercept column included), stable for any x'b: log(1 + e^t) as logaddexp(0, t), and
    p (1 - p) as expit(t) expit(-t)."""
    eta = x @ beta
    p = expit(eta)
    loglik = float(y @ eta - np.logaddexp(0.0, eta).sum())
    gradient = x.T @ (y - p)
    hessian = -(x * (p * expit(-eta))[:, None]).T @ x
    return Derivatives(loglik=loglik, gradient=gradient.tolist(), hessian=hessian.tolist())
