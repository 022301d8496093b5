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
        "age",
        {"name": "tgrade", "levels": ["I", "II", "III"]},
        {"name": "pnodes", "transform": "log1p"},
        {"name": "menostat", "levels": ["Pre", "Post"]},
    ],
    "outcome": {"type": "binary", "time": "time", "event": "cens", "horizon_days": 1825},
    "model": {"type": "logistic"},
}

YAML_TEXT = """
name: gbsg2-survival
dataset: gbsg2
features:
  - age
  - {name: tsize, transform: log1p}
  - {name: horTh, levels: ["no", "yes"]}
outcome: {type: survival, time: time, event: cens}
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


def test_valid_spec_with_plain_names_and_categorical_and_log1p() -> None:
    spec = JobSpec.model_validate(VALID)
    assert [f.name for f in spec.features] == ["age", "tgrade", "pnodes", "menostat"]
    age, tgrade, pnodes, menostat = spec.features
    assert (age.transform, age.levels, age.width) == ("none", None, 1)
    assert (tgrade.transform, tgrade.levels, tgrade.width) == ("none", ["I", "II", "III"], 2)
    assert (pnodes.transform, pnodes.levels, pnodes.width) == ("log1p", None, 1)
    assert menostat.width == 1
    assert isinstance(spec.outcome, BinaryOutcome)
    assert (spec.outcome.label, spec.outcome.time, spec.outcome.event) == (None, "time", "cens")
    assert spec.outcome.horizon_days == 1825.0
    assert spec.numeric_names == ["age", "pnodes"]
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
        (["a"], 1),
        (["a", "b", {"name": "c", "transform": "log1p"}], 3),
        ([{"name": "g", "levels": ["x", "y"]}], 1),
        (["a", {"name": "g", "levels": ["p", "q", "r", "s"]}, "b"], 5),
    ],
)
def test_n_inputs_counts_dummies_without_reference(features: list[Any], n_inputs: int) -> None:
    assert JobSpec.model_validate(_with(features=features)).n_inputs == n_inputs


def test_demo_jobs_validate() -> None:
    from oncofed.demo.data import demo_specs

    survival, binary = demo_specs()
    assert survival.outcome.type == "survival"
    assert binary.outcome.type == "binary"
    # age, menostat, tsize, tgrade (2), pnodes, progrec, estrec, horTh
    assert survival.n_inputs == binary.n_inputs == 9


# -- invalid specs: the error's loc names the field --------------------------------------


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        pytest.param(_with(model={"type": "svm"}), ("model", "type"), id="unknown-model-type"),
        pytest.param(
            _with(
                outcome={
                    "type": "binary",
                    "label": "y",
                    "time": "t",
                    "event": "e",
                    "horizon_days": 30,
                }
            ),
            ("outcome", "binary"),
            id="label-and-horizon",
        ),
        pytest.param(
            _with(outcome={"type": "binary", "event": "e", "horizon_days": 30}),
            ("outcome", "binary"),
            id="horizon-without-time",
        ),
        pytest.param(
            _with(features=["age", {"name": "g", "levels": ["a", "b"], "transform": "log1p"}]),
            ("features", 1),
            id="levels-with-transform",
        ),
        pytest.param(
            _with(features=[{"name": "g", "levels": ["a", "a"]}]),
            ("features", 0),
            id="repeated-level",
        ),
        pytest.param(
            _with(features=[{"name": "g", "levels": ["only"]}]),
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
        _with(model={"type": "logistic"}, outcome={"type": "survival", "time": "t", "event": "e"}),
        {"model", "outcome"},
        r"model\.type 'logistic' does not fit outcome\.type 'survival'",
        id="binary-model-survival-outcome",
    ),
    pytest.param(
        _with(features=["age", {"name": "age", "transform": "log1p"}]),
        {"features"},
        r"each column may appear once",
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
    path.write_text(YAML_TEXT.replace('levels: ["no", "yes"]', 'levels: ["no"]'))
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
