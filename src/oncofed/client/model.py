"""A trained model that travels: ``model.safetensors`` with what it expects in its metadata.

The client writes the file (:func:`model_file`) from the finished job's public record, which
holds everything a prediction needs: the spec (features with their transforms and levels, the
outcome, the model and its sizes) and the pooled standardisation of the statistics round.
:func:`load_model` reads it back (the metadata validated by pydantic, the weights checked
against the shapes the metadata implies) and predicts from a table named by the data model,
through the same encoding and scaling the sites trained with (``oncofed.learning.data``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from scipy.special import expit

from oncofed import __version__
from oncofed.audit import sha256_of
from oncofed.client._client import ClientError, problems
from oncofed.learning.data import DataError, design, encode_features
from oncofed.learning.plugins import Task
from oncofed.learning.registry import architecture, model_task, parameter_shapes
from oncofed.wire import tensors
from oncofed.wire.base import Sha256
from oncofed.wire.errors import BadTensorPayload
from oncofed.wire.messages import JobPublic, Standardization
from oncofed.wire.spec import Feature, JobSpec, ModelSpec, Outcome
from oncofed.wire.stream import META_KEY

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

FORMAT = "oncofed-model/1"
"""The metadata's format: a reader refuses any other."""


class ModelError(ClientError):
    """A model file without valid metadata or weights, or a table the model cannot read."""


class ModelMetadata(BaseModel):
    """What ``model.safetensors`` says about itself: its metadata's ``oncofed`` entry (JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    format: Literal["oncofed-model/1"]
    oncofed_version: str
    job_id: str
    job_name: str
    spec_sha256: Sha256
    global_model_sha256: Sha256 | None
    """The orchestrator's SHA-256 of the weights as it published them (before this metadata)."""
    model: ModelSpec
    task: Task
    layers: list[int]
    """Widths from the inputs to the score: the design's columns, each layer's outputs."""
    features: list[Feature] = Field(min_length=1, max_length=10_000)
    standardization: Standardization
    """Pooled mean and standard deviation of each numeric feature (after its transform)."""
    outcome: Outcome

    @property
    def n_inputs(self) -> int:
        return sum(f.width for f in self.features)

    @model_validator(mode="after")
    def _consistent(self) -> ModelMetadata:
        if len({f.name for f in self.features}) != len(self.features):
            raise ValueError("each feature may appear once")
        numeric = sum(1 for f in self.features if f.levels is None)
        scaling = self.standardization
        if not len(scaling.mean) == len(scaling.std) == numeric:
            raise ValueError(
                f"standardization has {len(scaling.mean)} means and {len(scaling.std)} "
                f"standard deviations for {numeric} numeric features"
            )
        if model_task(self.model.type) != self.task:
            raise ValueError(f"model.type {self.model.type!r} does not predict {self.task!r}")
        if (self.outcome.type == "survival") != (self.task == "survival"):
            raise ValueError(f"outcome.type {self.outcome.type!r} does not fit {self.task!r}")
        expected = _widths(self.model, self.n_inputs)
        if self.layers != expected:
            raise ValueError(
                f"layers ({len(self.layers)} widths) are not those of {self.model.type!r} on "
                f"{self.n_inputs} inputs ({expected})"
            )
        return self


def _widths(model: ModelSpec, n_inputs: int) -> list[int]:
    return [n_inputs, *(layer.n_out for layer in architecture(model, n_inputs))]


def model_metadata(job: JobPublic) -> ModelMetadata:
    """The metadata of a training job's model, from its public record; ClientError when the
    job never reached its pooled standardisation (its model was never trained)."""
    spec = job.spec
    if not isinstance(spec, JobSpec):
        raise ClientError(f"job {job.id} is an analysis: it has no model")
    if job.standardization is None:
        raise ClientError(
            f"job {job.id} has no pooled standardisation: its statistics round never "
            f"completed (the job is {job.status}), so no model was trained"
        )
    return ModelMetadata(
        format=FORMAT,
        oncofed_version=__version__,
        job_id=job.id,
        job_name=job.name,
        spec_sha256=sha256_of(spec.model_dump(mode="json")),
        global_model_sha256=job.model_sha256,
        model=spec.model,
        task=model_task(spec.model.type),
        layers=_widths(spec.model, spec.n_inputs),
        features=spec.features,
        standardization=job.standardization,
        outcome=spec.outcome,
    )


def model_file(job: JobPublic, model: bytes) -> bytes:
    """The job's global model (safetensors ``model`` as the orchestrator serves it) with
    :class:`ModelMetadata`; ClientError when ``model`` is not the job's model."""
    metadata = model_metadata(job)
    if job.model_sha256 is not None and tensors.sha256(model) != job.model_sha256:
        raise ClientError(
            f"the model downloaded is not job {job.id}'s latest one (it moved on): try again"
        )
    return tensors.encode(_weights(model, metadata, f"job {job.id}'s model"), metadata)


def _weights(data: bytes, metadata: ModelMetadata, where: str) -> tensors.Weights:
    """The weights in ``data``, exactly the names and shapes ``metadata`` implies."""
    try:
        weights = tensors.decode(data)
        tensors.check_weights(weights, parameter_shapes(metadata.model, metadata.n_inputs))
    except BadTensorPayload as exc:
        raise ModelError(f"{where}: {exc}") from exc
    return weights


def read_metadata(data: bytes, where: str = "model") -> ModelMetadata:
    """The validated metadata of a model file's bytes; ModelError saying what is wrong."""
    try:
        header = tensors.read_header(data)
    except BadTensorPayload as exc:
        raise ModelError(f"{where}: not a safetensors file: {exc}") from exc
    metadata = header.get("__metadata__")
    entry = metadata.get(META_KEY) if isinstance(metadata, dict) else None
    if not isinstance(entry, str):
        raise ModelError(
            f"{where}: no {META_KEY!r} metadata: not a model written by oncofed's client "
            "(oncofed job result, or Client.download_result)"
        )
    try:
        return ModelMetadata.model_validate_json(entry)
    except ValidationError as exc:
        raise ModelError(f"{where}: invalid model metadata: {problems(exc)}") from exc


class Model:
    """A trained model and what it expects (:attr:`metadata`); :meth:`predict` scores rows."""

    def __init__(self, metadata: ModelMetadata, weights: tensors.Weights) -> None:
        self.metadata = metadata
        self.weights = weights

    def predict(self, data: pd.DataFrame | pa.Table) -> np.ndarray:
        """One score per row of ``data`` (columns named by the data model, as in the job
        spec): the probability of the outcome for a binary model, the risk score (log
        relative hazard) for a survival model. The features are transformed, one-hot encoded
        and standardised as in training. A row with a missing value, or a level the model
        does not know, gets NaN (training left such rows out); a missing column is refused."""
        from oncofed.learning.train import scores  # torch, on first use

        meta = self.metadata
        try:
            numeric, dummies, complete = encode_features(meta.features, _columns(data, meta))
        except DataError as exc:  # a value its transform cannot take
            raise ModelError(str(exc)) from exc
        out = np.full(complete.shape, np.nan)
        if complete.any():
            x = design(numeric[complete], dummies[complete], meta.standardization)
            score = scores(meta.model, self.weights, x)
            out[complete] = expit(score) if meta.task == "binary" else score
        return out


def _columns(data: pd.DataFrame | pa.Table, meta: ModelMetadata) -> dict[str, np.ndarray]:
    """The feature columns of ``data`` as ``encode_features`` reads them: numbers as float64
    with NaN for missing, categories as objects; ModelError naming any that is missing."""
    import pandas as pd
    import pyarrow as pa

    if isinstance(data, pa.Table):
        present = set(data.column_names)
    elif isinstance(data, pd.DataFrame):
        present = set(map(str, data.columns))
    else:
        raise TypeError(f"predict reads a pandas DataFrame or a pyarrow Table, not {type(data)}")
    missing = [f.name for f in meta.features if f.name not in present]
    if missing:
        raise ModelError(
            f"the table has no column {', '.join(map(repr, missing))}: the model needs every "
            f"feature it was trained on ({', '.join(f.name for f in meta.features)})"
        )
    names = [f.name for f in meta.features]
    frame = data.select(names).to_pandas() if isinstance(data, pa.Table) else data[names]
    columns: dict[str, np.ndarray] = {}
    for feature in meta.features:
        series = frame[feature.name]
        if feature.levels is not None:
            columns[feature.name] = series.to_numpy(dtype=object)
            continue
        try:
            columns[feature.name] = series.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"column {feature.name!r} is not numeric") from exc
    return columns


def load_model(path: Path | str) -> Model:
    """The model in a ``model.safetensors`` a training job's result holds; ModelError when its
    metadata is missing or malformed, or its weights do not fit it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    metadata = read_metadata(data, str(path))
    return Model(metadata, _weights(data, metadata, str(path)))
