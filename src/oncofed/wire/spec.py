"""The job specification a researcher submits: validated once, read by both sides."""

from __future__ import annotations

import functools
import math
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from oncofed.cdm.fields import (
    BIOMARKER_BY_NAME,
    EXTENSION_PREFIX,
    GRADES,
    PATIENT_FIELDS,
    RESULTS,
    SEXES,
    STAGE_GROUPS,
    TIME_ORIGINS,
    TREATMENT_TYPES,
    variable,
)

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


def _variable_name(name: str) -> str:
    variable(name)  # ValueError names what is allowed
    return name


def _label(name: str) -> str:
    var = variable(name)
    model_field = PATIENT_FIELDS.get(name)
    if not var.numeric or (model_field is not None and model_field.kind != "flag"):
        raise ValueError(f"{name!r} is not a 0/1 field; a label must be one")
    return name


VariableName = Annotated[str, Field(min_length=1, max_length=96), AfterValidator(_variable_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Feature(_Strict):
    """One model input, named by the data model: a numeric field (optionally log1p-transformed),
    or a categorical one-hot encoded over a fixed level list (the model's allowed values unless
    the spec lists some of them; the first level is the reference and gets no column)."""

    name: Annotated[str, Field(min_length=1, max_length=96)]
    """A variable of the data model: a field, ``biomarker.NAME.value`` or ``treatment.TYPE``."""
    transform: Literal["none", "log1p"] = "none"
    """``log1p``: the model sees log(1 + value) (numeric variables only)."""
    levels: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, min_length=2
    )
    """A categorical variable's levels, the first the reference (default: all of them)."""

    @property
    def width(self) -> int:
        """Number of model inputs this feature becomes."""
        return 1 if self.levels is None else len(self.levels) - 1

    @model_validator(mode="before")
    @classmethod
    def _model_levels(cls, data: object) -> object:
        """``age_at_diagnosis`` means ``{name: age_at_diagnosis}``; a categorical model field
        without ``levels`` gets the model's allowed values."""
        if isinstance(data, str):
            data = {"name": data}
        if isinstance(data, dict) and data.get("levels") is None and "name" in data:
            try:
                values = variable(str(data["name"])).values
            except ValueError:
                return data  # reported by the name check
            if values is not None:
                return {**data, "levels": list(values)}
        return data

    @model_validator(mode="after")
    def _fits_the_model(self) -> Feature:
        var = variable(self.name)
        if self.levels is None and not var.numeric:
            raise ValueError(f"{self.name!r} is a code field: list the codes to use as levels")
        if self.levels is not None:
            if self.transform != "none":
                raise ValueError("a categorical feature (levels) cannot have a transform")
            if len(set(self.levels)) != len(self.levels):
                raise ValueError("levels must be distinct")
            if var.numeric and not self.name.startswith(EXTENSION_PREFIX):
                raise ValueError(f"{self.name!r} is numeric; it takes no levels")
            outside = [v for v in self.levels if var.values is not None and v not in var.values]
            if outside:
                raise ValueError(f"levels {outside} are not values of {self.name!r}")
        return self


class SurvivalOutcome(_Strict):
    """Right-censored time to event."""

    type: Literal["survival"] = "survival"
    time: Literal["os_days", "rfs_days", "dmfs_days"]
    """Days from the time origin to the event or censoring: overall, recurrence-free or distant
    metastasis-free survival."""
    event: Literal["os_event", "rfs_event", "dmfs_event"]
    """1 for the event, 0 for censored; the same endpoint as ``time``."""

    @model_validator(mode="after")
    def _same_endpoint(self) -> SurvivalOutcome:
        if self.time.split("_")[0] != self.event.split("_")[0]:
            raise ValueError(f"time {self.time!r} and event {self.event!r} are different endpoints")
        return self


class BinaryOutcome(_Strict):
    """A 0/1 label column, or an event within a horizon derived from time and event columns.

    With ``horizon_days``: label 1 when the event happened at or before the horizon, 0 when
    follow-up reached the horizon event-free, and the row is left out when censored before it.
    """

    type: Literal["binary"] = "binary"
    label: Annotated[str, AfterValidator(_label)] | None = None
    """A 0/1 field of the data model to predict."""
    time: Literal["os_days", "rfs_days", "dmfs_days"] | None = None
    """With ``event`` and ``horizon_days``: the survival time the label is derived from."""
    event: Literal["os_event", "rfs_event", "dmfs_event"] | None = None
    """The event of the same endpoint as ``time``."""
    horizon_days: Annotated[float, Field(gt=0)] | None = None
    """Days within which the event makes the label 1."""

    @model_validator(mode="after")
    def _one_definition(self) -> BinaryOutcome:
        horizon = (self.time, self.event, self.horizon_days)
        if self.label is not None and any(v is not None for v in horizon):
            raise ValueError("give either label, or time + event + horizon_days, not both")
        if self.label is None and any(v is None for v in horizon):
            raise ValueError("give label, or all of time, event and horizon_days")
        if self.time is not None and self.event is not None:
            SurvivalOutcome(time=self.time, event=self.event)  # the same endpoint
        return self


Outcome = Annotated[SurvivalOutcome | BinaryOutcome, Field(discriminator="type")]


def _check_values(items: list[str], values: tuple[str, ...]) -> list[str]:
    outside = [v for v in items if v not in values]
    if outside:
        raise ValueError(f"{outside} not allowed; use values from {list(values)}")
    return items


def _one_of(values: tuple[str, ...]) -> AfterValidator:
    return AfterValidator(lambda items: _check_values(items, values))


Codes = Annotated[list[Annotated[str, Field(min_length=1, max_length=16)]], Field(min_length=1)]


class Range(_Strict):
    """Inclusive bounds; either may be left open."""

    min: float | None = None
    """The lowest value kept."""
    max: float | None = None
    """The highest value kept."""

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is larger than max")
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        return self


class Condition(_Strict):
    """A condition on any variable of the model: ``{field: laterality, in: [left]}`` or
    ``{field: tumour_size_mm, max: 50}``."""

    model_config = ConfigDict(populate_by_name=True)

    field: VariableName
    """Any variable of the data model."""
    in_: list[str] | None = Field(default=None, alias="in", min_length=1)
    """A categorical variable's values kept."""
    min: float | None = None
    """A numeric variable's lowest value kept."""
    max: float | None = None
    """A numeric variable's highest value kept."""

    @model_validator(mode="after")
    def _fits_the_variable(self) -> Condition:
        var = variable(self.field)
        if (self.in_ is None) == (self.min is None and self.max is None):
            raise ValueError("give either 'in' or min/max")
        if self.in_ is not None and var.values is not None:
            _check_values(self.in_, var.values)
        if self.in_ is None and not var.numeric:
            raise ValueError(f"{self.field!r} is categorical: use 'in'")
        if self.in_ is not None and var.numeric and not self.field.startswith(EXTENSION_PREFIX):
            raise ValueError(f"{self.field!r} is numeric: use min/max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is larger than max")
        return self


class CohortFilter(_Strict):
    """Which patients a job uses, in the model's terms. Every condition given must hold; the
    researcher never writes SQL, and no condition can name a patient."""

    primary_site: list[Annotated[str, Field(pattern=r"^C\d{1,2}(\.\d?)?$")]] | None = Field(
        default=None, min_length=1, description="ICD-O-3 topography prefixes: C50, C50.9."
    )
    histology: list[Annotated[str, Field(pattern=r"^\d{4}(/[0-3])?$")]] | None = Field(
        default=None,
        min_length=1,
        description="ICD-O-3 morphology, 8500/3, or 8500 (any behaviour).",
    )
    stage_group: Annotated[Codes, _one_of(STAGE_GROUPS)] | None = None
    """Stage groups kept (the data model's ``stage_group`` codes)."""
    grade: Annotated[Codes, _one_of(GRADES)] | None = None
    """Tumour grades kept (the data model's ``grade`` codes)."""
    sex: Annotated[Codes, _one_of(SEXES)] | None = None
    """Sexes kept (the data model's ``sex`` codes)."""
    age: Range | None = None
    """Age at diagnosis, in years."""
    biomarkers: dict[str, Annotated[Codes, _one_of(RESULTS)]] | None = Field(
        default=None, description="Biomarker name to the results accepted: {ER: [positive]}."
    )
    treatments: Annotated[Codes, _one_of(TREATMENT_TYPES)] | None = Field(
        default=None, description="Treatment types every patient received."
    )
    without_treatments: Annotated[Codes, _one_of(TREATMENT_TYPES)] | None = Field(
        default=None, description="Treatment types no patient received."
    )
    time_origin: Literal[TIME_ORIGINS] | None = None  # type: ignore[valid-type]
    """Only patients whose times count from this day 0."""
    where: list[Condition] = Field(default_factory=list)
    """Conditions on any other variable; each must hold."""

    @model_validator(mode="before")
    @classmethod
    def _single_values(cls, data: object) -> object:
        """Accept ``grade: G3`` for ``grade: [G3]`` and ``{ER: positive}`` for a list of one."""
        if not isinstance(data, dict):
            return data
        lists = ("primary_site", "histology", "stage_group", "grade", "sex", "treatments",
                 "without_treatments")  # fmt: skip
        data = {k: [v] if k in lists and isinstance(v, str) else v for k, v in data.items()}
        markers = data.get("biomarkers")
        if isinstance(markers, dict):
            data["biomarkers"] = {k: [v] if isinstance(v, str) else v for k, v in markers.items()}
        return data

    @field_validator("biomarkers")
    @classmethod
    def _known_biomarkers(cls, markers: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        unknown = sorted(set(markers or {}) - set(BIOMARKER_BY_NAME))
        if unknown:
            raise ValueError(
                f"unknown biomarkers {unknown}; supported: {sorted(BIOMARKER_BY_NAME)}"
            )
        return markers

    @property
    def variables(self) -> set[str]:
        """Names of the variables the filter reads."""
        names = {c.field for c in self.where}
        columns = {"primary_site": self.primary_site, "histology": self.histology,
                   "stage_group": self.stage_group, "grade": self.grade, "sex": self.sex,
                   "age_at_diagnosis": self.age, "time_origin": self.time_origin}  # fmt: skip
        names |= {name for name, given in columns.items() if given is not None}
        names |= {f"biomarker.{m}" for m in self.biomarkers or {}}
        names |= {
            f"treatment.{t}" for t in (self.treatments or []) + (self.without_treatments or [])
        }
        return names


BUILTIN_MODELS: dict[str, Literal["binary", "survival"]] = {
    "logistic": "binary",
    "mlp": "binary",
    "cox": "survival",
    "cox_mlp": "survival",
}
"""The built-in model types and the outcome each fits; plugins add others
(``oncofed.learning.plugins``)."""


def _installed_model(name: str) -> str:
    # imported here: oncofed.learning imports this module
    from oncofed.learning.registry import model_task

    model_task(name)  # ValueError naming the installed types
    return name


ModelType = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="A model type installed where the job runs: a built-in ("
        + ", ".join(BUILTIN_MODELS)
        + ") or one a plugin distribution declares (installed at the orchestrator and at "
        "every site, and allowlisted in each site's policy).",
        examples=list(BUILTIN_MODELS),
    ),
    AfterValidator(_installed_model),
]


class ModelSpec(_Strict):
    """A vetted model type from the registry, with its size options."""

    type: ModelType
    hidden: list[Annotated[int, Field(ge=1, le=16384)]] = Field(default_factory=lambda: [32])
    """Widths of the hidden layers (``mlp``, ``cox_mlp``; the linear models have none)."""
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """Probability of dropping each hidden unit in training."""


class FedAvgSpec(_Strict):
    """FedAvg: the next global model is the sample-weighted mean of the sites' models."""

    name: Literal["fedavg"] = "fedavg"


class FedProxSpec(_Strict):
    """FedProx: FedAvg, with a proximal term ``mu/2 ||w - w_global||^2`` in each site's loss that
    keeps heterogeneous sites near the global model."""

    name: Literal["fedprox"] = "fedprox"
    mu: Annotated[float, Field(ge=0.0)] = 0.01
    """Weight of the proximal term (0: FedAvg)."""


class FedAdamSpec(_Strict):
    """FedAdam: Adam at the orchestrator, stepping along the mean of the sites' updates."""

    name: Literal["fedadam"] = "fedadam"
    lr: Annotated[float, Field(gt=0.0)] = 0.01
    """The orchestrator's learning rate."""
    beta1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    """Decay of the first moment (the mean of the updates)."""
    beta2: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.99
    """Decay of the second moment (their square)."""
    tau: Annotated[float, Field(gt=0.0)] = 1e-3
    """Added to the root of the second moment: the lower, the more adaptive."""


class MedianSpec(_Strict):
    """The coordinate-wise median of the sites' updates (a robust strategy)."""

    name: Literal["median"] = "median"


class TrimmedMeanSpec(_Strict):
    """The coordinate-wise mean of the sites' updates without the ``trim`` fraction of highest
    and of lowest values of each element (``floor(trim x sites)`` at each end)."""

    name: Literal["trimmed_mean"] = "trimmed_mean"
    trim: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.2
    """Fraction of the highest, and of the lowest, values left out."""


class KrumSpec(_Strict):
    """(Multi-)Krum: the sample-weighted mean of the ``multi`` updates closest to their
    neighbours, tolerating up to ``byzantine`` sites that send anything."""

    name: Literal["krum"] = "krum"
    byzantine: Annotated[int, Field(ge=0, le=1000)] = 1
    """Sites that may send anything; ``min_sites`` must be at least 2 x this + 3."""
    multi: Annotated[int, Field(ge=1, le=10_000)] = 1
    """Updates averaged (1: Krum), at most ``min_sites - byzantine``."""


ROBUST_STRATEGIES = (MedianSpec, TrimmedMeanSpec, KrumSpec)
"""Strategies that need every site's update at once (not their running sum)."""

StrategySpec = Annotated[
    FedAvgSpec | FedProxSpec | FedAdamSpec | MedianSpec | TrimmedMeanSpec | KrumSpec,
    Field(discriminator="name"),
]


class LocalTraining(_Strict):
    """What each site does with the global model in one round."""

    epochs: Annotated[int, Field(ge=1, le=1000)] = 1
    """Passes over the site's training rows in each round."""
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 64
    """Rows per gradient step."""
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = 0.01
    """The sites' learning rate."""
    optimizer: Literal["sgd", "adam"] = "adam"
    """The sites' optimizer."""
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    """L2 penalty of the sites' optimizer."""
    clip_norm: Annotated[float, Field(gt=0.0, le=1e6)] = 1.0
    """Largest L2 norm of a site's update (its model minus the global model it was sent); a
    longer update is scaled down to it. Sites always clip, and check that each global model
    moved no further from the last one they saw than updates of this norm allow. The
    orchestrator measures every plain update again and scales (or, with ``over_clip: refuse``,
    refuses) one that is longer: a site that does not clip cannot drag the model further."""
    over_clip: Literal["scale", "refuse"] = "scale"
    """What the orchestrator does with a plain update longer than ``clip_norm``: scale it down
    to that norm, or refuse it (the site's task is rejected for that round)."""


class Evaluation(_Strict):
    """Each site holds out this fraction of its rows, fixed for the whole job, and scores the
    global model on them in the final evaluation round and every ``every`` training rounds."""

    holdout: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.25
    """Fraction of each site's cohort held out (drawn with the job's ``seed``)."""
    every: Annotated[int, Field(ge=1, le=10_000)] | None = 1
    """Training rounds whose number is a multiple of this also score the global model each
    site receives (the job's learning curve); null: no training round does, only the final
    model is scored, in the evaluation round."""

    def scores(self, round_number: int) -> bool:
        """Whether training round ``round_number`` (from 1) scores its global model."""
        return self.every is not None and round_number % self.every == 0


class DifferentialPrivacy(_Strict):
    """Differential privacy for a job's releases at each site: what one patient can change in
    everything a site sends for the job is bounded by ``epsilon`` at ``delta``."""

    epsilon: Annotated[float, Field(gt=0.0, le=100.0)]
    """The job's whole cost at each site (every round): each site calibrates its noise so that
    the job spends at most this of its budget there (training: to its number of rows; an
    analysis: to what one patient can change, which the spec alone sets)."""
    delta: Annotated[float, Field(gt=0.0, le=1e-3)] = 1e-5
    """The probability with which the bound may fail; well below one over the patients."""
    max_grad_norm: Annotated[float, Field(gt=0.0, le=1e3)] = 1.0
    """Training: each patient's gradient is clipped to this L2 norm before the noise is added
    (DP-SGD), which bounds what one patient changes in a step."""
    newton_rounds: Annotated[int, Field(ge=1, le=20)] = 5
    """Regressions: the Newton loop runs exactly this many rounds from coefficients 0, each
    charged its share of ``epsilon`` (a noisy loop has no convergence test to stop it)."""
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict, max_length=100)
    """Regressions: each numeric covariate's range, in its own unit (before a transform); a
    value outside it is moved to its edge at the site. What one patient can change, and so the
    noise, grows with the range: the data model's limits (age 0 to 120) are the default, a
    range the cohort is known to hold (age 20 to 90) gives less noise."""

    @model_validator(mode="after")
    def _sound(self) -> DifferentialPrivacy:
        from oncofed.privacy.accounting import epsilon_floor  # numpy: not on every CLI start

        floor = epsilon_floor(self.delta)
        if self.epsilon < 2 * floor:
            raise ValueError(
                f"epsilon {self.epsilon:g} is too small for delta {self.delta:g}: the accountant "
                f"reaches no epsilon below {floor:.4f} with any noise; ask for at least "
                f"{2 * floor:.4f}"
            )
        for name, (low, high) in self.bounds.items():
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"bounds of {name!r}: need finite low < high")
        return self


class PrivacySpec(_Strict):
    """How a job's releases are protected beyond each site's own disclosure rules."""

    differential_privacy: DifferentialPrivacy | None = None
    """Noise calibrated at each site, charged to its privacy budget (``None``: exact releases,
    within the disclosure rules)."""
    secure_aggregation: bool = False
    """The orchestrator learns only the sum over sites of every number a site sends (model
    updates, counts, statistics, derivatives): each site's own numbers stay hidden."""
    threshold: Annotated[float, Field(gt=0.5, le=1.0)] = 0.75
    """A round's n sites use t = floor(threshold * n) + 1 shares to rebuild a site's secrets:
    up to n - t sites may drop out of a round, and an orchestrator colluding with fewer than
    2t - n sites can unmask no one. Above 3/4 that holds whenever at least half the sites are
    honest."""


class JobSpec(_Strict):
    """A federated training job: what to learn, from which columns, how, for how many rounds."""

    kind: Literal["train"] = "train"
    """A training job: the kind of a spec that names none."""
    name: Name
    """The job's name, shown in listings and reports."""
    project: Name | None = Field(
        None, description="The project the job belongs to: it runs where the project is approved."
    )
    dataset: Name
    """The dataset to use; each site runs the job on the dataset it approved the project with."""
    cohort: CohortFilter = Field(default_factory=CohortFilter)
    """Which patients: every condition given must hold (all patients when empty)."""
    features: list[Feature] = Field(min_length=1, max_length=10_000)
    """The model's inputs, each variable once."""
    outcome: Outcome
    """What the model predicts; it must fit ``model.type``."""
    model: ModelSpec
    """The model type and its size."""
    strategy: StrategySpec = Field(default_factory=FedAvgSpec)
    """How the orchestrator turns the sites' updates into the next global model."""
    rounds: Annotated[int, Field(ge=1, le=10_000)] = 10
    """Training rounds (after a statistics round, before an evaluation round)."""
    local: LocalTraining = Field(default_factory=LocalTraining)
    """Each site's training in a round."""
    evaluation: Evaluation = Field(default_factory=Evaluation)
    """The rows each site holds out to evaluate the model."""
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    """Secure aggregation and differential privacy."""
    seed: Annotated[int, Field(ge=0, lt=2**31)] = 0
    """Seeds the initial weights, each site's hold-out split and its training."""
    sites: list[Name] | None = Field(default=None, description="Sites to use; all when omitted.")
    min_sites: Annotated[int, Field(ge=1)] = 1
    """A job is refused when fewer sites can take part, and fails when fewer answer a round."""
    round_timeout_s: Annotated[float, Field(gt=0.0, le=7 * 86400)] = 600.0
    """Seconds a round waits for the sites; one that misses it is left out of the round."""

    @field_validator("features")
    @classmethod
    def _distinct_features(cls, features: list[Feature]) -> list[Feature]:
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise ValueError("each feature may appear once")
        return features

    @field_validator("sites")
    @classmethod
    def _distinct_sites(cls, sites: list[str] | None) -> list[str] | None:
        if sites is not None and len(set(sites)) != len(sites):
            raise ValueError("each site may appear once")
        return sites

    @field_validator("model")
    @classmethod
    def _model_fits_outcome(cls, model: ModelSpec, info: ValidationInfo) -> ModelSpec:
        from oncofed.learning.registry import model_task  # as in _installed_model

        outcome = info.data.get("outcome")
        survival = model_task(model.type) == "survival"
        if outcome is not None and survival != (outcome.type == "survival"):
            raise ValueError(
                f"model.type {model.type!r} does not fit outcome.type {outcome.type!r}"
            )
        return model

    @field_validator("min_sites")
    @classmethod
    def _enough_sites(cls, min_sites: int, info: ValidationInfo) -> int:
        sites = info.data.get("sites")
        if sites is not None and min_sites > len(sites):
            raise ValueError("min_sites is larger than the number of sites listed")
        return min_sites

    @model_validator(mode="after")
    def _robust_strategy_fits(self) -> JobSpec:
        strategy = self.strategy
        if isinstance(strategy, ROBUST_STRATEGIES) and self.privacy.secure_aggregation:
            raise ValueError(
                f"strategy {strategy.name!r} needs each site's update, but under secure "
                "aggregation the orchestrator sees only their sum: use fedavg, fedprox or fedadam"
            )
        if self.privacy.differential_privacy is not None:
            from oncofed.learning.registry import model_task  # as in _installed_model

            if model_task(self.model.type) != "binary":
                raise ValueError(
                    "differential privacy trains binary models only: a survival model's partial "
                    "likelihood ties each patient to the others of a batch, so clipping one "
                    "patient's gradient does not bound what that patient changes"
                )
            if isinstance(strategy, FedProxSpec):
                raise ValueError(
                    "differential privacy and fedprox do not combine (the proximal term is not "
                    "clipped per patient): use fedavg or fedadam"
                )
        if isinstance(strategy, KrumSpec):
            needed = 2 * strategy.byzantine + 3
            if self.min_sites < needed:
                raise ValueError(
                    f"krum with byzantine {strategy.byzantine} needs min_sites >= {needed} "
                    "(2 x byzantine + 3): with fewer sites it cannot tell them apart"
                )
            if strategy.multi > self.min_sites - strategy.byzantine:
                raise ValueError(
                    f"krum multi {strategy.multi} is more than min_sites - byzantine "
                    f"({self.min_sites - strategy.byzantine}): it could keep a byzantine update"
                )
        return self

    @functools.cached_property
    def n_inputs(self) -> int:
        """Width of the model input after categorical encoding (worked out once: a spec is
        frozen, and its features read for every task and every answer)."""
        return sum(f.width for f in self.features)

    @property
    def numeric_names(self) -> list[str]:
        return [f.name for f in self.features if f.levels is None]

    @property
    def variables(self) -> set[str]:
        """Every variable the job reads at a site: features, outcome and cohort filter."""
        outcome = self.outcome
        names = {f.name for f in self.features} | self.cohort.variables | {"time_origin"}
        extra = (getattr(outcome, "label", None), outcome.time, outcome.event)
        return names | {name for name in extra if name is not None}
