"""The edge's state directory: connection settings, credential, policy, datasets, egress log.

The policy is read as the agent runs: ``PolicyFile`` re-reads ``policy.yaml`` when it changed,
and a file that is missing or invalid is an error naming its line and key
(``PolicyFileError``), never the defaults.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, TypeVar, get_args

import httpx
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    PrivateAttr,
    ValidationError,
)
from pydantic_core import ErrorDetails

from oncofed import __version__
from oncofed._files import private_dir, replace_file, write_private
from oncofed.edge.approvals import ProjectDecision
from oncofed.edge.errors import EdgeError, PolicyFileError
from oncofed.learning.plugins import PluginPin
from oncofed.learning.registry import TASKS
from oncofed.privacy.secagg.identity import load_identity, new_identity, save_identity
from oncofed.wire.messages import API_PREFIX, TaskKind
from oncofed.wire.spec import BUILTIN_MODELS

T = TypeVar("T")
CONFIG = "edge.json"
CREDENTIAL = "credential"
POLICY = "policy.yaml"
IDENTITY = "identity.key"
CA = "ca.pem"
CERTIFICATE = "certificate.pem"
MODEL_TYPES: tuple[str, ...] = tuple(BUILTIN_MODELS)
SETTLE_NS = 2_000_000_000
"""A file modified at least this long before it was read cannot change again without a new
modification time (file systems keep it to 2 s at worst); until then it is read again at every
check, and its SHA-256 tells whether it changed."""


def _model_type(name: str) -> str:
    if name not in TASKS:  # a built-in, or a plugin's installed here
        raise ValueError(f"{name!r} is not a model type ({', '.join(TASKS)})")
    return name


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


class PrivacyBudget(BaseModel):
    """How much differential privacy this site spends: epsilons at ``delta``, composed over
    every differentially private task it ran (Renyi DP, ``oncofed.privacy.accounting``)."""

    model_config = ConfigDict(extra="forbid")

    epsilon_total: Annotated[float, Field(gt=0.0, le=1000.0)] = 10.0
    """The most this site spends over every project, ever: the ledger never forgets a charge."""
    epsilon_per_project: Annotated[float, Field(gt=0.0, le=1000.0)] = 5.0
    """The most one project spends here, over all its jobs."""
    delta: Annotated[float, Field(gt=0.0, le=1e-3)] = 1e-5
    """The delta every epsilon of the ledger is measured at; a job may not ask for more."""


class EdgePolicy(BaseModel):
    """What this site agrees to run. Checked against every task, whatever the orchestrator says."""

    model_config = ConfigDict(extra="forbid")

    _source: Path | None = PrivateAttr(None)  # the file it was read from
    _version: str | None = PrivateAttr(None)  # the SHA-256 of that file, shortened

    allowed_tasks: list[TaskKind] = Field(default_factory=lambda: list(get_args(TaskKind)))
    allowed_models: list[Annotated[str, AfterValidator(_model_type)]] = Field(
        default_factory=lambda: list(MODEL_TYPES)
    )
    allowed_datasets: list[str] | None = Field(None, description="None: every registered dataset")
    min_cohort_size: Annotated[int, Field(ge=1)] = 20
    """Fewest patients a job's cohort may have here, and fewest training rows a task may use
    (the rows behind every sum and update sent); below it the site declines the job."""
    small_cell_threshold: Annotated[int, Field(ge=1, le=1000)] = 11
    """Counts from 1 to this minus 1 are never published (shown as "<11"), in data quality
    reports and analyses; counts hidden to protect them are shown as "suppressed". 1 switches
    suppression off: for synthetic data only."""
    refuse_narrow_differences: bool = True
    """Decline a job whose exact releases would be over a cohort that differs from an earlier
    job's, on the same dataset, by 1 to ``small_cell_threshold`` - 1 patients: subtracted,
    the two would describe those patients (``oncofed.edge.releases``). The cohorts are
    recorded either way; false switches the refusal off, for synthetic data only."""
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
    privacy_budget: PrivacyBudget = Field(default_factory=PrivacyBudget)
    """The differential privacy this site spends, across every project, training and
    analyses alike (``oncofed.edge.budget``): a task that would exceed it is declined."""
    require_differential_privacy: bool = False
    """Run only jobs whose releases are differentially private (spending the budget): exact
    releases are declined."""
    plugins: list[PluginPin] = Field(default_factory=list)
    """Plugin distributions whose model types may run here (each also in ``allowed_models``):
    name, version and the SHA-256 of the installed files, as ``oncofed edge plugins`` prints
    them. A plugin's code is imported only when all three match what is installed now."""

    projects: dict[str, ProjectDecision] = Field(default_factory=dict)
    """This site's decisions on projects, written by ``oncofed edge approve`` and ``decline``
    below the marker line at the end of the file (``oncofed.edge.approvals``). A task runs
    here only when its project was approved, within the scope approved."""

    @property
    def noise_split(self) -> int:
        """Over how many sites this site spreads the noise of a differentially private
        analysis: its ``min_secure_sites`` when its peers are pinned ahead (``trusted_peers``),
        every sum it is in then holding that many sites' shares; else 1, adding all the noise
        itself, since an orchestrator could have invented peers that add none."""
        return self.min_secure_sites if self.trusted_peers is not None else 1

    @property
    def version(self) -> str:
        """This policy's version: the first 12 hex digits of the SHA-256 of the file it was
        read from (of its settings, for a policy made in code). Every decision names it."""
        if self._version is None:
            self._version = hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]
        return self._version

    def quote(self, key: str) -> str:
        """A setting with its value in force and where it comes from, for messages:
        ``min_cohort_size is 50 in /opt/edge/policy.yaml``."""
        said = f"{key} is {_shown(getattr(self, key))}"
        if self._source is None:
            return said
        if key in self.model_fields_set:
            return f"{said} in {self._source}"
        return f"{said} (the default: {self._source} does not set it)"


def _shown(value: object) -> str:
    """A policy value as its YAML reads."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return "not set" if value is None else str(value)


def read_policy(path: Path) -> EdgePolicy:
    """The policy ``path`` holds; ``PolicyFileError`` when it is missing, unreadable or
    invalid (never the defaults)."""
    try:
        return parse_policy(path.read_bytes(), path)
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def parse_policy(text: str | bytes, path: Path) -> EdgePolicy:
    """The policy in ``text`` (the content of ``path``). ``PolicyFileError`` lists every
    mistake with its line: YAML that does not parse, a setting given twice, an unknown
    setting, a value of the wrong type or out of range. An empty file is a mistake too: a site
    never runs on the defaults by accident."""
    try:
        node, data = _compose(text.decode("utf-8-sig") if isinstance(text, bytes) else text)
    except UnicodeDecodeError as exc:
        raise PolicyFileError(path, ["is not UTF-8 text"]) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        said = "; ".join(part for part in (exc.context, exc.problem) if part)
        raise PolicyFileError(path, [f"{where}not YAML: {said}"]) from exc
    except yaml.YAMLError as exc:  # e.g. a control character
        raise PolicyFileError(path, ["is not YAML: " + " ".join(str(exc).split())]) from exc
    if node is None:
        raise PolicyFileError(
            path, ["is empty (a site never assumes the default policy): write its settings"]
        )
    if not isinstance(node, yaml.MappingNode):
        raise PolicyFileError(
            path, [f"line {_line(node)}: expected settings, one 'key: value' per line"]
        )
    problems = list(_repeated(node))
    try:
        policy = EdgePolicy.model_validate(data)
    except ValidationError as exc:
        problems += [_problem(node, error) for error in exc.errors()]
    if problems:
        ordered = sorted(problems, key=lambda problem: problem[0])
        raise PolicyFileError(path, [text for _, text in ordered])
    policy._source = path
    raw = text if isinstance(text, bytes) else text.encode()
    policy._version = hashlib.sha256(raw).hexdigest()[:12]
    return policy


def _compose(text: str) -> tuple[yaml.Node | None, object]:
    """The YAML document's node tree (with line marks) and its value."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        return node, loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


Problem = tuple[int, str]
"""A mistake in the policy file: its line, and what to say."""


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _repeated(node: yaml.Node, at: str = "") -> Iterator[Problem]:
    """Every key given twice in a mapping (YAML would keep the last one silently)."""
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _repeated(item, f"{at}{index}.")
    if not isinstance(node, yaml.MappingNode):
        return
    first: dict[str, int] = {}
    for key, value in node.value:
        name, line = str(key.value), _line(key)
        if name in first:
            said = f"given twice (first on line {first[name]}; only one can count)"
            yield line, f"line {line}: {at}{name}: {said}"
        first.setdefault(name, line)
        yield from _repeated(value, f"{at}{name}.")


def _problem(root: yaml.MappingNode, error: ErrorDetails) -> Problem:
    """A validation error, at the line of the setting (or list item) it is about."""
    node: yaml.Node = root
    line = _line(root)
    for part in error["loc"]:
        found = _child(node, part)
        if found is None:
            break
        line, node = found
    key = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, EdgePolicy.model_fields, n=1)
        message = "not a policy setting" + (f" (did you mean {close[0]}?)" if close else "")
    return line, (f"line {line}: {key}: {message}" if key else f"line {line}: {message}")


def _child(node: yaml.Node, part: int | str) -> tuple[int, yaml.Node] | None:
    """The line of a mapping's entry ``part`` (its key's) or of a sequence's item number
    ``part``, and its value."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if str(key.value) == str(part):
                return _line(key), value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        item: yaml.Node = node.value[part]
        return _line(item), item
    return None


def _unreadable(path: Path, exc: OSError) -> PolicyFileError:
    if isinstance(exc, FileNotFoundError):
        return PolicyFileError(
            path, ["is missing: restore it (a site never falls back to the default policy)"]
        )
    return PolicyFileError(path, [f"cannot be read: {exc.strerror or exc}"])


@dataclass(frozen=True)
class _Read:
    """One reading of the policy file: how it looked, and what it said."""

    stamp: tuple[int, int, int, int]  # see _stamp
    sha256: str
    settled: bool  # modified well before it was read: an unchanged stat means unchanged content
    outcome: EdgePolicy | list[str]  # the policy, or the file's mistakes


class PolicyFile:
    """``policy.yaml`` as it is now. ``current()`` re-reads it when its modification or
    change time, size, inode or SHA-256 changed (a stat per call while it stays the same; a
    copy that keeps the old modification time still changes the others) and raises
    ``PolicyFileError`` while it is missing or invalid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._read: _Read | None = None

    def current(self) -> EdgePolicy:
        """The policy in force: the same object for as long as the file says the same."""
        try:
            stat = self.path.stat()
            seen = self._read
            if seen is None or not seen.settled or seen.stamp != _stamp(stat):
                seen = self._read = self._reread(stat, seen)
        except OSError as exc:
            self._read = None
            raise _unreadable(self.path, exc) from exc
        if isinstance(seen.outcome, list):
            raise PolicyFileError(self.path, seen.outcome)
        return seen.outcome

    def _reread(self, stat: os.stat_result, seen: _Read | None) -> _Read:
        data = self.path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        settled = time.time_ns() - stat.st_mtime_ns >= SETTLE_NS
        if seen is not None and seen.sha256 == digest:
            return replace(seen, stamp=_stamp(stat), settled=settled)
        outcome: EdgePolicy | list[str]
        try:
            outcome = parse_policy(data, self.path)
        except PolicyFileError as exc:
            outcome = exc.problems
        return _Read(_stamp(stat), digest, settled, outcome)


def _stamp(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What changes when a file is written, replaced or copied over, times preserved or not."""
    return (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino)


class EdgeHome:
    """Paths and typed access to everything an edge keeps in its directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def policy_file(self) -> Path:
        return self.root / POLICY

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
            private_dir(self.root)
            save_identity(new_identity(), self.identity_file)
        return load_identity(self.identity_file)

    @property
    def ca_file(self) -> Path:
        """The consortium CA's certificate, given at enrolment: the only one the edge trusts
        to vouch for the orchestrator."""
        return self.root / CA

    @property
    def certificate_file(self) -> Path:
        """The site's client certificate (PEM, mode 600), for its identity key."""
        return self.root / CERTIFICATE

    def save_tls(self, ca: bytes | None = None, certificate: str | None = None) -> None:
        """Store the CA's certificate and the site's (each replaced whole, owner-only)."""
        for path, data in ((self.ca_file, ca), (self.certificate_file, certificate)):
            if data is not None:
                replace_file(path, data)

    def orchestrator_client(
        self,
        *,
        timeout: httpx.Timeout | float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> httpx.Client:
        """A client for the orchestrator's API as this site: its credential sent, the
        orchestrator verified against the pinned consortium CA only, and the site's
        certificate presented (mutual TLS)."""
        return httpx.Client(
            base_url=str(self.config().orchestrator).rstrip("/") + API_PREFIX,
            headers={
                "Authorization": f"Bearer {self.credential()}",
                "User-Agent": f"oncofed-edge/{__version__}",
            },
            timeout=timeout,
            verify=self.tls(),
            transport=transport,
        )

    def tls(self) -> ssl.SSLContext | bool:
        """How the edge's connections verify the orchestrator: against the CA pinned at
        enrolment only (never the system's store), presenting the site's certificate when
        it has one; an edge enrolled without a CA (plain HTTP on loopback) uses the system's
        store for an https URL."""
        if not self.ca_file.exists():
            return True
        return pinned_context(self.ca_file, self.certificate_file, self.identity_file)

    def pin_orchestrator(self, key: str) -> EdgeConfig:
        """Record the orchestrator's identity key (trust on first use); never replaced."""
        config = self.config()
        if config.orchestrator_key is not None and config.orchestrator_key != key:
            raise EdgeError(
                "the orchestrator presents another identity key than the one pinned at "
                f"enrolment ({config.orchestrator_key[:16]}...); this edge will not trust it"
            )
        pinned = config.model_copy(update={"orchestrator_key": key})
        write_private(self.root / CONFIG, pinned.model_dump_json(indent=2) + "\n")
        return pinned

    @property
    def enrolled(self) -> bool:
        """Whether ``oncofed edge init`` enrolled this directory (its settings exist)."""
        return (self.root / CONFIG).exists()

    def create(self, config: EdgeConfig, credential: str) -> None:
        """Write a new edge's files; the credential is readable by its owner only."""
        private_dir(self.datasets)
        write_private(self.root / CONFIG, config.model_dump_json(indent=2) + "\n")
        write_private(self.root / CREDENTIAL, credential)
        if not self.policy_file.exists():
            dump = EdgePolicy().model_dump(exclude={"projects"})  # decided later
            write_private(self.policy_file, yaml.safe_dump(dump, sort_keys=False))

    def config(self) -> EdgeConfig:
        return self._load(CONFIG, EdgeConfig.model_validate_json)

    def credential(self) -> str:
        return self._load(CREDENTIAL, str.strip)

    def policy(self) -> EdgePolicy:
        """The policy ``policy.yaml`` holds (``PolicyFileError`` when missing or invalid)."""
        return read_policy(self.policy_file)

    def policy_or_default(self) -> EdgePolicy:
        """The site's policy, or the defaults before the edge is enrolled (an import before
        ``oncofed edge init``); once it is, a missing policy file is an error."""
        if not self.policy_file.exists() and not self.enrolled:
            return EdgePolicy()
        return self.policy()

    def _load(self, name: str, parse: Callable[[str], T]) -> T:
        path = self.root / name
        if not path.exists():
            raise EdgeError(f"{path} is missing: run 'oncofed edge init --dir {self.root}' first")
        try:
            return parse(path.read_text())
        except ValidationError as exc:
            said = "; ".join(
                f"{'.'.join(map(str, error['loc'])) or 'file'}: {error['msg']}"
                for error in exc.errors()
            )
            raise EdgeError(f"{path} is not valid: {said}") from exc


def pinned_context(
    ca: Path, certificate: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client TLS context trusting the CA in ``ca`` alone, presenting ``certificate`` (with
    its ``key``) when that file exists."""
    try:
        context = ssl.create_default_context(cafile=ca)
        if certificate is not None and key is not None and certificate.exists():
            context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as exc:
        raise EdgeError(f"cannot use the TLS files in {ca.parent}: {exc}") from exc
    return context
