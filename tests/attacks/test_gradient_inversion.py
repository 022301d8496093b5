"""Gradient inversion of a one-patient update, plain and under secure aggregation.

A logistic model's loss on one training row (z, y), z the row as the job standardises it, has
the gradient (sigmoid(w'z + b) - y) (z, 1). One SGD step of batch 1 moves the weights by -lr
times that, and the edge's update clipping scales the whole step: the weight step divided by
the bias step is z exactly, whatever the learning rate, the clipping or the label, and the
sign of the bias step is the label (the first model is the null one, sigmoid 1/2). So from a
plain update of a site with one training row the orchestrator reads the patient's row (undoing
the standardisation it announced) and outcome.

Under secure aggregation it holds each site's masked input and their sum only. The same
inversion applied to the sum over 3 such sites (the real protocol in process: a
``SecAggClient`` per site with its edge ledger as pinned peers and release record, the
``MaskedSum`` the orchestrator keeps, the layouts of ``oncofed.learning.secure`` and each
site's ``Contribution`` from the real ``TaskRunner``) gives a row far from every patient, and
each masked input is noise, while the sum is the exact FedAvg numerator.

Three sites hold two GBSG2 patients each (the policy's minimum cohort 1: one row trains, one is
held out); features are five integer columns, so "exactly" means every value to the unit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from lifelines.datasets import load_gbsg2

from oncofed.cdm.frame import job_table
from oncofed.edge import EdgePolicy
from oncofed.edge.ledger import Ledger
from oncofed.edge.runner import Contribution, Outcome, TaskRunner
from oncofed.learning import secure as learning
from oncofed.learning.data import build_cohort, pooled_stats, split_cohort, standardization
from oncofed.learning.registry import initial_weights
from oncofed.privacy.layouts import round_layout
from oncofed.privacy.secagg import (
    Layout,
    MaskedSum,
    SecAggClient,
    build_roster,
    check_bundle,
    check_masked,
    encode_masked,
    inbox_for,
    new_identity,
    public_bytes,
    sign_survivors,
)
from oncofed.privacy.secagg.codec import MaskedFile
from oncofed.privacy.secagg.encoding import decode
from oncofed.wire import tensors
from oncofed.wire.messages import Standardization, StatsResult, TaskAssignment
from oncofed.wire.secagg import MaskedHeader, RoundContext, SecureStep
from oncofed.wire.spec import JobSpec
from tests.support import SITE_KEY, save_columns

SITES = ("alpha", "beta", "gamma")
COLUMNS = {"age": "age", "size": "tsize", "nodes": "pnodes", "pr": "progrec", "er": "estrec"}
"""Extension features of each site's dataset, from GBSG2's columns."""
WEIGHT, BIAS = "layers.0.weight", "layers.0.bias"
POLICY = EdgePolicy(min_cohort_size=1, min_eval_size=1)
"""A site that trains on one patient: its plain cohort minimum lowered to 1 (under secure
aggregation ``min_cohort_size_secure`` is 1 by default)."""
FAR = 1.0
"""Distance (Euclidean, in standard deviations of the pooled training rows) beyond which a row
is nothing near a patient; the plain inversion is within 1e-5 of its patient."""
Numbers = dict[str, np.ndarray]


def one_step_job(secure: bool) -> JobSpec:
    """A logistic model trained by one SGD step of batch 1 per round, the update clipped to the
    spec's default norm of 1 (a step of lr 2 from the null model is always longer)."""
    return JobSpec.model_validate(
        {
            "name": "one-patient",
            "dataset": "data",
            "features": [f"ext.{name}" for name in COLUMNS],
            "outcome": {"type": "binary", "label": "ext.y"},
            "model": {"type": "logistic"},
            "rounds": 1,
            "local": {"epochs": 1, "batch_size": 1, "lr": 2.0, "optimizer": "sgd"},
            "evaluation": {"holdout": 0.5},
            "min_sites": 1,
            "privacy": {"secure_aggregation": secure},
        }
    )


@dataclass
class Site:
    """One hospital: its store, ledger, identity key and the edge's real task runner."""

    name: str
    runner: TaskRunner
    ledger: Ledger
    table: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        self.identity = new_identity()

    def run(self, task: TaskAssignment, blobs: Mapping[str, bytes]) -> Outcome:
        return self.runner.run(task, lambda sha: blobs[sha])

    def patient(self, spec: JobSpec) -> tuple[np.ndarray, float]:
        """The training row and label, as the edge splits its cohort (for scoring only)."""
        train, _ = split_cohort(spec, build_cohort(spec, self.table))
        assert len(train) == 1
        return train.numeric[0], float(train.label[0])


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[dict[str, Site]]:
    """Each site two GBSG2 patients (rows 2i and 2i + 1), with the 5-year outcome as label."""
    data = load_gbsg2()
    made = {}
    for i, name in enumerate(SITES):
        rows = data.iloc[2 * i : 2 * i + 2]
        columns = {key: rows[column].to_numpy(np.float64) for key, column in COLUMNS.items()}
        columns["y"] = ((rows["cens"] == 1) & (rows["time"] <= 1825)).to_numpy(np.float64)
        store = save_columns(tmp_path / name / "datasets", "data", columns)
        ledger = Ledger(tmp_path / name)
        runner = TaskRunner(store, POLICY, name, ledger, SITE_KEY)
        table = job_table(one_step_job(False), store.load("data"))
        made[name] = Site(name, runner, ledger, table)
    yield made
    for site in made.values():
        site.ledger.close()


def task(spec: JobSpec, number: int, **announced: object) -> TaskAssignment:
    """A task of round ``number`` as the orchestrator sends it (a secure round's first phase
    when the spec says so)."""
    kind = "stats" if number == 0 else "train"
    plain = TaskAssignment(
        task_id=f"t{number}", job_id="job-1", round=number, kind=kind, spec=spec, **announced
    )
    if not spec.privacy.secure_aggregation:
        return plain
    context = RoundContext(job_id="job-1", round=number, announced=plain.announced())
    return plain.model_copy(update={"secure": SecureStep(phase="keys", context=context)})


def initial_model(spec: JobSpec) -> tuple[tensors.Weights, bytes]:
    weights = initial_weights(spec.model, spec.n_inputs, spec.seed)
    return weights, tensors.encode(weights)


def round_one(
    spec: JobSpec, pooled: StatsResult
) -> tuple[TaskAssignment, tensors.Weights, dict[str, bytes]]:
    """The training task announcing the pooled totals and the derived first model."""
    weights, data = initial_model(spec)
    sha = tensors.sha256(data)
    one = task(spec, 1, model_sha256=sha, standardization=standardization(pooled), pooled=pooled)
    return one, weights, {sha: data}


def invert(weight_step: np.ndarray, bias_step: float, scaling: Standardization) -> np.ndarray:
    """The attack: the weight step over the bias step, unstandardised."""
    z = np.asarray(weight_step, dtype=np.float64).reshape(-1) / bias_step
    return z * np.asarray(scaling.std) + np.asarray(scaling.mean)


def distance(row: np.ndarray, patient: np.ndarray, scaling: Standardization) -> float:
    """Euclidean distance in the pooled standard deviations."""
    return float(np.linalg.norm((row - patient) / np.asarray(scaling.std)))


def test_a_plain_one_patient_update_gives_the_patient_exactly(sites: dict[str, Site]) -> None:
    spec = one_step_job(secure=False)
    parts = [site.run(task(spec, 0), {}) for site in sites.values()]
    assert all(isinstance(p, StatsResult) for p in parts)
    pooled = pooled_stats([p for p in parts if isinstance(p, StatsResult)])
    one, model, blobs = round_one(spec, pooled)
    assert one.standardization is not None
    for site in sites.values():
        update = site.run(one, blobs)
        assert isinstance(update, bytes), update
        weights = tensors.decode(update)  # what a plain orchestrator receives
        step = {name: weights[name].astype(np.float64) - model[name] for name in model}
        norm = math.sqrt(sum(float(np.sum(s**2)) for s in step.values()))
        assert norm == pytest.approx(spec.local.clip_norm, rel=1e-6)  # clipped by the edge
        row = invert(step[WEIGHT], float(step[BIAS][0]), one.standardization)
        patient, label = site.patient(spec)
        np.testing.assert_allclose(row, patient, rtol=1e-5, atol=1e-4)  # float32 updates
        np.testing.assert_array_equal(np.round(row), patient)  # every value, exactly
        assert float(step[BIAS][0] > 0) == label


def secure_round(
    context: RoundContext,
    layout: Layout,
    contributions: Mapping[str, Contribution],
    sites: Mapping[str, Site],
    fraction: float,
) -> tuple[Numbers, dict[str, bytes]]:
    """One secure round over the sites: their unmasked sum, and each masked input as posted."""
    orchestrator = new_identity()
    clients = {
        name: SecAggClient(
            context,
            name,
            site.identity,
            peers=site.ledger,
            releases=site.ledger,
            min_sites=POLICY.min_secure_sites,
            min_fraction=POLICY.min_secure_threshold,
        )
        for name, site in sites.items()
    }
    identities = {name: public_bytes(site.identity) for name, site in sites.items()}
    adverts = [client.advertise() for client in clients.values()]
    roster = build_roster(context, adverts, identities, fraction)
    bundles = [client.share(roster) for client in clients.values()]
    for bundle in bundles:
        check_bundle(roster, bundle)
    total, posted = MaskedSum(context, layout), {}
    for name, client in clients.items():
        own = contributions[name]
        masked = client.mask(inbox_for(name, bundles), own.values, layout)
        header = MaskedHeader(context=context, site=name, clear=own.clear)
        posted[name] = encode_masked(masked, layout, header)
        check_masked(posted[name], layout)
        total.add(posted[name])
    shared = [bundle.sender for bundle in bundles]
    survivors = sign_survivors(context, roster, orchestrator, shared, total.sites)
    key = public_bytes(orchestrator)
    replies = [client.unmask(survivors, key) for client in clients.values()]
    return total.unmask(roster, survivors, replies), posted


def contributions(
    sites: Mapping[str, Site], one: TaskAssignment, blobs: Mapping[str, bytes]
) -> dict[str, Contribution]:
    answers = {name: site.run(one, blobs) for name, site in sites.items()}
    assert all(isinstance(a, Contribution) for a in answers.values()), answers
    return {name: a for name, a in answers.items() if isinstance(a, Contribution)}


def test_the_secure_sum_of_three_one_patient_updates_gives_no_one(
    sites: dict[str, Site],
) -> None:
    spec = one_step_job(secure=True)
    n = len(SITES)
    zero = task(spec, 0)
    assert zero.secure is not None
    stats_layout = round_layout(spec, "stats", 0, n)
    stats, _ = secure_round(
        zero.secure.context,
        stats_layout,
        contributions(sites, zero, {}),
        sites,
        spec.privacy.threshold,
    )
    pooled = learning.pooled_stats(stats)
    one, _, blobs = round_one(spec, pooled)
    assert one.secure is not None and one.standardization is not None
    scaling = one.standardization
    own = contributions(sites, one, blobs)
    layout = round_layout(spec, "train", 1, n)
    sums, posted = secure_round(one.secure.context, layout, own, sites, spec.privacy.threshold)

    # The sum is right: every site's weighted update (its rows times its clipped step), to the
    # narrow ring's resolution, and the rows.
    weight, bias = learning.MODEL + WEIGHT, learning.MODEL + BIAS
    resolution = n * 2.0 ** -layout[weight].fraction_bits
    for name in (weight, bias):
        expected = np.sum([c.values[name] for c in own.values()], axis=0)
        np.testing.assert_allclose(sums[name], expected, rtol=0, atol=resolution)
    assert int(sums["n_train"]) == n and int(sums[learning.SITES]) == n

    # ...and gives no one: its inversion is far from every patient; and each masked input the
    # orchestrator holds, read as if it were a sum, is noise: every number in it is further from
    # its site's own than the whole range of an honest update (1, the clip norm, times 1 row).
    patients = {name: site.patient(spec)[0] for name, site in sites.items()}
    row = invert(sums[weight], float(sums[bias][0]), scaling)
    far = {name: distance(row, patient, scaling) for name, patient in patients.items()}
    assert min(far.values()) > FAR, far
    for name, data in posted.items():
        with MaskedFile(data, layout) as masked:
            for segment, start, limbs in masked.pieces():
                if segment.startswith(learning.MODEL):
                    noise = decode(segment, layout[segment], limbs)
                    honest = own[name].values[segment].reshape(-1)[start : start + noise.size]
                    assert np.all(np.abs(noise - honest) > spec.local.clip_norm), (name, segment)

    # Each contribution alone would have given its patient: the protection is the sum.
    for name, c in own.items():
        alone = invert(c.values[weight], float(c.values[bias][0]), scaling)
        np.testing.assert_allclose(alone, patients[name], rtol=1e-5, atol=1e-4)
