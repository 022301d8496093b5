"""A site's part in secure rounds, phase by phase: it computes its contribution and advertises
fresh keys, shares its secrets with the round's sites, sends its masked input, and releases
the shares that unmask the sum once it has checked the orchestrator's signed survivor list.

One ``SecAggClient`` per task holds the round's secrets in memory only; what must outlive a
restart is in the ledger (keys advertised once per round, never both shares of a peer, pinned
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
from oncofed.edge.runner import Contribution, Outcome
from oncofed.privacy.layouts import round_layout
from oncofed.privacy.secagg import SecAggClient, SecAggError, encode_masked
from oncofed.wire.messages import Decline, TaskAssignment
from oncofed.wire.secagg import KeyAdvert, MaskedHeader, Roster, SecureStep

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
    contribution: Contribution
    roster: Roster | None = None


class SecureSessions:
    """This site's open secure rounds, by task id."""

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
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def step(
        self, task: TaskAssignment, step: SecureStep, contribute: Callable[[], Outcome]
    ) -> Post | Decline:
        """This site's answer to one phase (a decline ends its part in the round)."""
        try:
            return self._step(task, step, contribute)
        except (SecAggError, PolicyViolation, ValueError) as exc:
            self._sessions.pop(task.task_id, None)
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
        session = self._sessions.get(task.task_id)
        if session is None:
            raise PolicyViolation("this site has no secrets for this round (it restarted); it "
                                  "leaves the round")  # fmt: skip
        if step.phase == "shares":
            assert step.roster is not None  # SecureStep carries what its phase needs
            session.roster = step.roster
            return _json("shares", session.client.share(step.roster).model_dump_json())
        if step.phase == "masked":
            assert step.inbox is not None and session.roster is not None
            spec = task.spec
            layout = round_layout(spec, task.kind, len(session.roster.adverts))
            values = session.contribution.values
            masked = session.client.mask(step.inbox, values, layout)
            clear = session.contribution.clear
            header = MaskedHeader(context=context, site=self._site, clear=clear)
            body = encode_masked(masked, layout, header)
            return Post("masked", body, "application/octet-stream")
        assert step.survivors is not None
        key = self._orchestrator_key()
        if key is None:
            raise PolicyViolation("the orchestrator's identity key is not pinned here")
        shares = session.client.unmask(step.survivors, bytes.fromhex(key))
        del self._sessions[task.task_id]
        return _json("unmask", shares.model_dump_json())

    def _keys(self, task: TaskAssignment, contribute: Callable[[], Outcome]) -> Post | Decline:
        """Compute first (a site that cannot take part declines before it joins the roster),
        then advertise fresh keys, once per round."""
        if (session := self._sessions.get(task.task_id)) is not None:  # the post was lost
            return _json("keys", session.advert.model_dump_json())
        outcome = contribute()
        if isinstance(outcome, Decline):
            return outcome
        if not isinstance(outcome, Contribution):
            raise PolicyViolation("the task has no secure answer")
        policy = self._policy
        self._ledger.advertise(task.job_id, task.round)
        assert task.secure is not None
        client = SecAggClient(
            task.secure.context,
            self._site,
            self._identity,
            peers=self._ledger,
            releases=self._ledger,
            min_sites=policy.min_secure_sites,
            min_fraction=policy.min_secure_threshold,
        )
        advert = client.advertise()
        self._sessions[task.task_id] = _Session(client, advert, outcome)
        while len(self._sessions) > KEPT_SESSIONS:
            self._sessions.popitem(last=False)
        return _json("keys", advert.model_dump_json())


def _json(phase: str, body: str) -> Post:
    return Post(phase, body.encode(), "application/json")
