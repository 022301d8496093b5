"""The edge's state directory: connection settings, credential, policy, datasets, egress log."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError

from oncofed.edge.errors import EdgeError
from oncofed.privacy.secagg.identity import load_identity, new_identity, save_identity

T = TypeVar("T")
CONFIG = "edge.json"
CREDENTIAL = "credential"
POLICY = "policy.yaml"
IDENTITY = "identity.key"


class EdgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    orchestrator: HttpUrl
    site: str
    orchestrator_key: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="The orchestrator's Ed25519 identity key (hex), pinned at enrolment: "
        "survivor lists of secure rounds must be signed by it.",
    )


class EdgePolicy(BaseModel):
    """What this site agrees to run. Checked against every task, whatever the orchestrator says."""

    model_config = ConfigDict(extra="forbid")

    allowed_tasks: list[str] = Field(
        default_factory=lambda: ["stats", "train", "evaluate", "analysis"]
    )
    allowed_models: list[str] = Field(default_factory=lambda: ["logistic", "mlp", "cox", "cox_mlp"])
    allowed_datasets: list[str] | None = Field(None, description="None: every registered dataset")
    min_cohort_size: Annotated[int, Field(ge=1)] = 20
    """Fewest patients a job's cohort may have here, and fewest training rows a task may use
    (the rows behind every sum and update sent); below it the site declines the job."""
    small_cell_threshold: Annotated[int, Field(ge=1, le=1000)] = 11
    """Counts from 1 to this minus 1 are never published (shown as "<11"), in data quality
    reports and analyses; counts hidden to protect them are shown as "suppressed". 1 switches
    suppression off: for synthetic data only."""
    min_patients_per_covariate: Annotated[int, Field(ge=1)] = 10
    """A regression's gradient and Hessian are only sent for at least this many patients per
    coefficient: those of a small cohort can describe individuals."""
    min_eval_size: Annotated[int, Field(ge=1)] = 11
    """Fewest held-out rows behind the metrics a task reports (below the small-cell rule's 11,
    metrics could describe a handful of patients)."""
    max_parameters: Annotated[int, Field(ge=1)] = 50_000_000
    max_rounds: Annotated[int, Field(ge=1)] = 1000
    max_local_epochs: Annotated[int, Field(ge=1)] = 100
    max_iterations: Annotated[int, Field(ge=1)] = 50
    """Most Newton rounds of one regression this site takes part in (and no more than the
    analysis declares)."""
    max_tasks_per_job: Annotated[int, Field(ge=1)] = 1000
    """Most tasks of one job this site runs, of every kind, counted here and kept across
    restarts: the orchestrator cannot reset the count."""
    max_clip_norm: Annotated[float, Field(gt=0.0)] = 10.0
    """Largest update clip norm (``local.clip_norm``) a training job may declare here."""
    max_model_travel: Annotated[float, Field(gt=0.0)] = 25.0
    """Farthest (L2) any global model of a training job may be from the job's initial model,
    which the spec and seed give. The clipped step bounds how fast an orchestrator can move a
    model towards weights that single out patients (trap weights); this bounds how far. A job
    whose rounds of clipped steps could go further (FedAvg, FedProx: rounds x clip_norm) is
    declined at its first task."""
    max_coefficient_effect: Annotated[float, Field(gt=0.0)] = 5.0
    """Newton parameters are refused when a coefficient times its covariate's standard
    deviation here (its effect on the linear predictor across one standard deviation) exceeds
    this, or when the linear predictor at the mean patient here exceeds twice it."""
    max_newton_step: Annotated[float, Field(gt=0.0)] = 3.0
    """Largest move of a coefficient from one Newton round to the next, in the same units."""
    discrete_levels: Annotated[int, Field(ge=2)] = 10
    """A design column taking at most this many distinct values here describes groups of
    patients, whatever transform produced it: each value's patients, and the events among
    them, must be 0 or at least ``small_cell_threshold`` before derivatives are sent."""
    require_secure_aggregation: bool = False
    """Run only tasks whose releases are securely aggregated."""
    min_cohort_size_secure: Annotated[int, Field(ge=1)] = 1
    """Fewest patients in a job's cohort (and training rows) under secure aggregation, where
    no one sees this site's own numbers: the disclosure rules apply to the pooled result."""
    min_secure_sites: Annotated[int, Field(ge=2)] = 3
    """Fewest sites a secure sum this site takes part in may have."""
    min_secure_threshold: Annotated[float, Field(ge=0.5, lt=1.0)] = 0.75
    """A secure round's threshold t must be above this fraction of its n sites: an
    orchestrator needs 2t - n sites colluding with it to unmask one, so above 3/4 no site is
    unmasked while at least half the sites are honest."""
    share_site_estimates: bool = True
    """Under secure aggregation, also send in the clear the fit of this site's own regression
    (its terms, once, beside the first round; never derivatives or any other summand) when its
    numbers meet the per-site rules above. A secure job's held-out metrics are pooled only."""
    trusted_peers: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]] | None = None
    """Peer sites and the fingerprints of their identity keys (the first 16 hex digits of the
    SHA-256 of the raw Ed25519 public key). When given, secure rounds accept only these peers
    and keys; when omitted, each peer's key is pinned the first time it is seen (trust on first
    use) and a different key later is refused."""


class EdgeHome:
    """Paths and typed access to everything an edge keeps in its directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def egress_log(self) -> Path:
        return self.root / "egress.jsonl"

    @property
    def identity_file(self) -> Path:
        """The site's Ed25519 identity key (PEM, mode 600): it signs the site's secure
        aggregation keys; the orchestrator and the other sites know its public half."""
        return self.root / IDENTITY

    def identity(self) -> Ed25519PrivateKey:
        """The site's identity key, created on first use (an edge enrolled before it existed
        registers it with the orchestrator when it next connects)."""
        if not self.identity_file.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            save_identity(new_identity(), self.identity_file)
        return load_identity(self.identity_file)

    def pin_orchestrator(self, key: str) -> EdgeConfig:
        """Record the orchestrator's identity key (trust on first use); never replaced."""
        config = self.config()
        if config.orchestrator_key is not None and config.orchestrator_key != key:
            raise EdgeError(
                "the orchestrator presents another identity key than the one pinned at "
                f"enrolment ({config.orchestrator_key[:16]}...); this edge will not trust it"
            )
        pinned = config.model_copy(update={"orchestrator_key": key})
        (self.root / CONFIG).write_text(pinned.model_dump_json(indent=2) + "\n")
        return pinned

    def create(self, config: EdgeConfig, credential: str) -> None:
        """Write a new edge's files; the credential is readable by its owner only."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.datasets.mkdir(exist_ok=True)
        (self.root / CONFIG).write_text(config.model_dump_json(indent=2) + "\n")
        secret = self.root / CREDENTIAL
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(credential)
        policy = self.root / POLICY
        if not policy.exists():
            policy.write_text(yaml.safe_dump(EdgePolicy().model_dump(), sort_keys=False))

    def config(self) -> EdgeConfig:
        return self._load(CONFIG, EdgeConfig.model_validate_json)

    def credential(self) -> str:
        return self._load(CREDENTIAL, str.strip)

    def policy(self) -> EdgePolicy:
        return self._load(POLICY, _parse_policy)

    def policy_or_default(self) -> EdgePolicy:
        """The site's policy, or the defaults before the edge is enrolled (e.g. at import)."""
        return self.policy() if (self.root / POLICY).exists() else EdgePolicy()

    def _load(self, name: str, parse: Callable[[str], T]) -> T:
        path = self.root / name
        if not path.exists():
            raise EdgeError(f"{path} is missing: run 'oncofed edge init --dir {self.root}' first")
        try:
            return parse(path.read_text())
        except (ValidationError, yaml.YAMLError) as exc:
            raise EdgeError(f"{path} is not valid: {exc}") from exc


def _parse_policy(text: str) -> EdgePolicy:
    return EdgePolicy.model_validate(yaml.safe_load(text) or {})
