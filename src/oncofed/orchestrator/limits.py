"""What the orchestrator accepts from a site: every count within the cohort the site declared
and a sane maximum, every statistic one that can be pooled (docs/security.md, "What the
orchestrator accepts from a site"). The wire types bound each number on its own
(``oncofed.wire.base``); these checks relate an answer to its task and to the site."""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence

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


_READ_LIMITS = "oncofed.patient_limits"
"""The ``Session.info`` key of the limits ``read_patient_limits`` read for a transaction."""


def patient_limit(session: Session, site_id: int, dataset: str) -> int:
    """The most patients a site may report for a job on ``dataset``: what its published
    profile of the dataset declares (``"<T"``: T - 1), and never more than ``MAX_PATIENTS``."""
    if (limit := session.info.get(_READ_LIMITS, {}).get((site_id, dataset))) is not None:
        return int(limit)
    return read_patient_limits(session, [site_id], dataset)[site_id]


def read_patient_limits(
    session: Session, site_ids: Collection[int], dataset: str
) -> dict[int, int]:
    """``patient_limit`` of each of ``site_ids``, read in one query and kept for the rest of
    the session's transaction (a batch of answers reads them all at once)."""
    rows = session.execute(
        select(DatasetProfile.site_id, DatasetProfile.profile_json).where(
            DatasetProfile.site_id.in_(site_ids), DatasetProfile.dataset == dataset
        )
    )
    published = {site_id: profile for site_id, profile in rows}
    limits = {site_id: _declared(published.get(site_id, "")) for site_id in site_ids}
    known = session.info.setdefault(_READ_LIMITS, {})
    known.update({(site_id, dataset): limit for site_id, limit in limits.items()})
    return limits


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
