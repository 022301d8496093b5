"""A site's part in secure rounds, phase by phase: it computes its contribution and advertises
fresh keys, shares its secrets with the round's sites, sends its masked input, and releases
the shares that unmask the sum once it has checked the orchestrator's signed survivor list.

With its masked input it advertises fresh keys for the job's next round, and with its
unmasking shares it shares those keys with the next round's roster: a later round then opens
at its masked phase, and the site computes its contribution when it gets there.

One ``SecAggClient`` per round holds the round's secrets in memory only; what must outlive a
restart is in the ledger (one masked input per round, never both shares of a peer, pinned
peer keys). An edge restarted during a round leaves it: it declines the next phase, and the
others finish without it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oncofed.edge.config import EdgePolicy
from oncofed.edge.errors import PolicyViolation
from oncofed.edge.ledger import Ledger
from oncofed.edge.policy import check_task
from oncofed.edge.runner import Contribution, Outcome
from oncofed.privacy.layouts import round_layout
from oncofed.privacy.secagg import SecAggClient, SecAggError, encode_masked
from oncofed.wire.messages import Decline, TaskAssignment
from oncofed.wire.secagg import KeyAdvert, MaskedHeader, Roster, RoundId, SecureStep, ShareBundle

log = logging.getLogger("oncofed.edge")
KEPT_SESSIONS = 16
"""Secure rounds a site keeps the secrets of at once (a round the orchestrator abandoned is
forgotten first)."""


@dataclass(frozen=True)
class Post:
    """What a phase sends: the endpoint under the task, the body and its content type."""

    phase: str
    body: bytes
    content_type: str


@dataclass
class _Session:
    client: SecAggClient
    advert: KeyAdvert
    contribution: Contribution | None  # None: keys made ahead, with the previous round
    roster: Roster | None = None
    policy: EdgePolicy | None = None
    """The policy the contribution was computed under."""


class SecureSessions:
    """This site's secure rounds in progress, by job and round."""

    def __init__(
        self,
        site: str,
        identity: Ed25519PrivateKey,
        ledger: Ledger,
        policy: EdgePolicy,
        orchestrator_key: Callable[[], str | None],
    ) -> None:
        self._site, self._identity, self._ledger, self._policy = site, identity, ledger, policy
        self._orchestrator_key = orchestrator_key
        self._sessions: OrderedDict[tuple[str, int], _Session] = OrderedDict()

    def use(self, policy: EdgePolicy) -> None:
        """Apply a re-read policy: a round under way keeps its secrets and the roster limits it
        was joined under, but what it sends is checked again under this one."""
        self._policy = policy

    def step(
        self, task: TaskAssignment, step: SecureStep, contribute: Callable[[], Outcome]
    ) -> Post | Decline:
        """This site's answer to one phase (a decline ends its part in the round)."""
        try:
            return self._step(task, step, contribute)
        except (SecAggError, PolicyViolation, ValueError) as exc:
            self._sessions.pop((task.job_id, task.round), None)
            log.warning("secure round of task %s: %s", task.task_id, exc)
            return Decline(reason=f"secure round: {exc}")

    def _step(
        self, task: TaskAssignment, step: SecureStep, contribute: Callable[[], Outcome]
    ) -> Post | Decline:
        context = step.context
        if (context.job_id, context.round, context.announced) != (
            task.job_id,
            task.round,
            task.announced(),
        ):
            raise PolicyViolation(
                "the round's context does not match the task this site was sent (another "
                "job, round, or announced contents)"
            )
        if step.phase == "keys":
            return self._keys(task, contribute)
        session = self._sessions.get((task.job_id, task.round))
        if session is None:
            raise PolicyViolation("this site has no secrets for this round (it restarted); it "
                                  "leaves the round")  # fmt: skip
        if step.phase == "shares":
            assert step.roster is not None  # SecureStep carries what its phase needs
            session.roster = step.roster
            return _json("shares", session.client.share(step.roster).model_dump_json())
        if step.phase == "masked":
            return self._masked(task, step, session, contribute)
        assert step.survivors is not None
        key = self._orchestrator_key()
        if key is None:
            raise PolicyViolation("the orchestrator's identity key is not pinned here")
        shares = session.client.unmask(step.survivors, bytes.fromhex(key))
        del self._sessions[task.job_id, task.round]
        ahead = self._share_ahead(task, step.next_roster)
        return _json("unmask", shares.model_copy(update={"next": ahead}).model_dump_json())

    def _keys(self, task: TaskAssignment, contribute: Callable[[], Outcome]) -> Post | Decline:
        """Compute first (a site that cannot take part declines before it joins the roster),
        then advertise fresh keys (keys made ahead for the round are dropped: it opened
        without them)."""
        session = self._sessions.get((task.job_id, task.round))
        if session is not None and session.contribution is not None:  # the post was lost
            return _json("keys", session.advert.model_dump_json())
        outcome = contribute()
        if isinstance(outcome, Decline):
            return outcome
        assert task.secure is not None
        client = self._client(task.secure.context)
        advert = client.advertise()
        computed = _Session(client, advert, _contribution(outcome), policy=self._policy)
        self._keep(task.job_id, task.round, computed)
        return _json("keys", advert.model_dump_json())

    def _masked(
        self,
        task: TaskAssignment,
        step: SecureStep,
        session: _Session,
        contribute: Callable[[], Outcome],
    ) -> Post | Decline:
        """Compute now when the keys were made ahead (else check a part computed before against
        the policy, if it changed since: it leaves only if the policy in force allows it), mask
        once per round, and advertise keys for the job's next round with the masked input."""
        assert step.inbox is not None
        if session.roster is None:
            raise PolicyViolation("this site was sent no roster for this round")
        contribution = session.contribution
        if contribution is not None and session.policy is not self._policy:
            check_task(self._policy, task)  # the policy changed since it was computed
        if contribution is None:
            outcome = contribute()
            if isinstance(outcome, Decline):
                del self._sessions[task.job_id, task.round]
                return outcome
            contribution = _contribution(outcome)
        layout = round_layout(task.spec, task.kind, task.round, len(session.roster.adverts))
        self._ledger.mask_once(task.job_id, task.round)
        masked = session.client.mask(step.inbox, contribution.values, layout, step.context)
        header = MaskedHeader(
            context=step.context,
            site=self._site,
            clear=contribution.clear,
            next=self._advertise_ahead(task),
        )
        return Post("masked", encode_masked(masked, layout, header), "application/octet-stream")

    def _advertise_ahead(self, task: TaskAssignment) -> KeyAdvert | None:
        """Fresh keys for the job's next round (none after an evaluation: it is the last)."""
        if task.kind == "evaluate":
            return None
        following = RoundId(job_id=task.job_id, round=task.round + 1)
        client = self._client(following)
        advert = client.advertise()
        self._keep(task.job_id, following.round, _Session(client, advert, None))
        return advert

    def _share_ahead(self, task: TaskAssignment, roster: Roster | None) -> ShareBundle | None:
        """Shares for the job's next round, when its roster came and this site accepts it
        (if not, that round opens with its keys phase and this site takes part afresh)."""
        session = self._sessions.get((task.job_id, task.round + 1))
        if roster is None or session is None or session.contribution is not None:
            return None
        try:
            bundle = session.client.share(roster)
        except (SecAggError, PolicyViolation, ValueError) as exc:
            del self._sessions[task.job_id, task.round + 1]
            log.warning("the roster of round %d of job %s is refused: %s", task.round + 1,
                        task.job_id, exc)  # fmt: skip
            return None
        session.roster = roster
        return bundle

    def _client(self, round_id: RoundId) -> SecAggClient:
        policy = self._policy
        return SecAggClient(
            round_id,
            self._site,
            self._identity,
            peers=self._ledger,
            releases=self._ledger,
            min_sites=policy.min_secure_sites,
            min_fraction=policy.min_secure_threshold,
        )

    def _keep(self, job_id: str, round_number: int, session: _Session) -> None:
        self._sessions[job_id, round_number] = session
        self._sessions.move_to_end((job_id, round_number))
        while len(self._sessions) > KEPT_SESSIONS:
            self._sessions.popitem(last=False)


def _contribution(outcome: Outcome) -> Contribution:
    if not isinstance(outcome, Contribution):
        raise PolicyViolation("the task has no secure answer")
    return outcome


def _json(phase: str, body: str) -> Post:
    return Post(phase, body.encode(), "application/json")
