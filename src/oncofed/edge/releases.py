"""The cohort behind every exact release of this site, and the rule that keeps two of them from
being subtracted: no job releases exact numbers over a cohort that differs from an earlier
job's, on the same dataset, by 1 to ``small_cell_threshold - 1`` patients.

Each job is bounded on its own, but two exact releases over cohorts that differ by a few
patients describe those few: the sums over the larger cohort less those over the smaller are
theirs, however large both are (``tests/attacks/test_cohort_differencing.py``); a sum over
sites (secure aggregation) differences just as well. So before a job's first exact release
here (a job's rounds share one cohort: they are one release set) its cohort, the patients
``cdm.frame.job_table`` selects, is compared with that of every earlier job on its dataset.
A difference of 0 is fine (the same patients asked again); 1 to ``threshold - 1``, either way
(more patients, fewer or others), is refused, naming the earlier job and the threshold only.
Every job is compared, differentially private training too: its statistics round (the pooled
means and deviations of its features) and its held-out metrics are exact releases; only its
model updates are noised. A differentially private analysis is not: it releases no exact
number, and each of its releases is charged to the site's budget instead.

The cohort is recorded in ``ledger.db`` in the transaction that checks it, before anything is
computed, so that no release can leave unrecorded (a crash after that keeps it, which only
refuses more) and two processes cannot both pass against each other; it is withdrawn when the
task releases nothing after all (declined). A cohort is kept as the sorted, distinct 64-bit
BLAKE2b digests of its patients' pseudonyms, 8 bytes a patient (every patient of the dataset
digested once while it stays loaded, a cohort's picked from them). Pseudonyms are random at
import, so a digest means nothing outside this site's store; a re-import gives new ones, and
its cohorts are compared with each other only.

Not stopped: combinations of many cohorts, each pair differing by at least the threshold;
patients left out within one cohort (missing values), which the cohorts do not show.
Differential privacy is the complete answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
from sqlalchemy import Index, Integer, LargeBinary, String, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from oncofed._db import UTCDateTime, utcnow
from oncofed.analytics.private import private_analysis
from oncofed.cdm.frame import JobRows
from oncofed.edge.config import EdgePolicy
from oncofed.edge.errors import PolicyViolation
from oncofed.edge.ledger import Base, Ledger
from oncofed.wire.messages import TaskAssignment

DIGEST = np.dtype("<u8")
"""A patient in a recorded cohort: a 64-bit BLAKE2b digest of the pseudonym, little-endian."""
PERSON = b"oncofed-cohort"
"""BLAKE2b personalisation: these digests are of no other use."""


class ReleaseCohortRow(Base):
    """The cohort of one job's exact releases at this site."""

    __tablename__ = "release_cohort"
    __table_args__ = (Index("ix_release_cohort_dataset_patients", "dataset", "patients"),)
    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset: Mapped[str] = mapped_column(String(64))
    patients: Mapped[int] = mapped_column(Integer)
    keys_sha256: Mapped[str] = mapped_column(String(64))  # equal cohorts are not read
    keys: Mapped[bytes] = mapped_column(LargeBinary)  # sorted distinct digests, ``DIGEST``
    released_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


@dataclass(frozen=True)
class ReleaseCohort:
    """The patients of a job's cohort on ``dataset``, as sorted distinct digests."""

    dataset: str
    keys: np.ndarray

    @classmethod
    def of(cls, dataset: str, pseudonyms: pa.Array) -> ReleaseCohort:
        """The cohort of the patients ``pseudonyms`` name on ``dataset``."""
        return cls(dataset, digests(pseudonyms))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.keys.tobytes()).hexdigest()


def digests(pseudonyms: pa.Array) -> np.ndarray:
    """Sorted distinct 64-bit digests of ``pseudonyms``."""
    return np.unique(digested(pseudonyms))


def digested(pseudonyms: pa.Array) -> np.ndarray:
    """The 64-bit digest of each of ``pseudonyms``, in their order."""
    joined = b"".join(
        hashlib.blake2b(p.encode(), digest_size=DIGEST.itemsize, person=PERSON).digest()
        for p in pseudonyms.to_pylist()
    )
    return np.frombuffer(joined, dtype=DIGEST)


def difference(a: np.ndarray, b: np.ndarray) -> int:
    """How many patients are in exactly one of two cohorts (sorted distinct digests)."""
    small, large = (a, b) if a.size <= b.size else (b, a)
    if small.size == 0:
        return int(large.size)
    found = large[np.minimum(np.searchsorted(large, small), large.size - 1)] == small
    return int(a.size + b.size - 2 * np.count_nonzero(found))


class Releases:
    """This site's record of the cohorts it released exact numbers about (``ledger.db``), and
    the narrow-difference rule (see the module docstring)."""

    def __init__(self, policy: EdgePolicy, ledger: Ledger) -> None:
        self._policy, self._ledger = policy, ledger
        # jobs seen recorded: a record stays until ``withdraw`` (one process holds the site)
        self._known: set[str] = set()
        self._digested: tuple[pa.Array, np.ndarray] | None = None  # a dataset's: ``digest``

    def first(self, task: TaskAssignment, rows: Callable[[], JobRows]) -> bool:
        """Before a job's first exact release here: check its cohort (the patients of
        ``rows()``, asked only then) against every earlier one and record it, in one
        transaction. True when this task recorded it, for ``withdraw`` should it release
        nothing; False for a job recorded before (its row there already: no read of the
        ledger first, which cost a job's first task a transaction). ``PolicyViolation`` when
        the difference is narrow."""
        spec = task.spec
        if private_analysis(spec) or task.job_id in self._known:
            return False
        selected = rows()
        every = self.digest(selected.patients)
        keys = np.unique(every if selected.keep is None else every[selected.keep])
        cohort = ReleaseCohort(spec.dataset, keys)
        policy = self._policy
        threshold = policy.small_cell_threshold if policy.refuse_narrow_differences else 1
        recorded = self.record(task.job_id, cohort, threshold)
        self._known.add(task.job_id)
        return recorded

    def record(self, job_id: str, cohort: ReleaseCohort, threshold: int) -> bool:
        """Record ``cohort`` as ``job_id``'s unless another job's on its dataset differs from
        it by 1 to ``threshold - 1`` patients (``PolicyViolation``, nothing recorded). The row
        is written first, so the check reads under the write lock. False when the job was
        recorded already (before a restart, or by another process)."""
        keys, n = cohort.keys, int(cohort.keys.size)
        sha = cohort.sha256
        row = {"job_id": job_id, "dataset": cohort.dataset, "patients": n,
               "keys_sha256": sha, "keys": keys.tobytes()}  # fmt: skip
        near = {"b_dataset": cohort.dataset, "b_low": n - threshold + 1,
                "b_high": n + threshold - 1, "b_job": job_id, "b_sha": sha}  # fmt: skip
        try:
            with self._ledger.begin() as connection:
                connection.execute(_RECORD, row)
                if threshold <= 1:
                    return True
                for earlier, blob in connection.execute(_NEAR, near):
                    if difference(keys, np.frombuffer(blob, dtype=DIGEST)) < threshold:
                        raise PolicyViolation(
                            f"the cohort of job {job_id} differs from that of job {earlier}, "
                            f"released here on dataset {cohort.dataset!r}, by fewer than "
                            f"{threshold} patients, below the small-cell threshold (policy "
                            f"small_cell_threshold={threshold}): subtracted, the two would "
                            "describe those patients"
                        )
        except IntegrityError:
            return False
        return True

    def digest(self, patients: pa.Array) -> np.ndarray:
        """``digested(patients)``, kept for the last array asked (a dataset's every patient,
        ``Columns.pseudonyms``: the same array for every job while the dataset is loaded)."""
        if self._digested is None or self._digested[0] is not patients:
            self._digested = patients, digested(patients)
        return self._digested[1]

    def rehearse(self, job_id: str) -> None:
        """``first``'s statements, on a cohort of one (inside ``Ledger.rehearsal``, which
        keeps nothing)."""
        self.record(job_id, ReleaseCohort.of(job_id, pa.array([job_id])), threshold=2)

    def withdraw(self, job_id: str) -> None:
        """Forget the cohort ``first`` recorded for ``job_id``: its task released nothing."""
        self._known.discard(job_id)
        with self._ledger.begin() as connection:
            connection.execute(_WITHDRAW, {"b_job": job_id})


# The statements, built once (their construction costs more than their run).
_RECORD = insert(ReleaseCohortRow)
_NEAR = (
    select(ReleaseCohortRow.job_id, ReleaseCohortRow.keys)
    .where(
        ReleaseCohortRow.dataset == bindparam("b_dataset"),
        ReleaseCohortRow.patients.between(bindparam("b_low"), bindparam("b_high")),
        ReleaseCohortRow.job_id != bindparam("b_job"),
        ReleaseCohortRow.keys_sha256 != bindparam("b_sha"),
    )
    .order_by(ReleaseCohortRow.released_at, ReleaseCohortRow.job_id)
)
_WITHDRAW = delete(ReleaseCohortRow).where(ReleaseCohortRow.job_id == bindparam("b_job"))
