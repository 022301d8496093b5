"""JobSpec validation, and load_spec's error messages for a bad YAML file."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from oncofed.client import ClientError, load_spec
from oncofed.wire.messages import EvaluateResult, Evaluation
from oncofed.wire.spec import (
    BinaryOutcome,
    FedAvgSpec,
    FedProxSpec,
    JobSpec,
    LocalTraining,
    SurvivalOutcome,
)

VALID: dict[str, Any] = {
    "name": "gbsg2-recurrence",
    "dataset": "gbsg2",
    "features": [
        "age_at_diagnosis",
        {"name": "grade", "levels": ["G1", "G2", "G3"]},
        {"name": "nodes_positive", "transform": "log1p"},
        {"name": "ext.menopausal_status", "levels": ["pre", "post"]},
    ],
    "outcome": {"type": "binary", "time": "rfs_days", "event": "rfs_event", "horizon_days": 1825},
    "model": {"type": "logistic"},
}

YAML_TEXT = """
name: gbsg2-survival
dataset: gbsg2
features:
  - age_at_diagnosis
  - {name: tumour_size_mm, transform: log1p}
  - {name: biomarker.ER, levels: [negative, positive]}
outcome: {type: survival, time: rfs_days, event: rfs_event}
model: {type: cox_mlp, hidden: [16, 8], dropout: 0.1}
strategy: {name: fedprox, mu: 0.05}
rounds: 3
local: {epochs: 2, batch_size: 128, lr: 0.01, optimizer: sgd}
sites: [north, south]
min_sites: 2
"""


def _with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    data.update(changes)
    return data


def _locs(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[int | str, ...]]:
    return [tuple(err["loc"]) for err in exc.value.errors()]


# -- valid specs -------------------------------------------------------------------------
def test_a_specs_input_width_is_kept_and_changes_nothing_else() -> None:
    """``n_inputs`` (1 + 2 + 1 + 1 columns) is worked out once and kept on the frozen spec;
    a spec that has it compares equal to one that has not, and writes the same JSON."""
    spec, twin = JobSpec.model_validate(VALID), JobSpec.model_validate(VALID)
    assert spec.n_inputs == 5 and spec.n_inputs == 5
    assert spec == twin and twin == spec  # twin has not worked it out
    assert spec.model_dump_json() == twin.model_dump_json()
    assert "n_inputs" not in spec.model_dump()
    elsewhere = spec.model_copy(update={"dataset": "other"})  # as approvals.check copies it
    assert elsewhere.n_inputs == 5 and elsewhere.dataset == "other"


def test_valid_spec_with_plain_names_and_categorical_and_log1p() -> None:
    spec = JobSpec.model_validate(VALID)
    assert [f.name for f in spec.features] == [
        "age_at_diagnosis",
        "grade",
        "nodes_positive",
        "ext.menopausal_status",
    ]
    age, tgrade, pnodes, menostat = spec.features
    assert (age.transform, age.levels, age.width) == ("none", None, 1)
    assert (tgrade.transform, tgrade.levels, tgrade.width) == ("none", ["G1", "G2", "G3"], 2)
    assert (pnodes.transform, pnodes.levels, pnodes.width) == ("log1p", None, 1)
    assert menostat.width == 1
    assert isinstance(spec.outcome, BinaryOutcome)
    assert (spec.outcome.label, spec.outcome.time, spec.outcome.event) == (
        None,
        "rfs_days",
        "rfs_event",
    )
    assert spec.outcome.horizon_days == 1825.0
    assert spec.numeric_names == ["age_at_diagnosis", "nodes_positive"]
    # defaults
    assert spec.strategy == FedAvgSpec()
    assert spec.local == LocalTraining()
    assert (spec.rounds, spec.seed, spec.sites, spec.min_sites) == (10, 0, None, 1)
    assert spec.model.hidden == [32]


def test_valid_spec_from_yaml_text() -> None:
    spec = JobSpec.model_validate(yaml.safe_load(YAML_TEXT))
    assert isinstance(spec.outcome, SurvivalOutcome)
    assert spec.model.type == "cox_mlp"
    assert spec.model.hidden == [16, 8]
    assert spec.strategy == FedProxSpec(mu=0.05)
    assert spec.local.optimizer == "sgd"
    assert spec.sites == ["north", "south"]
    assert spec.n_inputs == 3


@pytest.mark.parametrize(
    ("features", "n_inputs"),
    [
        (["age_at_diagnosis"], 1),
        (["ecog", "ext.a", {"name": "tumour_size_mm", "transform": "log1p"}], 3),
        ([{"name": "ext.g", "levels": ["x", "y"]}], 1),
        (["sex", {"name": "grade", "levels": ["G1", "G2", "G3", "G4"]}, "treatment.surgery"], 7),
        (["grade", "biomarker.ER", "biomarker.ER.value"], 4 + 3 + 1),
    ],
)
def test_n_inputs_counts_dummies_without_reference(features: list[Any], n_inputs: int) -> None:
    assert JobSpec.model_validate(_with(features=features)).n_inputs == n_inputs


def test_demo_jobs_validate() -> None:
    from oncofed.demo.data import demo_specs

    survival, binary, private = demo_specs()
    assert survival.outcome.type == "survival"
    assert binary.outcome.type == "binary"
    assert private.privacy.differential_privacy is not None
    assert private.model_dump(exclude={"name", "privacy"}) == binary.model_dump(
        exclude={"name", "privacy"}
    )
    # age, size, grade (2), nodes, PR, ER, endocrine therapy
    assert survival.n_inputs == binary.n_inputs == 8


# -- invalid specs: the error's loc names the field --------------------------------------


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        pytest.param(_with(model={"type": "svm"}), ("model", "type"), id="unknown-model-type"),
        pytest.param(
            _with(
                outcome={
                    "type": "binary",
                    "label": "os_event",
                    "time": "os_days",
                    "event": "os_event",
                    "horizon_days": 30,
                }
            ),
            ("outcome", "binary"),
            id="label-and-horizon",
        ),
        pytest.param(
            _with(outcome={"type": "binary", "event": "os_event", "horizon_days": 30}),
            ("outcome", "binary"),
            id="horizon-without-time",
        ),
        pytest.param(
            _with(features=["ecog", {"name": "ext.g", "levels": ["a", "b"], "transform": "log1p"}]),
            ("features", 1),
            id="levels-with-transform",
        ),
        pytest.param(
            _with(features=[{"name": "ext.g", "levels": ["a", "a"]}]),
            ("features", 0),
            id="repeated-level",
        ),
        pytest.param(
            _with(features=[{"name": "ext.g", "levels": ["only"]}]),
            ("features", 0, "levels"),
            id="single-level",
        ),
        pytest.param(_with(rounds=-1), ("rounds",), id="negative-rounds"),
        pytest.param(_with(rounds=0), ("rounds",), id="zero-rounds"),
        pytest.param(_with(colour="blue"), ("colour",), id="extra-key"),
        pytest.param(
            _with(model={"type": "mlp", "hiden": [4]}), ("model", "hiden"), id="extra-nested-key"
        ),
        pytest.param(_with(name="has space"), ("name",), id="bad-name"),
        pytest.param(_with(features=[]), ("features",), id="no-features"),
        pytest.param(_with(strategy={"name": "fedsgd"}), ("strategy",), id="unknown-strategy"),
    ],
)
def test_invalid_field_is_named_in_loc(data: dict[str, Any], loc: tuple[int | str, ...]) -> None:
    with pytest.raises(ValidationError) as excinfo:
        JobSpec.model_validate(data)
    assert loc in _locs(excinfo), _locs(excinfo)


# Cross-field rules live in JobSpec's model-level validator: pydantic gives them an empty loc.
CROSS_FIELD = [
    pytest.param(
        _with(model={"type": "cox"}),
        {"model", "outcome"},
        r"model\.type 'cox' does not fit outcome\.type 'binary'",
        id="survival-model-binary-outcome",
    ),
    pytest.param(
        _with(
            model={"type": "logistic"},
            outcome={"type": "survival", "time": "os_days", "event": "os_event"},
        ),
        {"model", "outcome"},
        r"model\.type 'logistic' does not fit outcome\.type 'survival'",
        id="binary-model-survival-outcome",
    ),
    pytest.param(
        _with(features=["ecog", {"name": "ecog", "transform": "log1p"}]),
        {"features"},
        r"each feature may appear once",
        id="duplicate-feature",
    ),
    pytest.param(
        _with(sites=["north", "south"], min_sites=3),
        {"min_sites", "sites"},
        r"min_sites is larger than the number of sites",
        id="min-sites-above-sites",
    ),
]


@pytest.mark.parametrize(("data", "fields", "message"), CROSS_FIELD)
def test_cross_field_rule_is_rejected_with_message(
    data: dict[str, Any], fields: set[str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        JobSpec.model_validate(data)


@pytest.mark.parametrize(("data", "fields", "message"), CROSS_FIELD)
def test_cross_field_rule_names_the_field_in_loc(
    data: dict[str, Any], fields: set[str], message: str
) -> None:
    with pytest.raises(ValidationError) as excinfo:
        JobSpec.model_validate(data)
    locs = _locs(excinfo)
    assert locs
    assert all(loc and loc[0] in fields for loc in locs), locs


def test_min_sites_equal_to_sites_is_valid() -> None:
    spec = JobSpec.model_validate(_with(sites=["north", "south"], min_sites=2))
    assert spec.min_sites == 2


def test_spec_is_frozen() -> None:
    spec = JobSpec.model_validate(VALID)
    with pytest.raises(ValidationError):
        spec.rounds = 3  # type: ignore[misc]


# -- load_spec ---------------------------------------------------------------------------


def test_load_spec_reads_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(YAML_TEXT)
    assert load_spec(path) == JobSpec.model_validate(yaml.safe_load(YAML_TEXT))
    assert load_spec(str(path)).name == "gbsg2-survival"


def test_load_spec_error_names_file_and_field_path(tmp_path: Path) -> None:
    path = tmp_path / "bad-job.yaml"
    path.write_text(YAML_TEXT.replace("type: cox_mlp", "type: random_forest"))
    with pytest.raises(ClientError) as excinfo:
        load_spec(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: invalid job spec: ")
    assert "model.type: " in message
    assert "'cox_mlp'" in message  # pydantic's message lists the allowed types


def test_load_spec_error_names_nested_list_path(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(YAML_TEXT.replace("levels: [negative, positive]", "levels: [negative]"))
    with pytest.raises(ClientError, match=r"features\.2\.levels: "):
        load_spec(path)


def test_load_spec_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ClientError, match=r"missing\.yaml: cannot be read"):
        load_spec(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ClientError, match=r"broken\.yaml: cannot be read"):
        load_spec(broken)


def test_sites_must_be_distinct_and_numbers_finite() -> None:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(_with(sites=["north", "north"], min_sites=2))
    assert caught.value.errors()[0]["loc"] == ("sites",)
    with pytest.raises(ValidationError):
        JobSpec.model_validate(_with(round_timeout_s=float("inf")))
    with pytest.raises(ValidationError):
        Evaluation(n_eval=3, metrics={"auc": float("nan")})
    with pytest.raises(ValidationError):
        EvaluateResult(evaluation=Evaluation(n_eval=3, metrics={}), compute_seconds=float("inf"))


# -- names of the data model, cohort filter ----------------------------------------------


def test_categorical_model_field_gets_the_model_levels() -> None:
    spec = JobSpec.model_validate(_with(features=["grade", "sex", "biomarker.HER2"]))
    grade, sex, her2 = spec.features
    assert grade.levels == ["G1", "G2", "G3", "G4", "GX"]
    assert sex.levels == ["female", "male", "other", "unknown"]
    assert her2.levels == ["positive", "negative", "equivocal", "unknown"]


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ("patient_id", "pseudonymous and can never be selected"),
        ("tgrade", "'tgrade' is not a field of the data model"),
        ("biomarker.XYZ", "unknown biomarker"),
        ("biomarker.ER.level", r"use biomarker\.ER \(result\) or biomarker\.ER\.value"),
        ("treatment.magic", "unknown treatment type"),
        ("histology", "is a code field: list the codes"),
        ({"name": "grade", "levels": ["G1", "II"]}, r"levels \['II'\] are not values of 'grade'"),
        ({"name": "ecog", "levels": ["0", "1"]}, "'ecog' is numeric; it takes no levels"),
    ],
)
def test_feature_names_come_from_the_model(feature: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        JobSpec.model_validate(_with(features=[feature]))


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        ({"type": "survival", "time": "os_days", "event": "rfs_event"}, "different endpoints"),
        ({"type": "survival", "time": "time", "event": "cens"}, "os_days"),
        ({"type": "binary", "label": "age_at_diagnosis"}, "not a 0/1 field"),
        ({"type": "binary", "label": "grade"}, "not a 0/1 field"),
    ],
)
def test_outcome_names_come_from_the_model(outcome: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        JobSpec.model_validate(_with(outcome=outcome, model={"type": "logistic"}))


def test_cohort_filter_accepts_single_values_and_lists_what_it_reads() -> None:
    cohort = {
        "primary_site": "C50",
        "histology": ["8500/3", "8520"],
        "grade": "G3",
        "age": {"min": 18, "max": 70},
        "biomarkers": {"ER": "positive", "HER2": ["negative", "equivocal"]},
        "treatments": ["endocrine"],
        "without_treatments": "chemotherapy",
        "time_origin": "diagnosis",
        "where": [
            {"field": "tumour_size_mm", "max": 50},
            {"field": "laterality", "in": ["left", "right"]},
        ],
    }
    spec = JobSpec.model_validate(_with(cohort=cohort))
    assert spec.cohort.grade == ["G3"]
    assert spec.cohort.biomarkers == {"ER": ["positive"], "HER2": ["negative", "equivocal"]}
    assert spec.cohort.where[1].in_ == ["left", "right"]
    assert spec.cohort.variables == {
        "primary_site", "histology", "grade", "age_at_diagnosis", "biomarker.ER",
        "biomarker.HER2", "treatment.endocrine", "treatment.chemotherapy", "time_origin",
        "tumour_size_mm", "laterality",
    }  # fmt: skip
    assert spec.variables >= spec.cohort.variables | {"rfs_days", "rfs_event", "grade"}


@pytest.mark.parametrize(
    ("cohort", "loc", "message"),
    [
        ({"grade": "G9"}, ("cohort", "grade"), r"\['G9'\] not allowed"),
        ({"primary_site": "breast"}, ("cohort", "primary_site", 0), "should match pattern"),
        ({"histology": "85003"}, ("cohort", "histology", 0), "should match pattern"),
        ({"biomarkers": {"EGFRx": "positive"}}, ("cohort", "biomarkers"), "unknown biomarkers"),
        ({"biomarkers": {"ER": "high"}}, ("cohort", "biomarkers", "ER"), "not allowed"),
        ({"age": {"min": 70, "max": 18}}, ("cohort", "age"), "min is larger than max"),
        ({"age": {}}, ("cohort", "age"), "give min, max or both"),
        ({"time_origin": "birth"}, ("cohort", "time_origin"), "diagnosis"),
        ({"where": [{"field": "patient_id", "in": ["x"]}]}, ("cohort", "where", 0, "field"),
         "pseudonymous"),
        ({"where": [{"field": "ecog", "in": ["1"]}]}, ("cohort", "where", 0), "use min/max"),
        ({"where": [{"field": "grade", "max": 2}]}, ("cohort", "where", 0), "use 'in'"),
        ({"where": [{"field": "grade", "in": ["III"]}]}, ("cohort", "where", 0), "not allowed"),
        ({"where": [{"field": "ecog"}]}, ("cohort", "where", 0), "give either 'in' or min/max"),
        ({"sql": "select *"}, ("cohort", "sql"), "Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_cohort_filter_errors_name_the_field(
    cohort: dict[str, Any], loc: tuple[int | str, ...], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as excinfo:
        JobSpec.model_validate(_with(cohort=cohort))
    assert loc in _locs(excinfo), _locs(excinfo)
