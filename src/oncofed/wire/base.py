"""The building blocks every wire message shares."""

from __future__ import annotations

import base64
import binascii
import operator
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)

MAX_COUNT = 2**53
"""The largest count any message carries: a float64 still holds it (and sums of it) exactly."""
MAX_PATIENTS = 10**9
"""The most patients (or rows) one site may report for one job: a larger count is refused."""
MAX_STATISTIC = 1e100
"""The largest magnitude of a number a site sends (a sum, a sum of squares, a metric, a
derivative): thousands of them, and their squares, add up far from float64 overflow (1.8e308)."""
MAX_SECONDS = 1e9
"""The longest compute time a site may report (about 30 years)."""

Finite = Annotated[float, Field(allow_inf_nan=False)]
"""A finite number (checked in pydantic's core: no Python call per number)."""
_MAGNITUDE = f"must be a finite number of magnitude at most {MAX_STATISTIC:g}"


def _statistic(value: float) -> float:
    if not abs(value) <= MAX_STATISTIC:
        raise ValueError(_MAGNITUDE)
    return value


Statistic = Annotated[float, Field(allow_inf_nan=False), AfterValidator(_statistic)]
"""A finite number a site sends, of magnitude at most ``MAX_STATISTIC``."""


def _statistics(values: list[float]) -> list[float]:
    if values and max(map(abs, values)) > MAX_STATISTIC:
        index = next(i for i, value in enumerate(values) if abs(value) > MAX_STATISTIC)
        raise ValueError(f"item {index} {_MAGNITUDE}")
    return values


Statistics = Annotated[list[Finite], AfterValidator(_statistics)]
"""Finite numbers a site sends, each of magnitude at most ``MAX_STATISTIC``: checked once for
the list, not by a call per number (a training task carries a hundred)."""

Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Patients = Annotated[int, Field(ge=0, le=MAX_PATIENTS)]
"""Patients (or rows) at one site."""
Seconds = Annotated[float, Field(ge=0.0, le=MAX_SECONDS, allow_inf_nan=False)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Epsilon = Annotated[float, Field(ge=0.0, le=1e6, allow_inf_nan=False)]
"""Differential privacy a job spent at a site so far (at the job's delta), as it reports it."""


def base64_bytes(*, size: int | None = None, most: int | None = None) -> tuple[Any, ...]:
    """``Annotated`` metadata of bytes given as standard base64 text without newlines (or raw
    bytes from Python): exactly ``size`` bytes, or at most ``most``."""
    length = None if size is None else 4 * ((size + 2) // 3)
    longest = None if most is None else 4 * ((most + 2) // 3)

    def parse(value: object) -> bytes:
        if isinstance(value, bytes):
            data = value
        elif isinstance(value, str):
            if length is not None and len(value) != length:
                raise ValueError(f"expected {length} base64 characters ({size} bytes)")
            if longest is not None and len(value) > longest:
                raise ValueError(f"expected at most {longest} base64 characters ({most} bytes)")
            try:
                data = base64.b64decode(value, validate=True)
            except binascii.Error as exc:
                raise ValueError("not standard base64 (A-Z a-z 0-9 + / =, no newlines)") from exc
        else:
            raise ValueError("expected base64 text")
        if size is not None and len(data) != size:
            raise ValueError(f"expected {size} bytes, got {len(data)}")
        if most is not None and len(data) > most:
            raise ValueError(f"expected at most {most} bytes, got {len(data)}")
        return data

    return (
        PlainValidator(parse),
        PlainSerializer(lambda data: base64.b64encode(data).decode("ascii"), return_type=str),
        WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
    )


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


SCORE_LEVELS = 11
"""The held-out score grid has ``2 ** 11`` = 2048 bins of equal width on the probability scale
(the sigmoid of the logit), each 1/2048 wide."""


class ScoreHistogram(Message):
    """How many held-out rows of each label have their score (logit) in each cell: a cell is
    a run of bins of the fixed grid (``2 ** SCORE_LEVELS`` bins) between two ``edges``
    (bin numbers, 0 first and 2048 last), the cells as fine as they can be with no cell
    holding 1 to the site's small-cell threshold - 1 rows of a label."""

    edges: list[Annotated[int, Field(ge=0, le=1 << SCORE_LEVELS)]] = Field(
        min_length=2, max_length=(1 << SCORE_LEVELS) + 1
    )
    positive: list[Patients] = Field(min_length=1, max_length=1 << SCORE_LEVELS)
    negative: list[Patients] = Field(min_length=1, max_length=1 << SCORE_LEVELS)

    @model_validator(mode="after")
    def _on_the_grid(self) -> ScoreHistogram:
        edges = self.edges
        if edges[0] != 0 or edges[-1] != 1 << SCORE_LEVELS:
            raise ValueError(f"edges must run from 0 to {1 << SCORE_LEVELS}")
        if not all(map(operator.lt, edges, edges[1:])):  # in C: up to 2,049 edges an answer
            raise ValueError("edges must increase")
        if not len(self.positive) == len(self.negative) == len(edges) - 1:
            raise ValueError("positive and negative must have one count per cell")
        return self

    @property
    def rows(self) -> int:
        return sum(self.positive) + sum(self.negative)


class RowSums(Message):
    """Sums over a site's held-out rows that add up to the pooled rows' (a binary model)."""

    correct: Patients = Field(description="Rows whose predicted class (logit > 0) is right.")
    log_loss: Annotated[Statistic, Field(ge=0.0)] = Field(
        description="The sum of the rows' binary cross-entropy."
    )
    probability: Annotated[Statistic, Field(ge=0.0)] = Field(
        description="The sum of the rows' predicted probabilities."
    )


class Evaluation(Message):
    """Metrics of the received global model on the site's held-out rows; a binary model's
    also as sums and a score histogram, which pool over sites into the pooled rows' figures."""

    n_eval: Patients
    metrics: dict[Annotated[str, Field(max_length=64)], Statistic] = Field(max_length=64)
    sums: RowSums | None = None
    scores: ScoreHistogram | None = Field(
        None, description="None where even one bin would hold a small cell of a label."
    )

    @model_validator(mode="after")
    def _of_its_rows(self) -> Evaluation:
        n = self.n_eval
        if self.scores is not None and self.scores.rows != n:
            raise ValueError(f"the score histogram holds {self.scores.rows} rows, not n_eval {n}")
        if self.sums is not None:
            if self.sums.correct > n:
                raise ValueError(f"more rows classified correctly than n_eval {n}")
            if self.sums.probability > n * (1 + 1e-9):
                raise ValueError(f"a sum of probabilities above n_eval {n}")
        return self
