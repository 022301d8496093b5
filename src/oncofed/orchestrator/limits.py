"""What the orchestrator accepts from a site: every count within the cohort the site declared
and a sane maximum, every statistic one that can be pooled (docs/security.md, "What the
orchestrator accepts from a site"). The wire types bound each number on its own
(``oncofed.wire.base``); these checks relate an answer to its task and to the site."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Collection, Sequence

import numpy as np
from pydantic import ValidationError
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from oncofed.learning.metrics import SiteScores, own_pair_bounds
from oncofed.learning.registry import TASKS
from oncofed.orchestrator.db import DatasetProfile
from oncofed.wire.base import MAX_PATIENTS, Evaluation
from oncofed.wire.errors import BadAnswer
from oncofed.wire.messages import StatsResult
from oncofed.wire.profile import SUPPRESSED, DataProfile
from oncofed.wire.spec import JobSpec

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
    # on the connection: no ORM to pay for (the batch changes no profile, so nothing to flush)
    rows = session.connection().execute(_PROFILES, {"sites": list(site_ids), "dataset": dataset})
    published = {site_id: profile for site_id, profile in rows}
    limits = {site_id: declared(published.get(site_id, "")) for site_id in site_ids}
    known = session.info.setdefault(_READ_LIMITS, {})
    known.update({(site_id, dataset): limit for site_id, limit in limits.items()})
    return limits


_PROFILES = select(DatasetProfile.site_id, DatasetProfile.profile_json).where(
    DatasetProfile.site_id.in_(bindparam("sites", expanding=True)),
    DatasetProfile.dataset == bindparam("dataset"),
)
"""The published profiles of ``sites`` for ``dataset`` (built once: every batch reads them)."""


KEPT_LIMITS = 1024
"""Profiles whose limit is kept, by the digest of their text: a profile may be a megabyte, and
1,024 kept whole would be a gigabyte, of a hostile site's making (a put is all it takes)."""
_limits: OrderedDict[bytes, int] = OrderedDict()
_limits_lock = threading.Lock()


def declared(published: str) -> int:
    """``patient_limit`` of one stored profile, parsed once: when the site publishes it
    (``profiles.save``), not by the first batch of answers that reads it (at 200 sites, 200
    profiles parsed in a job's first round); kept by digest (``KEPT_LIMITS``)."""
    key = hashlib.sha256(published.encode()).digest()
    with _limits_lock:
        if (limit := _limits.get(key)) is not None:
            _limits.move_to_end(key)
            return limit
    limit = _parsed_limit(published)
    with _limits_lock:
        _limits[key] = limit
        while len(_limits) > KEPT_LIMITS:
            _limits.popitem(last=False)
    return limit


def _parsed_limit(published: str) -> int:
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


UNIT_METRICS = ("auc", "accuracy", "mean_probability", "c_index")
"""Metrics that are shares: from 0 to 1."""


def scored(spec: JobSpec, round_number: int, evaluation: Evaluation | None) -> Evaluation | None:
    """A training answer's held-out figures: given in exactly the rounds the job scores
    (``JobSpec.evaluation.every``), so every site of a round is scored or none is. BadAnswer
    otherwise."""
    wanted = spec.evaluation.scores(round_number)
    if wanted != (evaluation is not None):
        found = "lacks" if wanted else "gives"
        job = "scores" if wanted else "does not score"
        raise BadAnswer(
            f"the update {found} held-out figures; the job {job} round {round_number} "
            f"(evaluation.every {spec.evaluation.every})"
        )
    return evaluation


def check_evaluation(spec: JobSpec, evaluation: Evaluation) -> None:
    """Held-out figures of the job's kind of model: shares (AUC, accuracy, mean probability,
    C-index) from 0 to 1 and a log-loss of at least 0; a binary model's sums and score
    histogram (checked against its rows by the wire type), a survival model's neither; an
    AUC the site's histogram allows (and a histogram of both labels beside an AUC).
    BadAnswer otherwise."""
    for name, value in evaluation.metrics.items():
        if name in UNIT_METRICS and not 0.0 <= value <= 1.0:
            raise BadAnswer(f"metric {name} is {value:g}, outside 0 to 1")
        if name == "log_loss" and value < 0.0:
            raise BadAnswer(f"metric log_loss is {value:g}, below 0")
    extra = evaluation.scores is not None or evaluation.sums is not None
    if TASKS[spec.model.type] == "survival" and extra:
        raise BadAnswer("a survival model's held-out figures have no score histogram nor sums")
    scores, own = evaluation.scores, evaluation.metrics.get("auc")
    if scores is not None and own is not None:
        site = SiteScores(
            np.asarray(scores.positive), np.asarray(scores.negative), np.asarray(scores.edges)
        )
        pairs = site.positive.sum() * site.negative.sum()
        low, high = own_pair_bounds(site)
        if not pairs or not low - 1e-9 * pairs <= own * pairs <= high + 1e-9 * pairs:
            raise BadAnswer(f"metric auc {own:g} is not one the site's score histogram allows")


def describe(exc: Exception) -> str:
    """An error in one line; a validation error as its first few fields with what is wrong
    with each."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    named = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors]
    more = f" (and {len(named) - _SHOWN_ERRORS} more)" if len(named) > _SHOWN_ERRORS else ""
    return "; ".join(named[:_SHOWN_ERRORS]) + more
