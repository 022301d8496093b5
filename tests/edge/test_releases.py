"""The cohorts of a site's exact releases: a job whose cohort differs from an earlier job's, on
the same dataset, by 1 to threshold - 1 patients (more, fewer or others) is declined before
anything is computed; identical and distant cohorts run; the record outlives a restart."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import event, select

from oncofed.cdm.frame import JobRows, job_rows
from oncofed.cdm.tables import CdmData
from oncofed.edge import EdgePolicy, LocalStore, PolicyViolation, releases
from oncofed.edge.ledger import Ledger
from oncofed.edge.releases import (
    DIGEST,
    ReleaseCohort,
    ReleaseCohortRow,
    Releases,
    difference,
    digests,
)
from oncofed.edge.runner import TaskRunner
from oncofed.wire.messages import Decline, StatsResult, TaskAssignment
from tests.support import SITE_KEY, make_spec, save_columns

N = 200


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    """Two datasets of the same 200 patients (the same pseudonyms): ``ext.x`` numbers them
    0 to 199, so a cohort ``x`` in [low, high] is exactly those patients."""
    rng = np.random.default_rng(0)
    columns = {
        "x": np.arange(N, dtype=float),
        "x1": rng.normal(size=N),
        "x2": rng.normal(size=N),
        "y": rng.integers(0, 2, size=N),
    }
    save_columns(tmp_path / "datasets", "other", columns)
    return save_columns(tmp_path / "datasets", "data", columns)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "edge") as ledger:
        yield ledger


def recorded(ledger: Ledger, job_id: str) -> bool:
    """Whether ``ledger.db`` holds a cohort for ``job_id`` (read there, not remembered)."""
    where = ReleaseCohortRow.job_id == job_id
    with ledger.begin() as connection:
        return connection.execute(select(ReleaseCohortRow.job_id).where(where)).first() is not None


def job(job_id: str, low: int, high: int, dataset: str = "data") -> TaskAssignment:
    """The statistics task of a training job over the patients numbered ``low`` to ``high``."""
    cohort = {"where": [{"field": "ext.x", "min": low, "max": high}]}
    spec = make_spec(dataset=dataset, cohort=cohort)
    return TaskAssignment.model_validate(
        {"task_id": f"{job_id}-0", "job_id": job_id, "round": 0, "kind": "stats", "spec": spec}
    )


def first(
    ledger: Ledger, store: LocalStore, task: TaskAssignment, policy: EdgePolicy | None = None
) -> bool:
    def rows() -> JobRows:
        return job_rows(task.spec, store.load(task.spec.dataset))

    return Releases(policy or EdgePolicy(), ledger).first(task, rows)


def refusal(later: str, earlier: str, dataset: str = "data", threshold: int = 11) -> str:
    """The decline's reason, escaped for ``match``."""
    return re.escape(
        f"the cohort of job {later} differs from that of job {earlier}, released here on "
        f"dataset {dataset!r}, by fewer than {threshold} patients, below the small-cell "
        f"threshold (policy small_cell_threshold={threshold}): subtracted, the two would "
        "describe those patients"
    )


@pytest.mark.parametrize(
    ("low", "high", "differ"),
    [
        (0, 99, 0),  # the same 100 patients again
        (0, 100, 1),  # one more
        (0, 109, 10),
        (0, 110, 11),
        (0, 98, 1),  # one fewer
        (0, 89, 10),
        (0, 88, 11),
        (1, 100, 2),  # one out, another in
        (5, 104, 10),
        (6, 105, 12),
    ],
)
def test_a_cohort_within_the_threshold_of_an_earlier_one_is_refused(
    ledger: Ledger, store: LocalStore, low: int, high: int, differ: int
) -> None:
    assert first(ledger, store, job("a", 0, 99))
    later = job("b", low, high)
    if 1 <= differ <= 10:
        with pytest.raises(PolicyViolation) as refused:
            first(ledger, store, later)
        assert re.fullmatch(refusal("b", "a"), str(refused.value))  # never how many
        assert not recorded(ledger, "b")
    else:
        assert first(ledger, store, later)


def test_every_earlier_job_is_compared_and_the_threshold_is_the_policys(
    ledger: Ledger, store: LocalStore
) -> None:
    assert first(ledger, store, job("a", 0, 99))
    assert first(ledger, store, job("b", 0, 119))  # 20 more than a
    with pytest.raises(PolicyViolation, match=refusal("c", "b")):
        first(ledger, store, job("c", 0, 110))  # 11 more than a, 9 fewer than b
    lenient = EdgePolicy(small_cell_threshold=3)
    with pytest.raises(PolicyViolation, match=refusal("d", "a", threshold=3)):
        first(ledger, store, job("d", 0, 101), lenient)
    assert first(ledger, store, job("e", 0, 102), lenient)


def test_other_datasets_are_compared_apart(ledger: Ledger, store: LocalStore) -> None:
    assert first(ledger, store, job("a", 0, 99))
    assert first(ledger, store, job("b", 0, 100, dataset="other"))  # same pseudonyms
    with pytest.raises(PolicyViolation, match=refusal("c", "b", dataset="other")):
        first(ledger, store, job("c", 0, 101, dataset="other"))


def test_a_job_is_checked_and_recorded_once_and_a_refused_one_not_at_all(
    ledger: Ledger, store: LocalStore
) -> None:
    assert first(ledger, store, job("a", 0, 99))
    assert not first(ledger, store, job("a", 0, 99))  # its later rounds: recorded already
    with pytest.raises(PolicyViolation):
        first(ledger, store, job("b", 0, 100))
    assert first(ledger, store, job("c", 0, 110))  # 10 from the refused b: b released nothing


def test_switched_off_the_cohorts_are_still_recorded(ledger: Ledger, store: LocalStore) -> None:
    naive = EdgePolicy(refuse_narrow_differences=False)
    assert first(ledger, store, job("a", 0, 99), naive)
    assert first(ledger, store, job("b", 0, 100), naive)  # one more: not refused
    with pytest.raises(PolicyViolation, match=refusal("c", "a")):
        first(ledger, store, job("c", 0, 101))  # switched on again: a is remembered
    assert recorded(ledger, "b")


def test_the_record_survives_a_restart(tmp_path: Path, store: LocalStore) -> None:
    with Ledger(tmp_path / "edge") as ledger:
        assert first(ledger, store, job("a", 0, 99))
    with Ledger(tmp_path / "edge") as ledger:
        assert recorded(ledger, "a")
        assert not first(ledger, store, job("a", 0, 99))  # its next round, after the restart
        with pytest.raises(PolicyViolation, match=refusal("b", "a")):
            first(ledger, store, job("b", 1, 99))


def test_a_jobs_first_check_is_one_transaction_and_its_later_rounds_none(
    ledger: Ledger, store: LocalStore
) -> None:
    """The check and the record are one transaction, with no read of the ledger before it;
    the job's later rounds, and a job recorded before a restart once found so, need none."""
    releases = Releases(EdgePolicy(), ledger)
    transactions: list[object] = []
    event.listen(ledger._engine, "begin", transactions.append)

    def check(task: TaskAssignment) -> bool:
        return releases.first(task, lambda: job_rows(task.spec, store.load("data")))

    assert check(job("a", 0, 99)) and len(transactions) == 1
    assert not check(job("a", 0, 99)) and len(transactions) == 1
    recorded_elsewhere = Releases(EdgePolicy(), ledger)  # as after a restart
    other = JobRows({}, pa.array(["x"]), None)
    assert not recorded_elsewhere.first(job("a", 0, 99), lambda: other)
    assert not recorded_elsewhere.first(job("a", 0, 99), lambda: other)
    assert len(transactions) == 2 and recorded(ledger, "a")


def test_withdrawn_a_cohort_is_forgotten(ledger: Ledger, store: LocalStore) -> None:
    releases = Releases(EdgePolicy(), ledger)
    assert first(ledger, store, job("a", 0, 99))
    releases.withdraw("a")
    assert not recorded(ledger, "a")
    assert first(ledger, store, job("b", 0, 100))


def test_the_runner_declines_before_computing_and_records_only_what_it_released(
    ledger: Ledger, store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = TaskRunner(store, EdgePolicy(), "alpha", ledger, SITE_KEY)
    assert isinstance(runner.run(job("a", 0, 99), fetch), StatsResult)
    assert recorded(ledger, "a")
    declined = runner.run(job("b", 0, 30), fetch)  # too few training rows: nothing sent
    assert isinstance(declined, Decline) and "fewer than its minimum" in declined.reason
    assert not recorded(ledger, "b")

    def computed(*_: object) -> None:
        raise AssertionError("the task was computed")

    monkeypatch.setattr(TaskRunner, "_answer", computed)
    narrow = runner.run(job("c", 0, 100), fetch)
    assert isinstance(narrow, Decline) and re.fullmatch(refusal("c", "a"), narrow.reason)
    with pytest.raises(AssertionError, match="computed"):  # a failure releases nothing
        runner.run(job("d", 0, 150), fetch)
    assert not recorded(ledger, "c") and not recorded(ledger, "d")


def test_the_release_check_and_the_cohort_are_one_read_of_the_rows(
    ledger: Ledger, store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's first task reads its rows once, for its release check and its cohort both: the
    cohort recorded is the one computed on. The next job reads its own, and no task's rows
    are kept after it, declined or not."""
    reads: list[str] = []

    def counted(spec: object, data: CdmData) -> object:
        reads.append("read")
        return job_rows(spec, data)  # type: ignore[arg-type]

    monkeypatch.setattr("oncofed.edge.runner.job_rows", counted)
    runner = TaskRunner(store, EdgePolicy(), "alpha", ledger, SITE_KEY)
    stats = runner.run(job("a", 0, 99), fetch)
    assert isinstance(stats, StatsResult) and reads == ["read"]
    assert recorded(ledger, "a")
    assert isinstance(runner.run(job("b", 0, 99), fetch), StatsResult)
    assert reads == ["read", "read"]
    narrow = runner.run(job("c", 0, 100), fetch)  # declined by the release check
    assert isinstance(narrow, Decline) and reads == ["read", "read", "read"]
    assert not runner._rows  # no task's rows outlive it


def test_a_loaded_datasets_patients_are_digested_once_and_each_cohort_picked_from_them(
    ledger: Ledger, store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs on the dataset the store keeps loaded digest its patients once; each cohort
    recorded is its own rows' digests, as digested alone. Another dataset loaded, or the
    same loaded again, is digested anew."""
    digested: list[int] = []
    real = releases.digested

    def counted(pseudonyms: pa.Array) -> np.ndarray:
        digested.append(len(pseudonyms))
        return real(pseudonyms)

    monkeypatch.setattr(releases, "digested", counted)
    runner = TaskRunner(store, EdgePolicy(), "alpha", ledger, SITE_KEY)
    runs = [("a", 0, 99, "data"), ("b", 100, 199, "data"), ("c", 0, 99, "other"),
            ("d", 20, 199, "data")]  # fmt: skip
    for job_id, low, high, dataset in runs:
        task = job(job_id, low, high, dataset)
        assert isinstance(runner.run(task, fetch), StatsResult)
        alone = np.unique(real(job_rows(task.spec, store.load(dataset)).pseudonyms))
        assert np.array_equal(kept_keys(ledger, job_id), alone) and alone.size == high - low + 1
    assert digested == [N, N, N]


def kept_keys(ledger: Ledger, job_id: str) -> np.ndarray:
    """The digests ``ledger.db`` holds for ``job_id``'s cohort."""
    where = ReleaseCohortRow.job_id == job_id
    with ledger.begin() as connection:
        blob = connection.execute(select(ReleaseCohortRow.keys).where(where)).scalar_one()
    return np.frombuffer(blob, dtype=DIGEST)


def fetch(sha: str) -> bytes:
    raise AssertionError("a statistics task downloads nothing")


def test_the_cohort_is_the_rows_job_table_selects_in_its_order() -> None:
    """Under a randomisation origin times count from entry before the filter reads them:
    patient 1 entered on day 100 (800 days from entry), patient 2 on day 250 after its
    recurrence (no time from entry), patient 3 has no entry day (excluded), patient 4 is
    from surgery already (kept as it is)."""
    ids = [f"{i:032x}" for i in range(4)]
    outcome = {
        "patient_id": ids,
        "time_origin": ["diagnosis", "diagnosis", "diagnosis", "randomisation"],
        "randomisation_day": [100, 250, None, None],
        "rfs_days": [900, 200, 850, 850],
        "rfs_event": [0, 1, 1, 0],
    }
    data = CdmData(
        {"patient": pa.table({"patient_id": ids}), "outcome": pa.table(outcome)},
        pa.table({"patient_id": ids, "row": [0.0, 1.0, 2.0, 3.0]}),
    )
    cohort = {"time_origin": "randomisation", "where": [{"field": "rfs_days", "max": 850}]}
    spec = make_spec(features=["ext.row"], outcome={"type": "binary", "label": "rfs_event"},
                     cohort=cohort)  # fmt: skip
    selected = job_rows(spec, data)
    rows = selected.table["ext.row"].astype(int).tolist()
    assert rows == [0, 3]
    assert selected.pseudonyms.to_pylist() == [ids[r] for r in rows]


def test_difference_counts_the_patients_in_exactly_one_cohort() -> None:
    rng = np.random.default_rng(1)
    for size_a, size_b in [(0, 0), (0, 5), (5, 0), (300, 280), (1000, 20)]:
        a = np.unique(rng.integers(0, 2_000, size=size_a).astype(np.uint64))
        b = np.unique(rng.integers(0, 2_000, size=size_b).astype(np.uint64))
        expected = len(set(a.tolist()) ^ set(b.tolist()))
        assert difference(a, b) == difference(b, a) == expected


def test_digests_are_sorted_distinct_and_eight_bytes_a_patient() -> None:
    keys = digests(pa.array([f"{i:032x}" for i in (3, 1, 2, 1)]))
    assert keys.dtype.itemsize == 8 and keys.size == 3
    assert np.all(keys[1:] > keys[:-1])


def test_hundreds_of_releases_of_thousands_of_patients_are_checked_fast(ledger: Ledger) -> None:
    """300 recorded cohorts of 5,000 patients (recorded unchecked, threshold 1), each within
    the threshold of the new one in size, so that none is skipped unread: the check of the new
    one reads and compares them all."""
    rng = np.random.default_rng(2)
    site = np.unique(rng.integers(0, 2**63, size=20_000, dtype=np.uint64))[:10_000]
    releases = Releases(EdgePolicy(), ledger)
    for number in range(300):
        keep = np.sort(rng.choice(site, size=5_000 + number % 5, replace=False))
        assert releases.record(f"job-{number}", ReleaseCohort("data", keep), threshold=1)
    new = np.sort(rng.choice(site, size=5_000, replace=False))
    started = time.perf_counter()
    assert releases.record("new", ReleaseCohort("data", new), threshold=11)
    seconds = time.perf_counter() - started
    assert seconds < 2.0, seconds
    narrow = ReleaseCohort("data", new[1:])  # and they are compared: one fewer is refused
    with pytest.raises(PolicyViolation, match="differs from that of job new"):
        releases.record("narrow", narrow, threshold=11)
