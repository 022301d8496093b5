"""The feature scaling a training task announces: the pooled totals of the statistics round
must give exactly the task's standardisation, be the same in every task of the job, and be
realisable given this site's own totals (the other sites' rows must be able to exist)."""

from __future__ import annotations

import numpy as np

from oncofed.edge.errors import PolicyViolation
from oncofed.learning.data import DataError, standardization
from oncofed.wire.messages import Standardization, StatsResult, TaskAssignment
from oncofed.wire.spec import JobSpec

REL_TOLERANCE = 1e-9
"""Rounding slack of float64 totals added up over sites, relative to their magnitude."""


def announced(task: TaskAssignment, spec: JobSpec) -> tuple[StatsResult, Standardization]:
    """The pooled totals and standardisation a training or evaluation task carries, checked
    to fit the spec and each other."""
    pooled, scaling = task.pooled, task.standardization
    if pooled is None or scaling is None:
        raise PolicyViolation(
            f"a {task.kind} task must carry the pooled totals and the standardisation they give"
        )
    width = len(spec.numeric_names)
    lengths = {len(pooled.sums), len(pooled.sumsq), len(scaling.mean), len(scaling.std)}
    if lengths != {width}:
        raise PolicyViolation(
            f"the pooled totals and standardisation must cover the job's {width} numeric features"
        )
    try:
        derived = standardization(pooled)
    except DataError as exc:
        raise PolicyViolation("the pooled totals count no rows") from exc
    if derived != scaling:
        raise PolicyViolation("the standardisation is not the one the pooled totals give")
    return pooled, scaling


def check_own(pooled: StatsResult, own: StatsResult) -> None:
    """The rest of the pooled totals (pooled minus this site's own) must be totals of some
    rows: no fewer than 0 rows, and per feature ``n * sum of squares >= sum ** 2`` (all 0 when
    no rows are left), up to rounding."""
    rest_n = pooled.n - own.n
    if rest_n < 0:
        raise PolicyViolation("the pooled totals count fewer rows than this site holds")
    pooled_sumsq = np.asarray(pooled.sumsq)
    rest_sum = np.asarray(pooled.sums) - np.asarray(own.sums)
    rest_sumsq = pooled_sumsq - np.asarray(own.sumsq)
    slack = REL_TOLERANCE * np.abs(pooled_sumsq) + np.finfo(np.float64).tiny
    if rest_n == 0:
        realisable = (np.abs(rest_sumsq) <= slack) & (rest_sum**2 <= slack * pooled.n)
    else:
        realisable = (rest_sumsq >= -slack) & (
            rest_n * rest_sumsq - rest_sum**2 >= -slack * max(pooled.n, 1)
        )
    if not realisable.all():
        raise PolicyViolation(
            "the pooled totals cannot include this site's own rows: they are not the totals "
            "of the statistics round"
        )
