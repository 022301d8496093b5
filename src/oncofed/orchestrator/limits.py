"""What the orchestrator accepts from a site: every count within the cohort the site declared
and a sane maximum, every statistic one that can be pooled (docs/security.md, "What the
orchestrator accepts from a site"). The wire types bound each number on its own
(``oncofed.wire.base``); these checks relate an answer to its task and to the site."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from oncofed.orchestrator.db import DatasetProfile
from oncofed.wire.base import MAX_PATIENTS
from oncofed.wire.errors import BadAnswer
from oncofed.wire.messages import StatsResult
from oncofed.wire.profile import SUPPRESSED, DataProfile

_SHOWN_ERRORS = 3
"""Validation errors named in a refusal (the rest are counted)."""


def patient_limit(session: Session, site_id: int, dataset: str) -> int:
    """The most patients a site may report for a job on ``dataset``: what its published
    profile of the dataset declares (``"<T"``: T - 1), and never more than ``MAX_PATIENTS``."""
    published = session.scalar(
        select(DatasetProfile.profile_json).where(
            DatasetProfile.site_id == site_id, DatasetProfile.dataset == dataset
        )
    )
    return _declared(published or "")


@functools.lru_cache(maxsize=1024)
def _declared(published: str) -> int:
    """``patient_limit`` of one stored profile (parsed once: every answer of a site reads it)."""
    try:
        patients = DataProfile.model_validate_json(published).patients
    except ValidationError:  # none published (or one stored before the bounds of today)
        return MAX_PATIENTS
    if isinstance(patients, int):
        return min(patients, MAX_PATIENTS)
    return MAX_PATIENTS if patients == SUPPRESSED else int(patients[1:]) - 1


def check_patients(n: int, limit: int, what: str) -> None:
    """BadAnswer when ``n`` (``what``: "n_train") is above the site's ``limit``."""
    if n > limit:
        bound = "the sane maximum" if limit == MAX_PATIENTS else "the patients the site declared"
        raise BadAnswer(f"{what} {n} is above {limit}, {bound}")


def check_stats(result: StatsResult, width: int, limit: int) -> None:
    """Feature statistics that fit the job and can be pooled: one sum and one sum of squares
    per numeric feature (``width``), ``n`` within ``limit``, and sums that rows can have:
    sum^2 <= n * sum of squares (Cauchy-Schwarz; so no rows, no sums)."""
    if not len(result.sums) == len(result.sumsq) == width:
        raise BadAnswer(f"expected {width} feature sums and sums of squares")
    check_patients(result.n, limit, "n")
    check_sums(result.sums, result.sumsq, result.n)


def check_sums(sums: Sequence[float], squares: Sequence[float], n: int) -> None:
    """Sums and sums of squares that ``n`` values can have: sum^2 <= n * sum of squares
    (Cauchy-Schwarz), so no values, no sums. BadAnswer otherwise."""
    total, square = np.asarray(sums, dtype=np.float64), np.asarray(squares, dtype=np.float64)
    if np.any(total**2 > n * square * (1 + 1e-9) + 1e-9):
        raise BadAnswer(f"sums that {n} values cannot have: sum^2 is above n * sum of squares")


def describe(exc: Exception) -> str:
    """An error in one line; a validation error as its first few fields with what is wrong
    with each."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    named = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors]
    more = f" (and {len(named) - _SHOWN_ERRORS} more)" if len(named) > _SHOWN_ERRORS else ""
    return "; ".join(named[:_SHOWN_ERRORS]) + more
