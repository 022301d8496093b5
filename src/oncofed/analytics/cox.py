"""Cox proportional hazards: what a site computes for the federated Newton loop.

Stratified by site: each site is one stratum, and :func:`efron_derivatives` over its own rows is
its exact share of the pooled stratified partial log-likelihood (Efron ties); the orchestrator
adds the sites' shares.

Unstratified: risk sets span sites, so each site sends risk-set sums on the time grid and the
orchestrator forms the Breslow partial likelihood (:func:`breslow_from_sums`). Bin k holds
times in [k g, (k + 1) g) for grid g days; the events of a bin are tied at it, and the risk set
of bin k is every patient with time >= k g (censored in the bin or later, or an event in the
bin or later). With g = 1 and whole-day times (the data model's) this is exactly the Breslow
partial likelihood of the pooled rows.

Privacy (:func:`risk_set_sums`, threshold T), the rule of the Kaplan-Meier series
(:mod:`oncofed.analytics.survival`): a bin's events, and its censorings, fewer than T are carried
into the following bins until what has built up reaches T, and then leave the risk set together
in that bin; until then the carried patients stay at risk. The series stops before the first bin
with fewer than T patients really at risk; patients not released by then are censored at its
last bin and their events are not counted. So every per-bin count of events, and of patients
leaving the risk set, is 0 or at least T, at least T are at risk in every bin sent, and no event
time or maximum follow-up leaves the site. The sums are exactly the Breslow sums of the site's
rows with those shifted times; threshold 1 changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from oncofed.analytics.survival import carried
from oncofed.wire.analysis import Derivatives, RiskSetPart

_CHUNK = 1 << 22  # floats per block of outer products (bounds memory for many covariates)


def _derivatives(loglik: float, gradient: np.ndarray, hessian: np.ndarray) -> Derivatives:
    return Derivatives(loglik=loglik, gradient=gradient.tolist(), hessian=hessian.tolist())


def _tail(values: np.ndarray) -> np.ndarray:
    """Sums from each position to the end along the first axis."""
    return np.cumsum(values[::-1], axis=0)[::-1]


def _log_tail(terms: np.ndarray) -> np.ndarray:
    """log of the sums of exp(terms) from each row to the last, without overflow or underflow."""
    return np.logaddexp.accumulate(terms[::-1], axis=0)[::-1]


def efron_derivatives(
    x: np.ndarray, time: np.ndarray, event: np.ndarray, beta: np.ndarray
) -> Derivatives:
    """Log-likelihood, gradient and Hessian of the Efron partial likelihood of one stratum.

    Covariates are centred on their medians (a constant one becomes exactly 0) and x'b on its
    maximum; neither changes the result. Risk-set sums are taken in log space, as ratios to
    the risk set's sum of exp(x'b), so no exponential overflows or underflows to a zero
    denominator. The Hessian is assembled as X' diag(c) X without per-row outer products.
    """
    x = x - np.median(x, axis=0) if len(x) else x
    order = np.argsort(time, kind="stable")
    x, time, dead = x[order], time[order], event[order] == 1
    eta = x @ beta
    eta = eta - eta.max() if len(eta) else eta
    # event groups: the distinct event times, each with its d tied events
    event_times, first, ties = np.unique(time[dead], return_index=True, return_counts=True)
    group = np.repeat(np.arange(len(event_times)), ties)  # group of each event, in time order
    fraction = (np.arange(len(group)) - first[group]) / ties[group]  # 0, 1/d, .. (d - 1)/d
    start = np.searchsorted(time, event_times)  # first row at risk at each event time
    log_s0 = _log_tail(eta)[start]  # log of the risk set's sum of exp(x'b)
    with np.errstate(divide="ignore"):  # log 0 = -inf: no term
        signed = [
            _log_tail(eta[:, None] + np.log(np.clip(sign * x, 0.0, None))) for sign in (1, -1)
        ]
    mean = np.exp(signed[0][start] - log_s0[:, None]) - np.exp(signed[1][start] - log_s0[:, None])
    ue, xe = np.exp(eta[dead] - log_s0[group]), x[dead]  # tied events' exp(x'b) / risk set sum
    d0 = np.bincount(group, weights=ue, minlength=len(event_times))
    d1 = np.zeros_like(mean)
    np.add.at(d1, group, ue[:, None] * xe)
    ratio = 1.0 - fraction * d0[group]  # each event's Efron denominator / risk set sum
    log_phi = log_s0[group] + np.log(ratio)
    v = (mean[group] - fraction[:, None] * d1[group]) / ratio[:, None]  # gradient of log phi
    loglik = float(eta[dead].sum() - log_phi.sum())
    gradient = xe.sum(axis=0) - v.sum(axis=0)
    # second derivatives of sum log phi: X' diag(c) X - V'V with c_i = exp(x_i'b) (sum of
    # 1 / phi over events up to t_i, less for an event its tied events' f / phi)
    up_to = np.searchsorted(time[dead], time, side="right")  # events with time <= t_i
    log_inverse = np.concatenate([[-np.inf], np.logaddexp.accumulate(-log_phi)])
    c = np.exp(eta + log_inverse[up_to])
    tied = np.bincount(group, weights=fraction / ratio, minlength=len(event_times))
    c[dead] -= ue * tied[group]
    hessian = v.T @ v - (x * c[:, None]).T @ x
    return _derivatives(loglik, gradient, hessian)


def _by_bin(bins: np.ndarray, values: np.ndarray, n_bins: int) -> np.ndarray:
    """Sums of ``values`` rows by their (ascending) ``bins``."""
    out = np.zeros((n_bins, *values.shape[1:]))
    if len(bins):
        starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        out[bins[starts]] = np.add.reduceat(values, starts, axis=0)
    return out


@dataclass(frozen=True)
class RiskSets:
    """A site's risk-set sums on the grid (see the module docstring), bins 0 .. K - 1."""

    events: np.ndarray  # (K,) events per bin
    s0: np.ndarray  # (K,) sum of exp(x'b) over the risk set
    s1: np.ndarray  # (K, p) sum of x exp(x'b)
    s2: np.ndarray  # (K, p, p) sum of x x' exp(x'b)
    event_x: np.ndarray  # (p,) sum of x over the counted events

    def padded(self, bins: int) -> RiskSets:
        """The same sums on ``bins`` bins (at least as many): none beyond the last."""
        extra = bins - len(self.events)

        def pad(values: np.ndarray) -> np.ndarray:
            return np.pad(values, [(0, extra)] + [(0, 0)] * (values.ndim - 1))

        return RiskSets(pad(self.events), pad(self.s0), pad(self.s1), pad(self.s2), self.event_x)

    def part(self, n: int, own: Derivatives) -> RiskSetPart:
        """The wire form, with the site's cohort size and its own stratified derivatives."""
        return RiskSetPart(
            n=n,
            events=self.events.tolist(),
            s0=self.s0.tolist(),
            s1=self.s1.tolist(),
            s2=self.s2.tolist(),
            event_x=self.event_x.tolist(),
            own=own,
        )


def risk_set_sums(
    x: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    beta: np.ndarray,
    grid_days: int,
    threshold: int,
    offset: float = 0.0,
) -> RiskSets:
    """A site's risk-set sums of exp(x'b - ``offset``) at ``beta`` for the unstratified Breslow
    model on the grid, with departures released in groups of at least ``threshold`` (see the
    module docstring)."""
    bins = np.floor_divide(time, grid_days).astype(np.int64)
    size = int(bins.max()) + 1 if bins.size else 0
    dead = event == 1
    at_risk = len(bins) - np.concatenate([[0], np.cumsum(np.bincount(bins, minlength=size))])
    stop = int(np.argmax(at_risk < threshold))  # at_risk ends with 0, below any threshold
    leave = np.full(len(bins), stop - 1)  # not released before the stop: censored there
    released = np.zeros(len(bins), dtype=bool)
    for rows in (np.flatnonzero(dead), np.flatnonzero(~dead)):
        counts = carried(np.bincount(bins[rows], minlength=size), threshold)[:stop]
        releases = np.flatnonzero(counts)
        after = np.searchsorted(releases, bins[rows])  # the first release at or after a bin
        out = after < len(releases)
        leave[rows[out]] = releases[after[out]]
        released[rows[out]] = True
    counted = dead & released
    order = np.argsort(leave, kind="stable") if stop else np.empty(0, dtype=np.int64)
    bins, xs = leave[order], x[order]
    with np.errstate(over="ignore"):
        w = np.exp(xs @ beta - offset)
    p = x.shape[1]
    block = max(1, _CHUNK // max(1, p * p))
    s2 = np.zeros((stop, p, p))
    for lo in range(0, len(bins), block):
        xc, wc = xs[lo : lo + block], w[lo : lo + block]
        outer = wc[:, None, None] * xc[:, :, None] * xc[:, None, :]
        s2 += _by_bin(bins[lo : lo + block], outer, stop)
    if not np.all(np.isfinite(s2)):
        raise ValueError("exp(x'b) overflows at these coefficients")
    return RiskSets(
        events=np.bincount(leave[counted], minlength=stop),
        s0=_tail(_by_bin(bins, w, stop)),
        s1=_tail(_by_bin(bins, w[:, None] * xs, stop)),
        s2=_tail(s2),
        event_x=x[counted].sum(axis=0),
    )


def _pooled(rows: Sequence[Sequence[object]], n_bins: int, shape: tuple[int, ...]) -> np.ndarray:
    """The sum over sites of per-bin arrays (each bin of ``shape``), zero-padded to ``n_bins``."""
    total = np.zeros((n_bins, *shape))
    for values in rows:
        array = np.asarray(values, dtype=np.float64).reshape(-1, *shape)
        total[: len(array)] += array
    return total


def breslow_from_sums(parts: Sequence[RiskSetPart], beta: np.ndarray) -> Derivatives:
    """The pooled unstratified Breslow log-likelihood, gradient and Hessian at ``beta`` from the
    sites' risk-set sums at ``beta`` (a site contributes nothing beyond its last bin)."""
    p = len(beta)
    n_bins = max((len(part.events) for part in parts), default=0)
    pooled = RiskSets(
        events=_pooled([part.events for part in parts], n_bins, ()),
        s0=_pooled([part.s0 for part in parts], n_bins, ()),
        s1=_pooled([part.s1 for part in parts], n_bins, (p,)),
        s2=_pooled([part.s2 for part in parts], n_bins, (p, p)),
        event_x=np.asarray([part.event_x for part in parts], dtype=np.float64)
        .reshape(-1, p)
        .sum(0),
    )
    return breslow(pooled, beta)


def breslow(sums: RiskSets, beta: np.ndarray, offset: float = 0.0) -> Derivatives:
    """The Breslow partial log-likelihood, gradient and Hessian at ``beta`` from risk-set sums
    over all patients (of exp(x'b - ``offset``)): with d_k events in bin k, S0, S1, S2 the sums
    of exp(x'b), x exp(x'b) and x x' exp(x'b) over its risk set, and E the sum of x over the
    events (Breslow 1974; Kalbfleisch & Prentice 2002, 4.2),

        l = E'b - sum_k d_k log S0_k,  g = E - sum_k d_k S1_k / S0_k,
        H = -sum_k d_k (S2_k / S0_k - (S1_k / S0_k)(S1_k / S0_k)').

    The offset scales every S by exp(-offset), which cancels in g and H; l is corrected by
    offset * sum_k d_k."""
    used = sums.events > 0
    d, s0, s1, s2 = (
        sums.events[used].astype(np.float64),
        sums.s0[used],
        sums.s1[used],
        sums.s2[used],
    )
    mean = s1 / s0[:, None]
    loglik = float(sums.event_x @ beta - d @ np.log(s0) - offset * d.sum())
    gradient = sums.event_x - d @ mean
    second = np.einsum("k,kij->ij", d / s0, s2)
    information = second - (mean * d[:, None]).T @ mean
    # a covariate constant over all rows cancels to rounding noise: make that an exact zero
    scale = np.sqrt(np.outer(np.diag(second), np.diag(second)))
    information[np.abs(information) <= 1e-10 * scale] = 0.0
    return _derivatives(loglik, gradient, -information)
