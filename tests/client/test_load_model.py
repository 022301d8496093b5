"""``model.safetensors`` describes itself: a model trained by a federation, loaded in a fresh
process, scores each site's held-out patients as the sites did; tables lacking a feature and
files without valid metadata are refused, naming what is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import safetensors.numpy
from scipy.special import expit

import oncofed.demo
from oncofed.audit import sha256_of
from oncofed.cdm.frame import job_table
from oncofed.client import ClientError, ModelError, load_model, load_spec, write_result
from oncofed.demo.data import site_tables
from oncofed.edge import EdgePolicy, LocalStore
from oncofed.learning.data import build_cohort, holdout_split
from oncofed.learning.metrics import concordance_index, weighted_mean
from oncofed.learning.registry import parameter_shapes
from oncofed.learning.train import predict
from oncofed.wire import tensors
from oncofed.wire.messages import JobPublic, Standardization
from oncofed.wire.spec import JobSpec
from oncofed.wire.stream import META_KEY
from tests.sites import Site, enrol, import_gbsg2, play, sites
from tests.support import State

DEMO_JOBS = Path(oncofed.demo.__file__).parent / "jobs"
NAMES = {"north": "alpha", "south": "beta", "east": "gamma", "west": "delta"}
FEATURES = ["age_at_diagnosis", "tumour_size_mm", "grade", "nodes_positive"]
PREDICT = """
import json, sys
import pandas as pd, pyarrow as pa
from oncofed.client import load_model
model = load_model(sys.argv[1])
frames = [pd.read_csv(p, float_precision="round_trip") for p in sys.argv[2:]]
tables = [pa.Table.from_pandas(f) if i % 2 else f for i, f in enumerate(frames)]
print(json.dumps([model.predict(table).tolist() for table in tables]))
"""
"""Scores each CSV file's rows, from a pandas DataFrame and a pyarrow Table in turn (CSV: a
process that read Parquet may abort at exit, apache/arrow#34314)."""


def finished_training(spec_file: str = "gbsg2_survival.yaml") -> tuple[JobPublic, bytes]:
    """A completed training job of a demo spec, with a standardisation and its global model
    (random weights, as the orchestrator serves them: no metadata)."""
    spec = load_spec(DEMO_JOBS / spec_file)
    assert isinstance(spec, JobSpec)
    rng = np.random.default_rng(3)
    shapes = parameter_shapes(spec.model, spec.n_inputs)
    model = tensors.encode({k: rng.normal(scale=0.05, size=s) for k, s in shapes.items()})
    numeric = len(spec.numeric_names)
    metric = {"binary": "auc", "survival": "c_index"}[spec.outcome.type]
    sites = {"north": {"status": "accepted", "metrics": {metric: 0.7}}}
    first = {"number": 1, "kind": "train", "status": "closed", "sites": sites,
             "opened_at": "2026-12-01T09:00:00Z", "closed_at": "2026-12-01T09:01:00Z"}  # fmt: skip
    job = JobPublic.model_validate(
        {"id": "a" * 32, "name": spec.name, "status": "completed", "error": None,
         "spec": spec.model_dump(mode="json"), "created_at": "2026-12-01T09:00:00Z",
         "finished_at": "2026-12-01T09:05:00Z", "sites": ["north", "south"], "rounds": [first],
         "model_sha256": tensors.sha256(model),
         "participation": {"sites": {"north": {"state": "took_part"},
                                     "south": {"state": "declined", "reason": "policy"}}},
         "standardization": {"mean": rng.uniform(1, 50, numeric).tolist(),
                             "std": rng.uniform(0.5, 10, numeric).tolist()}}
    )  # fmt: skip
    return job, model


def written(tmp_path: Path, spec_file: str = "gbsg2_survival.yaml") -> Path:
    """The ``model.safetensors`` ``write_result`` writes for ``finished_training``."""
    job, model = finished_training(spec_file)
    return write_result(job, model, tmp_path / "result")["model"]


def patients() -> pd.DataFrame:
    """Four patients in the data model's names (the demo's survival features)."""
    return pd.DataFrame(
        {"age_at_diagnosis": [45.0, 60.0, 71.0, 38.0],
         "tumour_size_mm": [12.0, 30.0, 55.0, 20.0],
         "grade": ["G1", "G2", "G3", "G2"],
         "nodes_positive": [0.0, 3.0, 12.0, 1.0],
         "biomarker.PR.value": [10.0, 0.0, 250.0, 40.0],
         "biomarker.ER.value": [80.0, 5.0, 0.0, 120.0],
         "treatment.endocrine": [1.0, 0.0, 1.0, 0.0],
         "rfs_days": [2000.0, 700.0, 300.0, 1000.0],
         "rfs_event": [0.0, 1.0, 1.0, 0.0]}
    )  # fmt: skip


# -- a federation's model, in a fresh process ----------------------------------------------


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LocalStore]:
    """The demo's four hospitals as alpha to delta."""
    tables = {NAMES[demo]: table for demo, table in site_tables().items()}
    return import_gbsg2(tmp_path_factory.mktemp("sites"), tables)


@pytest.fixture
def four(state: State, stores: dict[str, LocalStore], tmp_path: Path) -> Iterator[dict[str, Site]]:
    enrol(state, ["gamma", "delta"])
    with ExitStack() as stack:
        yield sites(state, stores, stack, tmp_path / "edges", EdgePolicy())


def survival_job() -> JobSpec:
    """A small Cox network on the demo's data: numeric, log1p and one-hot features."""
    return JobSpec.model_validate(
        {"name": "travels", "dataset": "gbsg2",
         "cohort": {"primary_site": "C50", "time_origin": "diagnosis"},
         "features": ["age_at_diagnosis", {"name": "tumour_size_mm", "transform": "log1p"},
                      {"name": "grade", "levels": ["G1", "G2", "G3"]},
                      {"name": "nodes_positive", "transform": "log1p"}],
         "outcome": {"type": "survival", "time": "rfs_days", "event": "rfs_event"},
         "model": {"type": "cox_mlp", "hidden": [8], "dropout": 0.1},
         "rounds": 3, "local": {"epochs": 1, "batch_size": 64, "lr": 0.01}, "seed": 5}
    )  # fmt: skip


def test_a_trained_model_reproduces_the_held_out_metrics_in_a_fresh_process(
    state: State, four: dict[str, Site], stores: dict[str, LocalStore], tmp_path: Path
) -> None:
    spec = survival_job()
    job = play(state, four, spec)
    assert job.status == "completed", job.error
    model = state.coordinator.blobs.read(job.model_sha256 or "")
    paths = write_result(job, model, tmp_path / "result")
    report = json.loads(paths["report"].read_text())
    held_out: dict[str, tuple[Path, np.ndarray, np.ndarray]] = {}
    for site, store in stores.items():
        table = job_table(spec, store.load("gbsg2"))
        cohort = build_cohort(spec, table)
        assert cohort.excluded == 0  # the cohort's rows are the table's, in its order
        _, rows = holdout_split(len(cohort), spec.evaluation.holdout, spec.seed)
        path = tmp_path / f"{site}.csv"
        pd.DataFrame({name: table[name][rows] for name in FEATURES}).to_csv(path, index=False)
        assert cohort.time is not None
        held_out[site] = (path, cohort.time[rows], cohort.label[rows])
    paths_given = [str(p) for p, _, _ in held_out.values()]
    command = [sys.executable, "-c", PREDICT, str(paths["model"]), *paths_given]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    final = report["final"]
    ours = []
    for (site, (_, time, event)), given in zip(held_out.items(), scores, strict=True):
        risk = np.asarray(given)
        c_index = concordance_index(time, event, risk)
        assert final["sites"][site]["n_eval"] == len(risk)
        assert c_index == pytest.approx(final["sites"][site]["c_index"], abs=1e-9)
        ours.append((c_index, len(risk)))
    assert weighted_mean(ours) == pytest.approx(final["pooled"]["mean_site_c_index"], abs=1e-9)
    provenance = report["provenance"]
    assert provenance["spec_sha256"] == sha256_of(spec.model_dump(mode="json"))
    assert provenance["sites"] == dict.fromkeys(sorted(four), "took_part")


# -- predicting ----------------------------------------------------------------------------


def test_predictions_transform_encode_and_scale_as_training_did(tmp_path: Path) -> None:
    """A binary model's probabilities are those of the training code's design, from a pandas
    DataFrame and a pyarrow Table alike."""
    job, model = finished_training("gbsg2_recurrence_5y.yaml")
    assert isinstance(job.spec, JobSpec) and job.standardization is not None
    loaded = load_model(write_result(job, model, tmp_path)["model"])
    frame = patients()
    cohort = build_cohort(job.spec, {name: frame[name].to_numpy() for name in frame})
    assert len(cohort) == 3  # the fourth patient was censored before the horizon
    expected = expit(predict(job.spec, tensors.decode(model), cohort.design(job.standardization)))
    frame = frame.drop(columns=["rfs_days", "rfs_event"])  # predicting needs no outcome
    for table in (frame, pa.Table.from_pandas(frame)):
        probability = loaded.predict(table)
        assert probability.shape == (4,) and np.all((probability > 0) & (probability < 1))
        np.testing.assert_allclose(probability[:3], expected, rtol=1e-6)


def test_a_row_it_cannot_encode_gets_no_score(tmp_path: Path) -> None:
    frame = patients()
    frame.loc[1, "tumour_size_mm"] = np.nan
    frame.loc[2, "grade"] = "G4"
    risk = load_model(written(tmp_path)).predict(frame)
    assert np.isnan(risk[1]) and np.isnan(risk[2])
    assert np.isfinite(risk[[0, 3]]).all()


def test_a_table_without_a_feature_is_refused_naming_it(tmp_path: Path) -> None:
    loaded = load_model(written(tmp_path))
    with pytest.raises(ModelError, match=r"no column 'grade', 'treatment\.endocrine'"):
        loaded.predict(patients().drop(columns=["grade", "treatment.endocrine"]))
    table = pa.Table.from_pandas(patients().drop(columns=["nodes_positive"]))
    with pytest.raises(ModelError, match="no column 'nodes_positive'"):
        loaded.predict(table)


def test_a_column_of_words_for_a_number_is_refused(tmp_path: Path) -> None:
    frame = patients().astype({"age_at_diagnosis": object})
    frame.loc[0, "age_at_diagnosis"] = "forty"
    with pytest.raises(ModelError, match="'age_at_diagnosis' is not numeric"):
        load_model(written(tmp_path)).predict(frame)


# -- files refused -------------------------------------------------------------------------


def _rewritten(path: Path, metadata: dict[str, str] | None) -> Path:
    """The file at ``path`` with its weights and other metadata."""
    weights = safetensors.numpy.load_file(str(path))
    target = path.with_name("changed.safetensors")
    safetensors.numpy.save_file(weights, str(target), metadata=metadata)
    return target


def _entry(path: Path) -> dict[str, Any]:
    header = tensors.read_header(path.read_bytes())
    metadata = header["__metadata__"]
    assert isinstance(metadata, dict)
    entry: dict[str, Any] = json.loads(metadata[META_KEY])
    return entry


def test_the_file_holds_what_the_model_expects(tmp_path: Path) -> None:
    job, _ = finished_training()
    entry = _entry(written(tmp_path))
    assert isinstance(job.spec, JobSpec) and job.standardization is not None
    assert entry["spec_sha256"] == sha256_of(job.spec.model_dump(mode="json"))
    assert entry["global_model_sha256"] == job.model_sha256
    assert entry["model"] == {"type": "cox_mlp", "hidden": [16], "dropout": 0.1}
    assert entry["layers"] == [8, 16, 1] and entry["task"] == "survival"
    assert [f["name"] for f in entry["features"]] == [f.name for f in job.spec.features]
    assert entry["features"][2] == {"name": "grade", "transform": "none",
                                    "levels": ["G1", "G2", "G3"]}  # fmt: skip
    assert Standardization.model_validate(entry["standardization"]) == job.standardization
    assert entry["outcome"] == {"type": "survival", "time": "rfs_days", "event": "rfs_event"}
    assert entry["oncofed_version"] == oncofed.__version__


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: {**e, "standardization": {"mean": [0.0], "std": [1.0]}},
         "standardization has 1 means and 1 standard deviations for 6 numeric features"),
        (lambda e: {**e, "layers": [8, 8, 1]}, "layers .3 widths. are not those of 'cox_mlp'"),
        (lambda e: {**e, "layers": [1] * 100_000}, "layers .100000 widths. are not those of"),
        (lambda e: {**e, "features": [*e["features"], e["features"][0]]},
         "each feature may appear once"),
        (lambda e: {**e, "outcome": {"type": "binary", "label": "rfs_event"}},
         "outcome.type 'binary' does not fit 'survival'"),
        (lambda e: {**e, "format": "oncofed-model/9"}, "format: Input should be"),
        (lambda e: {k: v for k, v in e.items() if k != "outcome"}, "outcome: Field required"),
        (lambda e: {**e, "model": {"type": "__import__('os')"}}, "model.type: String should"),
    ],
)  # fmt: skip
def test_malformed_metadata_is_refused_naming_the_field(
    tmp_path: Path, change: Any, message: str
) -> None:
    path = written(tmp_path)
    changed = _rewritten(path, {META_KEY: json.dumps(change(_entry(path)))})
    with pytest.raises(
        ModelError, match=f"changed.safetensors: invalid model metadata: .*{message}"
    ):
        load_model(changed)


def test_a_file_without_metadata_is_refused(tmp_path: Path) -> None:
    """The orchestrator's own model file, as a site receives it, does not describe itself."""
    _, model = finished_training()
    (tmp_path / "raw.safetensors").write_bytes(model)
    with pytest.raises(ModelError, match="no 'oncofed' metadata: not a model written by"):
        load_model(tmp_path / "raw.safetensors")
    changed = _rewritten(written(tmp_path), {META_KEY: "{not json"})
    with pytest.raises(ModelError, match=r"invalid model metadata: .*Invalid JSON"):
        load_model(changed)
    (tmp_path / "text.safetensors").write_text("not a model")
    with pytest.raises(ModelError, match=r"text\.safetensors: not a safetensors file"):
        load_model(tmp_path / "text.safetensors")


def test_weights_that_do_not_fit_the_metadata_are_refused(tmp_path: Path) -> None:
    path = written(tmp_path)
    metadata = tensors.read_header(path.read_bytes())["__metadata__"]
    assert isinstance(metadata, dict)
    weights = safetensors.numpy.load_file(str(path))
    weights["layers.0.weight"] = weights["layers.0.weight"][:, :5].copy()
    safetensors.numpy.save_file(weights, str(path), metadata=metadata)
    with pytest.raises(ModelError, match=r"layers\.0\.weight: shape \(16, 5\), expected \(16, 8\)"):
        load_model(path)


def test_a_model_that_is_not_the_jobs_is_not_written(tmp_path: Path) -> None:
    job, model = finished_training()
    other = tensors.encode({k: v + 1 for k, v in tensors.decode(model).items()})
    with pytest.raises(ClientError, match=r"not job a+'s latest one"):
        write_result(job, other, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()
