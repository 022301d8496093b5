"""A site's Cox computations: Efron derivatives of one stratum, risk-set sums on the grid and
the pooled Breslow likelihood, against lifelines and statsmodels on GBSG2."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from lifelines import CoxPHFitter
from lifelines.datasets import load_gbsg2

from oncofed.analytics.cox import breslow_from_sums, efron_derivatives, risk_set_sums
from oncofed.wire.analysis import Derivatives, RiskSetPart

NAMES = ["age", "tsize", "pnodes", "grade2", "grade3", "hormonal"]
TIGHT = {"precision": 1e-20, "r_precision": 1e-15}  # lifelines run to convergence


@pytest.fixture(scope="module")
def gbsg2() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Covariates, whole-day times (with tied event times) and events of GBSG2."""
    d = load_gbsg2()
    grade = [d["tgrade"] == "II", d["tgrade"] == "III"]
    x = np.column_stack([d["age"], d["tsize"], d["pnodes"], *grade, d["horTh"] == "yes"])
    x = x.astype(float)
    return x, d["time"].to_numpy(float), d["cens"].to_numpy(float)


def sites(n: int) -> list[np.ndarray]:
    """Unequal sites: row indices of each."""
    site = np.random.default_rng(7).choice(3, size=n, p=[0.6, 0.25, 0.15])
    return [np.flatnonzero(site == k) for k in range(3)]


def arrays(d: Derivatives) -> tuple[float, np.ndarray, np.ndarray]:
    return d.loglik, np.asarray(d.gradient), np.asarray(d.hessian)


BETA = np.array([-0.01, 0.01, 0.05, 0.4, 0.6, -0.3])


def test_efron_matches_lifelines_at_its_fit(gbsg2: tuple[np.ndarray, ...]) -> None:
    x, time, event = gbsg2
    frame = pd.DataFrame(x, columns=NAMES).assign(time=time, event=event)
    cph = CoxPHFitter().fit(frame, "time", "event", fit_options=TIGHT)
    loglik, gradient, hessian = arrays(efron_derivatives(x, time, event, cph.params_.to_numpy()))
    assert loglik == pytest.approx(cph.log_likelihood_, rel=1e-12)
    np.testing.assert_allclose(gradient, 0.0, atol=1e-8)
    np.testing.assert_allclose(np.linalg.inv(-hessian), cph.variance_matrix_, rtol=1e-9)


def test_efron_gradient_and_hessian_are_the_derivatives(gbsg2: tuple[np.ndarray, ...]) -> None:
    x, time, event = gbsg2
    _, gradient, hessian = arrays(efron_derivatives(x, time, event, BETA))
    h = 1e-6
    steps = np.eye(len(BETA)) * h
    up = [arrays(efron_derivatives(x, time, event, BETA + s)) for s in steps]
    down = [arrays(efron_derivatives(x, time, event, BETA - s)) for s in steps]
    numeric_gradient = [(u[0] - d[0]) / (2 * h) for u, d in zip(up, down, strict=True)]
    numeric_hessian = [(u[1] - d[1]) / (2 * h) for u, d in zip(up, down, strict=True)]
    np.testing.assert_allclose(gradient, numeric_gradient, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(hessian, numeric_hessian, rtol=1e-5, atol=1e-4)


def test_efron_equals_statsmodels(gbsg2: tuple[np.ndarray, ...]) -> None:
    x, time, event = gbsg2
    loglik, gradient, hessian = arrays(efron_derivatives(x, time, event, BETA))
    model = sm.PHReg(time, x, status=event, ties="efron")
    assert loglik == pytest.approx(model.loglike(BETA), rel=1e-12)
    np.testing.assert_allclose(gradient, model.score(BETA), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(hessian, model.hessian(BETA), rtol=1e-9)


def efron_long_double(
    x: np.ndarray, time: np.ndarray, event: np.ndarray, beta: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """The Efron formulas term by term in 80-bit floats, where exp(1000) is finite."""
    xl = x.astype(np.longdouble)
    w = np.exp(xl @ beta.astype(np.longdouble))
    loglik, gradient, hessian = np.longdouble(0), np.zeros(x.shape[1], np.longdouble), 0
    for t in np.unique(time[event == 1]):
        risk, tied = time >= t, (time == t) & (event == 1)
        s = [(w[m] * xl[m].T) @ xl[m] for m in (risk, tied)]  # second moments
        for f in np.arange(tied.sum()) / tied.sum():
            phi = w[risk].sum() - f * w[tied].sum()
            v = w[risk] @ xl[risk] - f * (w[tied] @ xl[tied])
            loglik -= np.log(phi)
            gradient -= v / phi
            hessian = hessian - (s[0] - f * s[1]) / phi + np.outer(v, v) / phi**2
    loglik += (xl[event == 1] @ beta).sum()
    gradient += xl[event == 1].sum(axis=0)
    return float(loglik), gradient.astype(float), np.asarray(hessian, dtype=float)


def test_efron_is_exact_where_exp_of_the_linear_predictor_overflows(
    gbsg2: tuple[np.ndarray, ...],
) -> None:
    x, time, event = gbsg2
    beta = BETA * 400  # x'b spans about 1200: exp overflows, or underflows after a shift
    loglik, gradient, hessian = arrays(efron_derivatives(x, time, event, beta))
    reference = efron_long_double(x, time, event, beta)
    assert loglik == pytest.approx(reference[0], rel=1e-12)
    np.testing.assert_allclose(gradient, reference[1], rtol=1e-9, atol=1e-9)
    # each risk set is nearly one patient: its variance, the Hessian, almost all cancels and is
    # exact only to rounding of the second moments (about 1e4 here)
    np.testing.assert_allclose(hessian, reference[2], atol=1e-7)


def parts(
    x: np.ndarray, time: np.ndarray, event: np.ndarray, beta: np.ndarray, grid: int, threshold: int
) -> list[RiskSetPart]:
    p = len(beta)
    own = Derivatives(loglik=0.0, gradient=[0.0] * p, hessian=[[0.0] * p for _ in range(p)])
    return [
        risk_set_sums(x[rows], time[rows], event[rows], beta, grid, threshold).part(len(rows), own)
        for rows in sites(len(time))
    ]


def test_breslow_on_a_one_day_grid_equals_statsmodels(gbsg2: tuple[np.ndarray, ...]) -> None:
    x, time, event = gbsg2
    pooled = arrays(breslow_from_sums(parts(x, time, event, BETA, 1, 1), BETA))
    model = sm.PHReg(time, x, status=event, ties="breslow")
    assert pooled[0] == pytest.approx(model.loglike(BETA), rel=1e-12)
    np.testing.assert_allclose(pooled[1], model.score(BETA), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(pooled[2], model.hessian(BETA), rtol=1e-9)


def test_breslow_without_tied_event_times_equals_lifelines(gbsg2: tuple[np.ndarray, ...]) -> None:
    x, time, event = gbsg2
    _, first = np.unique(time[event == 1], return_index=True)
    keep = event == 0
    keep[np.flatnonzero(event == 1)[first]] = True  # one event per event day
    x, time, event = x[keep], time[keep], event[keep]
    frame = pd.DataFrame(x, columns=NAMES).assign(time=time, event=event)
    cph = CoxPHFitter().fit(frame, "time", "event", fit_options=TIGHT)
    beta = cph.params_.to_numpy()
    loglik, gradient, hessian = arrays(breslow_from_sums(parts(x, time, event, beta, 1, 1), beta))
    assert loglik == pytest.approx(cph.log_likelihood_, rel=1e-12)
    np.testing.assert_allclose(gradient, 0.0, atol=1e-8)  # lifelines' estimate is the maximum
    np.testing.assert_allclose(np.linalg.inv(-hessian), cph.variance_matrix_, rtol=1e-9)


def test_a_coarser_grid_ties_the_events_of_a_bin(gbsg2: tuple[np.ndarray, ...]) -> None:
    x, time, event = gbsg2
    coarse = risk_set_sums(x, time, event, BETA, 30, 1)
    binned = risk_set_sums(x, np.floor(time / 30), event, BETA, 1, 1)
    for name in ("events", "s0", "s1", "s2", "event_x"):
        np.testing.assert_allclose(getattr(coarse, name), getattr(binned, name), rtol=1e-12)
    assert coarse.events.sum() == event.sum()


def test_counts_sent_are_zero_or_at_least_the_threshold(gbsg2: tuple[np.ndarray, ...]) -> None:
    x, time, event = gbsg2
    zero = np.zeros(x.shape[1])
    for rows in sites(len(time)):
        for grid in (1, 30):
            sums = risk_set_sums(x[rows], time[rows], event[rows], zero, grid, 11)
            at_risk = sums.s0  # at b = 0, the number at risk per bin
            leaving = at_risk[:-1] - at_risk[1:]
            assert np.all(at_risk >= 11) and np.allclose(at_risk, np.round(at_risk))
            assert np.all((sums.events == 0) | (sums.events >= 11))
            assert np.all((leaving < 0.5) | (leaving > 10.5))
            assert 0 < sums.events.sum() <= event[rows].sum()
            np.testing.assert_allclose(sums.s1[0], x[rows].sum(axis=0))  # all at risk at first
            still = np.sum(time[rows] >= (len(at_risk) - 1) * grid)
            assert still >= 11  # the last bin sent has at least 11 really at risk


def test_carried_counts_by_hand() -> None:
    time = np.array([0, 1, 2, 2, 3, 3, 5], dtype=float)
    event = np.array([1, 1, 1, 1, 0, 0, 0], dtype=float)
    x = np.arange(7, dtype=float)[:, None]
    sums = risk_set_sums(x, time, event, np.zeros(1), 1, 2)
    # really at risk: 7 6 5 3 1 1 -> the series stops before bin 4; the single event of
    # bin 0 waits for bin 1, the censored patient of bin 5 is censored at bin 3
    np.testing.assert_array_equal(sums.events, [0, 2, 2, 0])
    np.testing.assert_array_equal(sums.s0, [7, 7, 5, 3])
    np.testing.assert_array_equal(sums.s1[:, 0], [21, 21, 20, 15])
    np.testing.assert_array_equal(sums.event_x, [6.0])
    exact = risk_set_sums(x, time, event, np.zeros(1), 1, 1)
    np.testing.assert_array_equal(exact.events, [1, 1, 2, 0, 0, 0])
    np.testing.assert_array_equal(exact.s0, [7, 6, 5, 3, 1, 1])


def test_breslow_with_a_constant_covariate_has_no_information(
    gbsg2: tuple[np.ndarray, ...],
) -> None:
    x, time, event = gbsg2
    with_constant = np.column_stack([x, np.full(len(time), 3.7)])
    beta = np.append(BETA, 0.2)
    _, gradient, hessian = arrays(
        breslow_from_sums(parts(with_constant, time, event, beta, 1, 1), beta)
    )
    assert np.all(hessian[-1] == 0.0) and np.all(hessian[:, -1] == 0.0)
    assert gradient[-1] == pytest.approx(0.0, abs=1e-9)
