"""The job specification a researcher submits: validated once, read by both sides."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Feature(_Strict):
    """One input column: numeric (optionally log1p-transformed) or categorical with fixed levels."""

    name: Name
    transform: Literal["none", "log1p"] = "none"
    levels: list[str] | None = Field(
        default=None,
        min_length=2,
        description="Categorical levels; the first is the reference and gets no column.",
    )

    @property
    def width(self) -> int:
        """Number of model inputs this feature becomes."""
        return 1 if self.levels is None else len(self.levels) - 1

    @model_validator(mode="after")
    def _categorical_is_untransformed(self) -> Feature:
        if self.levels is not None and self.transform != "none":
            raise ValueError("a categorical feature (levels) cannot have a transform")
        if self.levels is not None and len(set(self.levels)) != len(self.levels):
            raise ValueError("levels must be distinct")
        return self


class SurvivalOutcome(_Strict):
    """Right-censored time to event."""

    type: Literal["survival"] = "survival"
    time: Name
    event: Name


class BinaryOutcome(_Strict):
    """A 0/1 label column, or an event within a horizon derived from time and event columns.

    With ``horizon_days``: label 1 when the event happened at or before the horizon, 0 when
    follow-up reached the horizon event-free, and the row is left out when censored before it.
    """

    type: Literal["binary"] = "binary"
    label: Name | None = None
    time: Name | None = None
    event: Name | None = None
    horizon_days: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _one_definition(self) -> BinaryOutcome:
        horizon = (self.time, self.event, self.horizon_days)
        if self.label is not None and any(v is not None for v in horizon):
            raise ValueError("give either label, or time + event + horizon_days, not both")
        if self.label is None and any(v is None for v in horizon):
            raise ValueError("give label, or all of time, event and horizon_days")
        return self


Outcome = Annotated[SurvivalOutcome | BinaryOutcome, Field(discriminator="type")]


class ModelSpec(_Strict):
    """A vetted model type from the registry, with its size options."""

    type: Literal["logistic", "mlp", "cox", "cox_mlp"]
    hidden: list[Annotated[int, Field(ge=1, le=16384)]] = Field(default_factory=lambda: [32])
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


class FedAvgSpec(_Strict):
    name: Literal["fedavg"] = "fedavg"


class FedProxSpec(_Strict):
    name: Literal["fedprox"] = "fedprox"
    mu: Annotated[float, Field(ge=0.0)] = 0.01


class FedAdamSpec(_Strict):
    name: Literal["fedadam"] = "fedadam"
    lr: Annotated[float, Field(gt=0.0)] = 0.01
    beta1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    beta2: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.99
    tau: Annotated[float, Field(gt=0.0)] = 1e-3


StrategySpec = Annotated[FedAvgSpec | FedProxSpec | FedAdamSpec, Field(discriminator="name")]


class LocalTraining(_Strict):
    """What each site does with the global model in one round."""

    epochs: Annotated[int, Field(ge=1, le=1000)] = 1
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 64
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = 0.01
    optimizer: Literal["sgd", "adam"] = "adam"
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0


class Evaluation(_Strict):
    """Each site holds out this fraction of its rows, fixed for the whole job."""

    holdout: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.25


class JobSpec(_Strict):
    """A federated training job: what to learn, from which columns, how, for how many rounds."""

    name: Name
    dataset: Name
    features: list[Feature] = Field(min_length=1, max_length=10_000)
    outcome: Outcome
    model: ModelSpec
    strategy: StrategySpec = Field(default_factory=FedAvgSpec)
    rounds: Annotated[int, Field(ge=1, le=10_000)] = 10
    local: LocalTraining = Field(default_factory=LocalTraining)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    seed: Annotated[int, Field(ge=0, lt=2**31)] = 0
    sites: list[Name] | None = Field(default=None, description="Sites to use; all when omitted.")
    min_sites: Annotated[int, Field(ge=1)] = 1
    round_timeout_s: Annotated[float, Field(gt=0.0, le=7 * 86400)] = 600.0

    @model_validator(mode="before")
    @classmethod
    def _plain_feature_names(cls, data: object) -> object:
        """Accept ``features: [age, {name: tgrade, levels: [...]}]`` in YAML."""
        if isinstance(data, dict) and isinstance(data.get("features"), list):
            data = {
                **data,
                "features": [{"name": f} if isinstance(f, str) else f for f in data["features"]],
            }
        return data

    @field_validator("features")
    @classmethod
    def _distinct_features(cls, features: list[Feature]) -> list[Feature]:
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise ValueError("each column may appear once")
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
        outcome = info.data.get("outcome")
        survival = model.type in ("cox", "cox_mlp")
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

    @property
    def n_inputs(self) -> int:
        """Width of the model input after categorical encoding."""
        return sum(f.width for f in self.features)

    @property
    def numeric_names(self) -> list[str]:
        return [f.name for f in self.features if f.levels is None]
