"""``oncofed edge check``: every file the edge reads, checked the way the agent reads it, and
what the site accepts under its policy. Local only: nothing is sent, nothing is written."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from typing import Literal

from oncofed.cdm.validate import validate
from oncofed.edge.config import CONFIG, CREDENTIAL, EdgeHome, EdgePolicy, read_policy
from oncofed.edge.errors import EdgeError, PolicyFileError
from oncofed.edge.store import PROFILE, LocalStore
from oncofed.privacy.secagg.errors import IdentityError
from oncofed.privacy.secagg.identity import fingerprint, load_identity, public_bytes

Status = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class Finding:
    """What the check found about one file or dataset."""

    status: Status
    subject: str
    detail: str


@dataclass
class EdgeCheck:
    """Findings in the order checked; the policy when it is valid, and the datasets that load
    and meet the model's rules, with their patients."""

    findings: list[Finding] = field(default_factory=list)
    policy: EdgePolicy | None = None
    datasets: dict[str, int] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return all(finding.status != "error" for finding in self.findings)

    def add(self, status: Status, subject: str, detail: str) -> None:
        self.findings.append(Finding(status, subject, detail))


def check_edge(home: EdgeHome) -> EdgeCheck:
    """Check the edge directory: settings, credential, identity key, policy, every dataset."""
    check = EdgeCheck()
    _check_config(home, check)
    _check_credential(home, check)
    _check_identity(home, check)
    try:
        check.policy = policy = read_policy(home.policy_file)
        settings = set(EdgePolicy.model_fields) - {"projects"}  # decisions, not settings
        told, every = len(policy.model_fields_set & settings), len(settings)
        said = (
            "every setting" if told == every else f"{told} of {every} settings (defaults: the rest)"
        )
        approved = [name for name, d in policy.projects.items() if d.approved]
        decided = f"; {len(approved)} of {len(policy.projects)} projects decided approved"
        check.add(
            "ok",
            home.policy_file.name,
            f"valid (version {policy.version}); sets {said}" + (decided if policy.projects else ""),
        )
    except PolicyFileError as exc:
        for problem in exc.problems:
            check.add("error", home.policy_file.name, problem)
    _check_datasets(home, check)
    return check


def _check_config(home: EdgeHome, check: EdgeCheck) -> None:
    if not (home.root / CONFIG).exists():
        check.add(
            "error", CONFIG, f"missing: not an enrolled edge (oncofed edge init --dir {home.root})"
        )
        return
    try:
        config = home.config()
    except EdgeError as exc:
        check.add("error", CONFIG, str(exc))
        return
    pinned = "pinned" if config.orchestrator_key else "not pinned yet (at its next connection)"
    check.add(
        "ok",
        CONFIG,
        f"site {config.site}, orchestrator {config.orchestrator}, its identity key {pinned}",
    )


def _check_credential(home: EdgeHome, check: EdgeCheck) -> None:
    path = home.root / CREDENTIAL
    try:
        mode, secret = path.stat().st_mode, path.read_text().strip()
    except OSError as exc:
        check.add("error", CREDENTIAL, f"cannot be read: {exc.strerror}")
        return
    if not secret:
        check.add("error", CREDENTIAL, "empty: enrol the site again")
    elif mode & (stat.S_IRWXG | stat.S_IRWXO):
        check.add(
            "warning",
            CREDENTIAL,
            f"open to other users (mode {stat.S_IMODE(mode):o}): chmod 600 {path}",
        )
    else:
        check.add("ok", CREDENTIAL, "readable by its owner only")


def _check_identity(home: EdgeHome, check: EdgeCheck) -> None:
    name = home.identity_file.name
    if not home.identity_file.exists():
        check.add("warning", name, "not made yet: the agent makes it when it starts")
        return
    try:
        key = load_identity(home.identity_file)
    except IdentityError as exc:
        check.add("error", name, str(exc))
        return
    check.add("ok", name, f"fingerprint {fingerprint(public_bytes(key))}")


def _check_datasets(home: EdgeHome, check: EdgeCheck) -> None:
    store = LocalStore(home.datasets)
    names = store.names()
    if not names:
        check.add("warning", "datasets", "none imported yet (oncofed edge import)")
    for folder in sorted(home.datasets.glob("*")) if home.datasets.is_dir() else []:
        if folder.is_dir() and not folder.name.startswith(".") and folder.name not in names:
            check.add("warning", f"datasets/{folder.name}", f"not a dataset: it has no {PROFILE}")
    for name in names:
        _check_dataset(store, name, check)


def _check_dataset(store: LocalStore, name: str, check: EdgeCheck) -> None:
    """Load the dataset, check it against the model's rules as they are now, and compare it
    with its data quality report."""
    subject = f"dataset {name}"
    try:
        data, profile = store.load(name), store.profile(name)
        rejected = validate(data).rejected
    except EdgeError as exc:
        check.add("error", subject, str(exc))
        return
    except Exception as exc:  # damaged beyond what the store tells: say so, check the rest
        check.add(
            "error", subject, f"cannot be read ({type(exc).__name__}: {exc}); import it again"
        )
        return
    if rejected:
        reasons = "; ".join(f"{reason}: {n}" for reason, n in rejected.items())
        check.add(
            "error", subject, f"patients that break the model's rules ({reasons}): import it again"
        )
        return
    patients = data["patient"].num_rows
    rows = ", ".join(f"{table} {n:,}" for table, n in data.num_rows().items())
    extensions = f"; extensions {', '.join(data.extension_names)}" if data.extension_names else ""
    check.add(
        "ok",
        subject,
        f"{patients:,} patients (rows: {rows}{extensions}); imported "
        f"{profile.imported_at:%Y-%m-%d %H:%M} UTC from {profile.source_format}",
    )
    check.datasets[name] = patients
    if isinstance(profile.patients, int) and profile.patients != patients:
        check.add(
            "warning",
            subject,
            f"its data quality report says {profile.patients:,} patients: import it again",
        )
    policy = check.policy
    if policy is not None and patients < policy.min_cohort_size:
        check.add(
            "warning",
            subject,
            f"fewer patients than min_cohort_size "
            f"({policy.min_cohort_size}): jobs without secure aggregation are declined",
        )


def accepts(policy: EdgePolicy, datasets: dict[str, int]) -> list[tuple[str, str]]:
    """What a site with ``policy`` and these valid ``datasets`` accepts, topic by topic."""
    p = policy
    secure = "required" if p.require_secure_aggregation else "optional (a job may ask for it)"
    peers = (
        f"only the {len(p.trusted_peers)} in trusted_peers"
        if p.trusted_peers is not None
        else "any, each pinned on first use"
    )
    own = "shared" if p.share_site_estimates else "kept"
    return [
        ("task kinds", ", ".join(p.allowed_tasks) or "none: every task is declined"),
        ("model types", ", ".join(p.allowed_models) or "none: no training job"),
        ("datasets", _open_datasets(p, datasets)),
        (
            "cohort",
            f"at least {p.min_cohort_size} patients (and training rows) and "
            f"{p.min_eval_size} held-out rows; {p.min_cohort_size_secure} under secure "
            "aggregation",
        ),
        (
            "small cells",
            f"counts under {p.small_cell_threshold} never published; a column of at most "
            f"{p.discrete_levels} values is judged as groups",
        ),
        (
            "training",
            f"at most {p.max_parameters:,} parameters, {p.max_rounds} rounds, "
            f"{p.max_local_epochs} local epochs; clip norm up to {p.max_clip_norm:g}; models "
            f"within {p.max_model_travel:g} of their start",
        ),
        (
            "regressions",
            f"{p.min_patients_per_covariate} patients per coefficient; at most "
            f"{p.max_iterations} Newton rounds; effects up to {p.max_coefficient_effect:g}, "
            f"steps up to {p.max_newton_step:g}",
        ),
        ("tasks per job", f"at most {p.max_tasks_per_job}"),
        (
            "secure aggregation",
            f"{secure}; at least {p.min_secure_sites} sites and a threshold above "
            f"{p.min_secure_threshold:g} of them; peer keys: {peers}; own estimates {own}",
        ),
        (
            "differential privacy",
            f"{'required' if p.require_differential_privacy else 'optional'}; budget epsilon "
            f"{p.privacy_budget.epsilon_total:g} in all, {p.privacy_budget.epsilon_per_project:g} "
            f"per project, at delta {p.privacy_budget.delta:g} (oncofed edge budget); "
            + (
                f"1/{p.noise_split} of an analysis's noise added here (peers pinned)"
                if p.noise_split > 1
                else "all of an analysis's noise added here (no trusted_peers)"
            ),
        ),
    ]


def _open_datasets(policy: EdgePolicy, datasets: dict[str, int]) -> str:
    if policy.allowed_datasets is None:
        return ", ".join(datasets) + " (every valid dataset)" if datasets else "none valid yet"
    open_ = [name for name in policy.allowed_datasets if name in datasets]
    said = ", ".join(open_) or "none"
    absent = [name for name in policy.allowed_datasets if name not in datasets]
    closed = [name for name in datasets if name not in policy.allowed_datasets]
    if absent:
        said += f"; allowed but not valid here: {', '.join(absent)}"
    if closed:
        said += f"; closed: {', '.join(closed)}"
    return said
