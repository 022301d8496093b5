"""The site's privacy budget: every differentially private task it ran, charged in its ledger.

Each charge is the task's Renyi DP curve (``oncofed.privacy.accounting``), kept with its job,
project, kind, round and time in ``ledger.db``, which nothing the orchestrator sends can reset.
What a project, or the site as a whole, has spent is the epsilon of the sum of their curves at
the policy's delta. A task is charged before its result is computed and leaves; one that would
take a project or the site past its limit is declined with what remains. A task run again
(after a restart) is charged once: its noise comes from a secret seed and the task's content,
so the release it sends again is the same one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Float, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from oncofed._db import UTCDateTime, utcnow
from oncofed.edge.config import PrivacyBudget
from oncofed.edge.errors import PolicyViolation
from oncofed.edge.ledger import AUDIT, Base, Ledger
from oncofed.privacy import accounting


class ChargeRow(Base):
    """One differentially private task this site ran and what it cost."""

    __tablename__ = "privacy_charge"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    round: Mapped[int] = mapped_column(Integer)
    charged_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    epsilon: Mapped[float] = mapped_column(Float)  # the task alone, at the delta then in force
    delta: Mapped[float] = mapped_column(Float)
    rdp_json: Mapped[str] = mapped_column(Text)  # its curve at accounting.ORDERS


@dataclass(frozen=True)
class Charge:
    """A task's cost, before or after it is recorded."""

    task_id: str
    job_id: str
    project: str
    kind: str
    round: int
    rdp: np.ndarray


@dataclass(frozen=True)
class Spent:
    """Epsilons spent (at ``delta``) against their limits."""

    delta: float
    total: float
    total_limit: float
    projects: dict[str, float]
    project_limit: float
    jobs: dict[str, float]

    def remaining(self, project: str) -> float:
        """What ``project`` may still spend here: the less of its own and the site's rest."""
        own = self.project_limit - self.projects.get(project, 0.0)
        return max(0.0, min(own, self.total_limit - self.total))


@dataclass(frozen=True)
class Entry:
    """A recorded charge, as ``oncofed edge budget`` lists it."""

    charged_at: datetime
    job_id: str
    project: str
    kind: str
    round: int
    epsilon: float


class Budget:
    """Charges tasks to the site's privacy budget (``policy.privacy_budget``)."""

    def __init__(self, ledger: Ledger, key: Ed25519PrivateKey, site: str) -> None:
        self._ledger, self._key, self.site = ledger, key, site

    def spent(self, limits: PrivacyBudget) -> Spent:
        """What was spent so far, by project and job, at ``limits.delta``."""
        with self._ledger.sessions() as session:
            return _spent(_curves(session), limits)

    def check(self, job_id: str, project: str, planned: np.ndarray, limits: PrivacyBudget) -> None:
        """Decline a job whose whole planned cost here (beyond what it already spent) would
        exceed a limit: before its first task, so a job the site cannot finish never starts."""
        with self._ledger.sessions() as session:
            curves = _curves(session)
        done = sum((c for _, job, c in curves if job == job_id), accounting.zero())
        rest = np.maximum(planned - done, 0.0)
        _refuse_over(curves, project, rest, limits, f"job {job_id} would spend")

    def charge(self, charge: Charge, limits: PrivacyBudget) -> float:
        """Record ``charge`` (once per task: a task charged before is not charged again) with
        an audit entry, in one transaction; ``PolicyViolation`` naming what remains when it
        would take its project or the site past a limit. The task's epsilon alone."""
        cost = accounting.epsilon(charge.rdp, limits.delta)
        with self._ledger.sessions.begin() as session:
            if session.scalar(select(ChargeRow.id).where(ChargeRow.task_id == charge.task_id)):
                return cost
            curves = _curves(session)
            _refuse_over(curves, charge.project, charge.rdp, limits, "this task would spend")
            session.add(
                ChargeRow(
                    task_id=charge.task_id,
                    job_id=charge.job_id,
                    project=charge.project,
                    kind=charge.kind,
                    round=charge.round,
                    epsilon=cost,
                    delta=limits.delta,
                    rdp_json=json.dumps([float(v) for v in charge.rdp]),
                )
            )
            detail = {
                "job": charge.job_id,
                "task": charge.task_id,
                "kind": charge.kind,
                "round": charge.round,
                "epsilon": f"{cost:.4g}",
                "delta": f"{limits.delta:g}",
            }
            AUDIT.append(
                session,
                self._key,
                "privacy.spent",
                actor="edge",
                project=charge.project,
                site=self.site,
                detail=detail,
                every=1,
            )
        return cost

    def job_epsilon(self, job_id: str, delta: float) -> float:
        """What ``job_id`` spent here so far, at ``delta``."""
        with self._ledger.sessions() as session:
            texts = session.scalars(select(ChargeRow.rdp_json).where(ChargeRow.job_id == job_id))
            total = sum((_curve(text) for text in texts), accounting.zero())
        return accounting.epsilon(total, delta)

    def history(self) -> list[Entry]:
        """Every charge, oldest first."""
        with self._ledger.sessions() as session:
            rows = session.scalars(select(ChargeRow).order_by(ChargeRow.id))
            return [
                Entry(row.charged_at, row.job_id, row.project, row.kind, row.round, row.epsilon)
                for row in rows
            ]

    def noise_seed(self, task_id: str, content_sha256: str) -> int:
        """The seed of a task's noise: secret (keyed with the site's identity key, so no one
        else can reproduce and subtract it) and fixed by the task, so a task run again sends
        the same release and is charged once."""
        secret = self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        message = f"oncofed-dp-noise:{task_id}:{content_sha256}".encode()
        digest = hmac.new(secret, message, hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "little") & (2**63 - 1)


Curves = list[tuple[str, str, np.ndarray]]
"""Every charge as (project, job, RDP curve)."""


def _curves(session: Session) -> Curves:
    rows = session.execute(select(ChargeRow.project, ChargeRow.job_id, ChargeRow.rdp_json))
    return [(project, job, _curve(text)) for project, job, text in rows]


def _curve(text: str) -> np.ndarray:
    return np.asarray(json.loads(text), dtype=np.float64)


def _spent(curves: Curves, limits: PrivacyBudget) -> Spent:
    def composed(selected: list[np.ndarray]) -> float:
        return accounting.epsilon(sum(selected, accounting.zero()), limits.delta)

    projects = sorted({p for p, _, _ in curves})
    jobs = sorted({job for _, job, _ in curves})
    return Spent(
        delta=limits.delta,
        total=composed([c for _, _, c in curves]),
        total_limit=limits.epsilon_total,
        projects={p: composed([c for q, _, c in curves if q == p]) for p in projects},
        project_limit=limits.epsilon_per_project,
        jobs={j: composed([c for _, job, c in curves if job == j]) for j in jobs},
    )


def _refuse_over(
    curves: Curves,
    project: str,
    rdp: np.ndarray,
    limits: PrivacyBudget,
    what: str,
) -> None:
    """``PolicyViolation`` when adding ``rdp`` takes ``project`` or the site past its limit."""
    site = sum((c for _, _, c in curves), accounting.zero()) + rdp
    own = sum((c for p, _, c in curves if p == project), accounting.zero()) + rdp
    after_site = accounting.epsilon(site, limits.delta)
    after_project = accounting.epsilon(own, limits.delta)
    if after_site <= limits.epsilon_total and after_project <= limits.epsilon_per_project:
        return
    spent = _spent(curves, limits)  # every project and job: only for the message
    alone = accounting.epsilon(rdp, limits.delta)
    raise PolicyViolation(
        f"privacy budget: {what} epsilon {alone:.3g} (delta {limits.delta:g}) here, but "
        f"project {project or '(none)'} has {spent.remaining(project):.3g} left of this site's "
        "budget "
        f"(spent: {spent.projects.get(project, 0.0):.3g} of epsilon_per_project "
        f"{limits.epsilon_per_project:g}; the site {spent.total:.3g} of epsilon_total "
        f"{limits.epsilon_total:g})"
    )
