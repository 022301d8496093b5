"""The building blocks every wire message shares."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


MAX_COUNT = 2**53
"""The largest count any message carries: a float64 still holds it (and sums of it) exactly."""
MAX_PATIENTS = 10**9
"""The most patients (or rows) one site may report for one job: a larger count is refused."""
MAX_STATISTIC = 1e100
"""The largest magnitude of a number a site sends (a sum, a sum of squares, a metric, a
derivative): thousands of them, and their squares, add up far from float64 overflow (1.8e308)."""
MAX_SECONDS = 1e9
"""The longest compute time a site may report (about 30 years)."""

Finite = Annotated[float, AfterValidator(_finite)]


def _statistic(value: float) -> float:
    if not abs(value) <= MAX_STATISTIC:  # NaN too
        raise ValueError(f"must be a finite number of magnitude at most {MAX_STATISTIC:g}")
    return value


Statistic = Annotated[float, Field(allow_inf_nan=False), AfterValidator(_statistic)]
"""A finite number a site sends, of magnitude at most ``MAX_STATISTIC``."""
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Patients = Annotated[int, Field(ge=0, le=MAX_PATIENTS)]
"""Patients (or rows) at one site."""
Seconds = Annotated[float, Field(ge=0.0, le=MAX_SECONDS, allow_inf_nan=False)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Epsilon = Annotated[float, Field(ge=0.0, le=1e6, allow_inf_nan=False)]
"""Differential privacy a job spent at a site so far (at the job's delta), as it reports it."""


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Evaluation(Message):
    """Metrics of the received global model on the site's held-out rows."""

    n_eval: Patients
    metrics: dict[Annotated[str, Field(max_length=64)], Statistic] = Field(max_length=64)
