"""Control messages between researcher, orchestrator and edge: JSON validated by pydantic."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)

from oncofed.wire.analysis import AnalysisParams, AnalysisReport, AnalysisSpec, AnySpec
from oncofed.wire.base import (
    MAX_PATIENTS,
    Count,
    Epsilon,
    Evaluation,
    Finite,
    Message,
    Seconds,
    Sha256,
    Statistic,
    Statistics,
    base64_bytes,
)
from oncofed.wire.profile import Cell
from oncofed.wire.secagg import SecureStep
from oncofed.wire.spec import JobSpec

INLINE_MODEL_BYTES = 64 << 10
"""Largest global model handed with its task; a larger one is downloaded by its hash (its
base64 text, hashed and written for every site, would cost the orchestrator more than the
download's request: 3.4 ms per answer against 2.9 with a 0.4 MB model)."""
InlineModel = Annotated[bytes, *base64_bytes(most=INLINE_MODEL_BYTES)]

API_PREFIX = "/v1"
SHA256_HEADER = "X-Content-SHA256"


TaskKind = Literal["stats", "train", "evaluate", "analysis"]
MAX_FEATURES = 10_000
"""The most numeric features a job has (``JobSpec.features``)."""


# -- enrolment ---------------------------------------------------------------------------


PublicKey = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
"""A raw 32-byte Ed25519 public key, in hex."""
Pem = Annotated[str, Field(max_length=8192)]
"""A PEM document (a certificate)."""
CertificateSigningRequest = Annotated[
    str, Field(max_length=8192, pattern=r"^-----BEGIN CERTIFICATE REQUEST-----")
]
"""A PKCS#10 request in PEM, for an Ed25519 key."""


class EnrolRequest(Message):
    token: Annotated[str, Field(min_length=16, max_length=200)]
    identity_key: PublicKey | None = Field(
        None, description="The site's identity key: its secure-aggregation keys are signed by it."
    )
    csr: CertificateSigningRequest | None = Field(
        None, description="A certificate signing request made with the identity key (mutual TLS)."
    )


class EnrolResponse(Message):
    site: str
    credential: str
    orchestrator_key: PublicKey | None = Field(
        None, description="The key the orchestrator signs survivor lists with; sites pin it."
    )
    certificate: Pem | None = Field(
        None, description="The site's client certificate (PEM), when it sent a request."
    )


class CertificateRequest(Message):
    """A site's renewal: a new request for its identity key (``POST /certificate``)."""

    csr: CertificateSigningRequest


class Certificate(Message):
    """A client certificate the consortium CA issued (PEM)."""

    certificate: Pem


class IdentityKey(Message):
    """A party's Ed25519 identity key (``PUT /identity`` registers a site's once; ``GET``
    gives the orchestrator's)."""

    key: PublicKey


# -- tasks (orchestrator -> edge) --------------------------------------------------------


class Standardization(Message):
    """Pooled mean and standard deviation of each numeric feature, in spec order."""

    mean: list[Finite]
    std: list[Annotated[float, Field(gt=0.0)]]


class StatsResult(Message):
    """Count, sum and sum of squares of each numeric feature over a site's training rows (or,
    as ``TaskAssignment.pooled``, over all sites' rows)."""

    n: Count
    sums: Statistics = Field(max_length=MAX_FEATURES)
    sumsq: Statistics = Field(max_length=MAX_FEATURES)


class SpecsSeen:
    """Job specs read from JSON, each distinct text validated once per process (the most
    recent ``kept``): every task of a job carries the same spec, and validating it (each
    feature resolved against the data model) was half the CPU of reading a training task.
    A spec is frozen, and it is found by its exact content (its JSON, keys sorted), so one
    that differs anywhere is validated anew; one that fails is never kept."""

    def __init__(self, kept: int = 64) -> None:
        self._kept = kept
        self._specs: OrderedDict[str, JobSpec | AnalysisSpec] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(
        self, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> JobSpec | AnalysisSpec:
        if info.mode != "json" or not isinstance(value, dict):  # Python data: built here
            return handler(value)
        key = json.dumps(value, sort_keys=True)
        with self._lock:
            spec = self._specs.get(key)
            if spec is not None:
                self._specs.move_to_end(key)
                return spec
        spec = handler(value)
        with self._lock:
            self._specs[key] = spec
            if len(self._specs) > self._kept:
                self._specs.popitem(last=False)
        return spec


SPECS_SEEN = SpecsSeen()
"""The process's specs read with a task (``TaskAssignment.spec``)."""


class TaskAssignment(Message):
    task_id: str
    job_id: str
    round: Count
    kind: TaskKind
    spec: Annotated[AnySpec, WrapValidator(SPECS_SEEN)]
    model_sha256: Sha256 | None = None
    model: InlineModel | None = Field(
        None,
        description=(
            "The global model named by model_sha256 (safetensors), when small enough to come "
            "with the task; otherwise the site downloads it from /blobs/{model_sha256}."
        ),
    )
    standardization: Standardization | None = None
    pooled: StatsResult | None = Field(
        None, description="The pooled totals the standardization was derived from."
    )
    proximal_mu: Annotated[float, Field(ge=0.0)] = 0.0
    params: AnalysisParams | None = None
    secure: SecureStep | None = Field(
        None, description="The phase of a secure round this site is to take part in now."
    )

    @model_validator(mode="after")
    def _model_is_the_named_one(self) -> TaskAssignment:
        if self.model is not None and hashlib.sha256(self.model).hexdigest() != self.model_sha256:
            raise ValueError("model: its SHA-256 is not model_sha256")
        return self

    def announced(self) -> str:
        """SHA-256 of what the round announces to every site alike: job, round, kind, spec,
        global model, standardisation with its pooled totals, pooled Newton parameters (not a
        site's own). Every site can compute it; secure aggregation binds each mask to it."""
        shared = {"job_id", "round", "kind", "spec", "model_sha256", "standardization", "pooled"}
        content = self.model_dump(mode="json", include=shared)
        if self.params is not None:
            content["params"] = self.params.model_dump(mode="json", exclude={"own"})
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# -- results (edge -> orchestrator) ------------------------------------------------------


class TrainResult(Message):
    """Carried in the safetensors header of a training update."""

    task_id: Annotated[str, Field(max_length=64)]
    n_train: Annotated[int, Field(ge=1, le=MAX_PATIENTS)]
    train_loss: Statistic | None = None
    """The mean training loss of the round's last epoch; None under differential privacy (the
    exact loss of the site's rows is not a private release)."""
    evaluation: Evaluation | None
    """The received global model's held-out figures; None in a round the job does not score
    (``JobSpec.evaluation.every``)."""
    compute_seconds: Seconds
    epsilon: Epsilon | None = None
    """Under differential privacy, what the job spent at the site so far, this round included."""


class EvaluateResult(Message):
    evaluation: Evaluation
    compute_seconds: Seconds


class Decline(Message):
    """The edge will not or cannot run the task; the reason is shown to the researcher."""

    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    failed: bool = False
    """True: the site could not run it (an error there), rather than refused it (its policy
    or its data)."""


class ResultAck(Message):
    task_id: str
    status: Literal["accepted", "duplicate", "rejected", "declined"]
    detail: str = ""
    next_task: TaskAssignment | None = Field(
        None, description="The site's next task, if one is open: saves the site a poll."
    )


# -- sites -------------------------------------------------------------------------------


SITE_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""A site's name: lower-case letters, digits, ``-`` and ``_``, starting with a letter or a
digit, at most 63 characters (it appears in logs, paths and certificates)."""
SiteName = Annotated[str, Field(pattern=SITE_NAME)]


class SiteCreated(Message):
    name: str
    enrolment_token: str


class SitePublic(Message):
    name: str
    enrolled: bool
    last_seen: datetime | None
    connected: bool
    key_fingerprint: str | None = Field(
        None, description="Its identity key's fingerprint, for its peers' admins to compare."
    )
    revoked: datetime | None = Field(None, description="When the operator revoked it, if so.")
    disabled: datetime | None = Field(
        None, description="When the operator disabled it, if so: it gets no tasks meanwhile."
    )


# -- jobs --------------------------------------------------------------------------------


class SiteRound(Message):
    """One site's part in one round."""

    status: str
    n_train: Count | None = None
    train_loss: float | None = None
    n_eval: Count | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    compute_seconds: float | None = None
    bytes_received: Count | None = None
    detail: str = ""


class PooledRound(Message):
    """The pooled numbers of a securely aggregated round: all its orchestrator learns of it."""

    sites: Count
    n_train: Count | None = None
    train_loss: float | None = None
    n_eval: Count | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    metric_rows: dict[str, Count] = Field(
        default_factory=dict, description="The held-out rows each pooled metric is over."
    )
    notes: list[str] = Field(
        default_factory=list, description="What a pooled metric leaves out, or what it is."
    )


class RoundPublic(Message):
    number: Count
    kind: TaskKind
    status: Literal["open", "closed"]
    secure: bool = Field(False, description="Only the sum over sites was unmasked.")
    phase: str | None = Field(None, description="A secure round's phase while it is open.")
    announced_sha256: Sha256 | None = Field(
        None, description="What every site was sent (its edge logs the same hash)."
    )
    opened_at: datetime
    closed_at: datetime | None
    sites: dict[str, SiteRound]
    train_loss: float | None = Field(None, description="Sample-weighted over reporting sites.")
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Metrics of the global model this round received, over the pooled "
        "held-out rows of the sites (AUC from their score histograms; accuracy, log-loss and "
        "mean probability from their sums); a survival model's ``mean_site_c_index`` is the "
        "mean of the sites' own C-index weighted by their held-out rows. Under secure "
        "aggregation pooled only: no site's own metrics are known. Empty in a training round "
        "the job does not score (``evaluation.every``; a note says so).",
    )
    metric_rows: dict[str, Count] = Field(
        default_factory=dict, description="The held-out rows each pooled metric is over."
    )
    notes: list[str] = Field(
        default_factory=list,
        description="What a pooled metric leaves out (a site's rows, and why), or what it is.",
    )


class SiteState(StrEnum):
    """Where one site stands in a whole job (``SiteStatus``)."""

    WAITING = "waiting"
    """The job runs and the site has not answered its current round yet."""
    TOOK_PART = "took_part"
    """Its answers are in the result (under secure aggregation: in the sums)."""
    SUPPRESSED = "suppressed"
    """It answered, but every group or cell it sent is hidden: it adds nothing to the result."""
    DECLINED = "declined"
    """It refused a task: the policy rule or the data reason is given."""
    EXPIRED = "expired"
    """It missed a round's deadline; the job went on without it."""
    FAILED = "failed"
    """Its answer was refused, or its round ended before it answered."""
    CANCELLED = "cancelled"
    """The job was cancelled before it answered its round: nothing of the site's is missing
    for a reason of its own."""

    @property
    def label(self) -> str:
        """The state as people read it: ``took part``."""
        return self.value.replace("_", " ")


IN_RESULT = (SiteState.TOOK_PART, SiteState.SUPPRESSED)
"""The states of a site whose answers were accepted into the result."""


class SiteStatus(Message):
    """One site's part in a whole job, from the orchestrator's records of its tasks: its state
    with the reason, and the patients (training: rows) it reported."""

    state: SiteState
    reason: str = Field("", description="Why (a rule, a data reason, an error), or a note.")
    round: Count | None = Field(None, description="The round its state comes from.")
    n: Count | None = Field(
        None,
        description="Patients in the job's cohort at the site, as it reported them (training: "
        "its training rows); None when not known (secure aggregation, or no answer).",
    )
    n_eval: Count | None = Field(None, description="Training: its held-out rows.")
    counted: Cell | None = Field(
        None, description="Analyses: of its patients, those its answer counts in the result."
    )
    events: Count | None = Field(None, description="Regressions: the events among them.")
    groups: Count | None = Field(
        None,
        description="The groups or cells of the analysis a site sends (survival groups, "
        "table cells, histogram bins).",
    )
    hidden: Count | None = Field(
        None, description="Of those, the ones it sent nothing for or hid (small cells)."
    )
    epsilon: Epsilon | None = Field(
        None,
        description="Differential privacy: what the job spent at the site (at the job's "
        "delta), as the site reported it; None for exact releases.",
    )


class Participation(Message):
    """Who is in a job's result: every site's state and, for an analysis, the patients in the
    pooled result beside the sum of the cohort sizes its sites reported (a gap is patients
    the analysis could not count: missing values, groups withheld, small cells)."""

    sites: dict[str, SiteStatus] = Field(default_factory=dict)
    pooled_n: Cell | None = Field(None, description="Analyses: the patients in the result.")
    reported_n: Count | None = Field(
        None,
        description="Analyses: the sum of the cohort sizes the sites in the result reported; "
        "None when one is not known (secure aggregation).",
    )
    noisy: bool = Field(
        False, description="Analyses: the result is differentially private (its counts noisy)."
    )


JobStatus = Literal["running", "completed", "failed", "cancelled"]
"""A job runs, then ends completed, failed or cancelled, for good."""


class JobPublic(Message):
    id: str
    name: str
    status: JobStatus
    error: str | None
    spec: AnySpec
    created_at: datetime
    finished_at: datetime | None
    sites: list[str]
    rounds: list[RoundPublic]
    model_sha256: Sha256 | None
    report: AnalysisReport | None = None
    participation: Participation = Field(default_factory=Participation)
    standardization: Standardization | None = Field(
        None,
        description="Training: the pooled mean and standard deviation of each numeric feature "
        "(the statistics round's), which scale the model's inputs; None before that round.",
    )

    @property
    def primary_metric(self) -> str:
        spec = self.spec
        survival = spec.kind == "train" and spec.outcome.type == "survival"
        return "c_index" if survival else "auc"

    @property
    def pooled_metric(self) -> str:
        """The pooled figure of the primary metric: a C-index compares patients across sites,
        so a survival model's is the mean of the sites' own (``mean_site_c_index``); a binary
        model's is the AUC of the pooled rows, or, when no round has one (every site's held-out
        rows hold a small cell of a label), the mean of the sites' own (``mean_site_auc``)."""
        if self.primary_metric == "c_index":
            return "mean_site_c_index"
        if any("auc" in r.metrics for r in self.rounds):
            return "auc"
        return "mean_site_auc" if any("mean_site_auc" in r.metrics for r in self.rounds) else "auc"

    @property
    def label(self) -> str:
        """What the job runs: ``model/strategy``, or ``analysis: type``."""
        spec = self.spec
        if spec.kind == "analysis":
            return f"analysis: {spec.analysis.type}"
        return f"{spec.model.type}/{spec.strategy.name}"

    @property
    def planned_rounds(self) -> int | None:
        """Rounds the job will take, when known (a Newton loop ends when it converges)."""
        spec = self.spec
        if spec.kind == "train":
            return spec.rounds + 2  # the stats round, the training rounds, the evaluation
        return 1 if spec.analysis.type in ("counts", "summary", "kaplan_meier") else None


class JobCreated(Message):
    id: str
    name: str
    sites: list[str]
    unseen: list[str] = Field(
        default_factory=list,
        description="Sites the spec lists that were not seen within the orchestrator's "
        "window (or never): each round waits for them until its deadline.",
    )
    seen_window_s: float | None = Field(
        None, description="The orchestrator's window: a site seen within it is online."
    )


class ErrorBody(Message):
    detail: str


def error_detail(body: bytes) -> str:
    """The ``detail`` of an error response, or its raw text when it is not our JSON."""
    try:
        return str(json.loads(body)["detail"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")
